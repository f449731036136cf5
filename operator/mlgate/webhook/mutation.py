"""The mutating webhook: verified image tags pinned to their verified digest, and model
verifiers inserted after downloads into pods.

The engine (`engine.pinning`, `engine.modelverify`) decides which image fields to pin and which
pods' initContainers get a verifier; this adapter routes the request, gathers the same facts the
validating webhook uses (the verifier's cache makes the second verification of an image free),
and renders both as one JSONPatch.

Ordering: KServe injects its storage-initializer with its own pod mutating webhook when the Pod
is created. The apiserver calls mutating webhooks in the order of their configurations' names
(KServe's `inferenceservice.serving.kserve.io` before `mlgate`), and reinvocationPolicy IfNeeded
calls mlgate again if a later webhook changes the pod, so the verifier lands after the download
whatever the order; the validating webhook refuses a pod where it did not.

- Only images verified at this admission are pinned. An image that does not verify gets no
  patch, and the validating webhook denies it with the reason; a tag that verifies only there
  (moved in between) is denied there too, unpinned (`engine.pinning.unpinned`).
- The patch depends only on the object and the verification results, never on dryRun, and has
  no side effects (sideEffects: None): dry runs get the same patch.
- Pinned images are not pinned again, so a reinvocation (reinvocationPolicy: IfNeeded) changes
  nothing; each replace is guarded by a `test` of the value it replaces.
- Only image fields and the initContainers lists of pods that download a model are ever
  patched; a workload's own init containers are kept as they are, in their order.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlgate.engine import modelverify
from mlgate.engine.pinning import PINNED_SUBRESOURCES, Pin, json_pointer, pinning_rules, plan
from mlgate.engine.policy import Facts
from mlgate.engine.updates import benign_update
from mlgate.engine.workloads import Unsupported, WorkloadView, view
from mlgate.webhook.admission import Admission, Outcome, mutates, with_namespace
from mlgate.webhook.review import Request


@dataclass(frozen=True)
class Answer:
    """The answer to one review: the Outcome, and for the mutating webhook the JSONPatch."""

    outcome: Outcome
    patch: tuple[dict[str, Any], ...] = ()


def _index(path: str, prefix: str) -> int | None:
    """The container index of an image path under `prefix` (`<prefix>[3].image` -> 3)."""
    head = f"{prefix}["
    if not path.startswith(head) or not path.endswith("].image"):
        return None
    index = path[len(head) : -len("].image")]
    return int(index) if index.isdigit() else None


def _with_pins(pod: modelverify.PodPlan, pins: tuple[Pin, ...]) -> list[dict[str, Any]]:
    """The pod's new initContainers with its pinned init container images applied."""
    desired = [dict(c) for c in pod.desired]
    for pin in pins:
        index = _index(pin.path, pod.path)
        if index is not None:
            name = pod.current[index].get("name")
            for container in desired:
                if container.get("name") == name:
                    container["image"] = pin.pinned
    return desired


def patch_operations(
    pins: tuple[Pin, ...], verifiers: tuple[modelverify.PodPlan, ...] = ()
) -> tuple[dict[str, Any], ...]:
    """A JSONPatch replacing each pinned image and each initContainers list that gains a
    verifier, each guarded by a test of the submitted value: if a path ever pointed elsewhere,
    the apiserver refuses the patch instead of misapplying it. Pins inside a replaced list are
    applied to the list itself."""
    ops: list[dict[str, Any]] = []
    for pod in verifiers:
        pointer = json_pointer(pod.path)
        if not pod.exists:
            ops.append({"op": "add", "path": pointer, "value": _with_pins(pod, pins)})
            continue
        ops.append({"op": "test", "path": pointer, "value": [dict(c) for c in pod.current]})
        ops.append({"op": "replace", "path": pointer, "value": _with_pins(pod, pins)})
    replaced = [pod.path for pod in verifiers]
    for pin in pins:
        if any(_index(pin.path, path) is not None for path in replaced):
            continue
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
        snapshot = self.admission.state.snapshot()
        policies = snapshot.policies
        if not mutates(policies):
            return Answer(Outcome(True, route="not-mutated"))
        pinning = any(pinning_rules(p) for p in policies)
        labels = await self.admission.namespace_labels(item.namespace)
        images = await self.admission.verify_images(policies, item) if pinning else None
        facts = Facts(
            now=self.admission.now(),
            namespace_labels=labels,
            approvals=snapshot.approvals,
            images=images,
        )
        pins = tuple(plan(policies, item, facts))
        image = self.admission.config.verifier_image
        verifiers = modelverify.plan(policies, item, facts, image, self._before(req)).pods
        if not pins and not verifiers:
            return Answer(Outcome(True, route="nothing-to-pin", workload=item))
        route = "verifier-injected" if verifiers else "pinned"
        return Answer(Outcome(True, route=route, workload=item), patch_operations(pins, verifiers))

    @staticmethod
    def _before(req: Request) -> WorkloadView | None:
        old = view(req.old_obj) if req.old_obj is not None else None
        return old if isinstance(old, WorkloadView) else None

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
