"""The mutating webhook: verified image tags pinned to their verified digest.

The engine (`engine.pinning`) decides which image fields to pin; this adapter routes the request,
gathers the same facts the validating webhook uses (the verifier's cache makes the second
verification of an image free), and renders the pins as a JSONPatch.

- Only images verified at this admission are pinned. An image that does not verify gets no
  patch, and the validating webhook denies it with the reason; a tag that verifies only there
  (moved in between) is denied there too, unpinned (`engine.pinning.unpinned`).
- The patch depends only on the object and the verification results, never on dryRun, and has
  no side effects (sideEffects: None): dry runs get the same patch.
- Pinned images are not pinned again, so a reinvocation (reinvocationPolicy: IfNeeded) changes
  nothing; each replace is guarded by a `test` of the value it replaces.
- Only image fields are ever patched, never anything a workload sets for itself.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlgate.engine.pinning import PINNED_SUBRESOURCES, Pin, json_pointer, pinning_rules, plan
from mlgate.engine.policy import Facts
from mlgate.engine.updates import benign_update
from mlgate.engine.workloads import Unsupported, view
from mlgate.webhook.admission import Admission, Outcome, with_namespace
from mlgate.webhook.review import Request


@dataclass(frozen=True)
class Answer:
    """The answer to one review: the Outcome, and for the mutating webhook the JSONPatch."""

    outcome: Outcome
    patch: tuple[dict[str, Any], ...] = ()


def patch_operations(pins: tuple[Pin, ...]) -> tuple[dict[str, Any], ...]:
    """A JSONPatch replacing each pinned image, each guarded by a test of the submitted value:
    if a path ever pointed elsewhere, the apiserver refuses the patch instead of misapplying it."""
    ops: list[dict[str, Any]] = []
    for pin in pins:
        pointer = json_pointer(pin.path)
        ops.append({"op": "test", "path": pointer, "value": pin.image})
        ops.append({"op": "replace", "path": pointer, "value": pin.pinned})
    return tuple(ops)


def encode_patch(ops: tuple[dict[str, Any], ...]) -> str:
    return base64.b64encode(json.dumps(list(ops), separators=(",", ":")).encode()).decode()


@dataclass
class Mutation:
    admission: Admission

    async def review(self, req: Request) -> Answer:
        obj = self._patchable(req)
        if obj is None:
            return Answer(Outcome(True, route="not-mutated"))
        item = view(obj)
        if isinstance(item, Unsupported):
            return Answer(Outcome(True, route="not-mutated"))  # the validating webhook denies
        policies = self.admission.state.snapshot().policies
        if not any(pinning_rules(p) for p in policies):
            return Answer(Outcome(True, route="not-mutated"))
        labels = await self.admission.namespace_labels(item.namespace)
        images = await self.admission.verify_images(policies, item)
        facts = Facts(now=self.admission.now(), namespace_labels=labels, images=images)
        pins = tuple(plan(policies, item, facts))
        if not pins:
            return Answer(Outcome(True, route="nothing-to-pin", workload=item))
        return Answer(Outcome(True, route="pinned", workload=item), patch_operations(pins))

    def _patchable(self, req: Request) -> Mapping[str, Any] | None:
        """The object whose images may need pinning, or None when this request has none."""
        if req.operation not in ("CREATE", "UPDATE") or req.obj is None:
            return None
        if req.sub_resource not in PINNED_SUBRESOURCES or self.admission.exempt(req.namespace):
            return None
        obj = with_namespace(req.obj, req.namespace)
        if req.operation == "UPDATE" and req.old_obj is not None and req.sub_resource == "":
            # Metadata edits and scale-downs keep what runs: no rollout just to pin a legacy tag.
            watched = self.admission.watched_annotations()
            if benign_update(req.old_obj, obj, watched) is not None:
                return None
        return obj
