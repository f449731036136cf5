"""The workloads the background audit judges, kept current by the operator's watches.

Every replica already watches every supported kind (kopf); keeping what those watches deliver
lets the audit judge the whole cluster without listing it on every pass. Only what the engine
reads is kept (no status, no managedFields), and only objects judged in their own right: pods
and ReplicaSets made by a controller are judged through their owner.

kopf says nothing when a watch's initial listing is complete, so the first pass lists the
cluster once (`seed`); from then on the watches alone keep the inventory current, including
kinds whose CRDs are installed later (kopf starts watching them when they appear). What a watch
delivered is never overridden by the seed listing, which may be older.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from mlgate.engine.workloads import SUPPORTED

Key = tuple[str, str, str, str]  # API group, kind, namespace, name
_KEPT_METADATA = ("name", "namespace", "uid", "labels", "annotations", "ownerReferences")


def _key(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    group = str(body.get("apiVersion") or "").rpartition("/")[0]
    return (group, str(body.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


def controlled(body: Mapping[str, Any]) -> bool:
    """Pods and ReplicaSets made by a controller are judged through their owner."""
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, Mapping) and r.get("controller") for r in refs)


def _trimmed(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta},
        "spec": body.get("spec"),
    }


@dataclass
class Inventory:
    _items: dict[Key, dict[str, Any]] = field(default_factory=dict)
    _watched: set[Key] | None = field(default_factory=set)  # None once seeded

    @property
    def seeded(self) -> bool:
        return self._watched is None

    def observe(self, event: str | None, body: Mapping[str, Any]) -> None:
        key = _key(body)
        if self._watched is not None:
            self._watched.add(key)
        if event == "DELETED" or controlled(body):
            self._items.pop(key, None)
        else:
            self._items[key] = _trimmed(body)

    def seed(self, listed: Iterable[Mapping[str, Any]]) -> None:
        """Add what a listing found and the watches have not delivered yet."""
        watched = self._watched or set()
        for body in listed:
            key = _key(body)
            if key not in watched and not controlled(body):
                self._items[key] = _trimmed(body)
        self._watched = None

    def items(self) -> list[dict[str, Any]]:
        return list(self._items.values())

    def register(self, registry: kopf.OperatorRegistry) -> None:
        def on_event(type: str | None, body: kopf.Body, **_: Any) -> None:
            self.observe(type, body)

        for spec in SUPPORTED:
            kopf.on.event(
                spec.group,
                spec.versions[0],
                spec.plural,
                registry=registry,
                id=f"inventory-{spec.plural}",
            )(on_event)
