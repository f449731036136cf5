"""The operator's view of the cluster, compiled for the webhook's hot path.

Handlers write; the webhook reads `snapshot()`, an immutable value rebuilt only when something
changed, so a request never sees a half-applied update and never compiles anything itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlgate.api import models as api
from mlgate.api.compile import (
    InvalidResource,
    compile_approval,
    compile_policy,
    parse_resource,
)
from mlgate.engine.policy import Approval, CompiledPolicy


@dataclass(frozen=True, slots=True)
class Snapshot:
    policies: tuple[CompiledPolicy, ...] = ()
    approvals: tuple[Approval, ...] = ()
    generation: int = 0  # bumps on every change; caches keyed on it stay coherent


@dataclass(frozen=True, slots=True)
class CompileResult:
    """What happened to one resource: status handlers turn this into conditions."""

    ok: bool
    message: str
    active_generation: int | None  # generation of the version in force, if any


def resource_key(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    ns = meta.get("namespace")
    return (
        f"{body.get('kind')}/{ns}/{meta.get('name')}"
        if ns
        else f"{body.get('kind')}/{meta.get('name')}"
    )


@dataclass
class PolicyState:
    """Compiled policies and approvals; an invalid update keeps the last good version active."""

    _policies: dict[str, tuple[int | None, CompiledPolicy]] = field(default_factory=dict)
    _approvals: dict[str, tuple[int | None, Approval]] = field(default_factory=dict)
    _namespaces: dict[str, Mapping[str, str]] = field(default_factory=dict)
    _snapshot: Snapshot = field(default_factory=Snapshot)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _rebuild(self) -> None:
        self._snapshot = Snapshot(
            policies=tuple(p for _, (_, p) in sorted(self._policies.items())),
            approvals=tuple(a for _, (_, a) in sorted(self._approvals.items())),
            generation=self._snapshot.generation + 1,
        )

    def upsert(self, body: Mapping[str, Any]) -> CompileResult:
        key = resource_key(body)
        generation = (body.get("metadata") or {}).get("generation")
        note = ""
        try:
            resource = parse_resource(body)
            if isinstance(resource, api.ApprovedModel):
                approval = compile_approval(resource)
                self._approvals[key] = (generation, approval)
                if approval.signature_problem:  # shown in the Ready condition's message
                    note = f"; its recorded signature does not count: {approval.signature_problem}"
            elif isinstance(resource, api.ClusterMLPolicy | api.MLPolicy):
                self._policies[key] = (generation, compile_policy(resource))
        except InvalidResource as exc:
            previous = self._policies.get(key) or self._approvals.get(key)
            kept = (
                f"; generation {previous[0]} stays in force" if previous else "; nothing in force"
            )
            return CompileResult(False, f"{exc}{kept}", previous[0] if previous else None)
        self._rebuild()
        return CompileResult(True, f"compiled and in force{note}", generation)

    def remove(self, body: Mapping[str, Any]) -> None:
        key = resource_key(body)
        if self._policies.pop(key, None) or self._approvals.pop(key, None):
            self._rebuild()

    def set_namespace(self, name: str, labels: Mapping[str, str] | None) -> None:
        if labels is None:
            self._namespaces.pop(name, None)
        else:
            self._namespaces[name] = dict(labels)

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        return self._namespaces.get(name)
