"""The operator's view of the cluster, compiled for the webhook's hot path.

Handlers write; the webhook reads `snapshot()`, an immutable value rebuilt only when something
changed, so a request never sees a half-applied update and never compiles anything itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlgate.api import models as api
from mlgate.api.compile import (
    InvalidResource,
    compile_approval,
    compile_policy,
    parse_resource,
)
from mlgate.api.workloadkind import compile_workload_kind
from mlgate.engine.policy import Approval, CompiledPolicy
from mlgate.engine.workloads import BUILT_IN_ONLY, Kinds, KindSpec


@dataclass(frozen=True, slots=True)
class Snapshot:
    policies: tuple[CompiledPolicy, ...] = ()
    approvals: tuple[Approval, ...] = ()
    kinds: Kinds = BUILT_IN_ONLY  # built in, and declared by WorkloadKinds
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
    _kinds: dict[str, tuple[int | None, KindSpec]] = field(default_factory=dict)
    _namespaces: dict[str, Mapping[str, str]] = field(default_factory=dict)
    _snapshot: Snapshot = field(default_factory=Snapshot)
    # Called when the declared kinds change: the webhook's routing must follow them.
    on_kinds_changed: Callable[[], None] = lambda: None

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _rebuild(self) -> None:
        before = self._snapshot.kinds
        self._snapshot = Snapshot(
            policies=tuple(p for _, (_, p) in sorted(self._policies.items())),
            approvals=tuple(a for _, (_, a) in sorted(self._approvals.items())),
            kinds=self._declared_kinds(),
            generation=self._snapshot.generation + 1,
        )
        if self._snapshot.kinds != before:
            self.on_kinds_changed()

    def _declared_kinds(self) -> Kinds:
        """Two WorkloadKinds for the same kind: the first by name is in force, so the outcome
        does not depend on the order the watch delivered them in."""
        declared: dict[tuple[str, str], KindSpec] = {}
        for _, (_, spec) in sorted(self._kinds.items()):
            declared.setdefault((spec.group, spec.kind), spec)
        return Kinds(declared) if declared else BUILT_IN_ONLY

    def _entry(self, key: str) -> tuple[int | None, Any] | None:
        return self._policies.get(key) or self._approvals.get(key) or self._kinds.get(key)

    def upsert(self, body: Mapping[str, Any]) -> CompileResult:
        key = resource_key(body)
        generation = (body.get("metadata") or {}).get("generation")
        try:
            resource = parse_resource(body)
            if isinstance(resource, api.ApprovedModel):
                self._approvals[key] = (generation, compile_approval(resource))
            elif isinstance(resource, api.ClusterMLPolicy | api.MLPolicy):
                self._policies[key] = (generation, compile_policy(resource))
            elif isinstance(resource, api.WorkloadKind):
                self._kinds[key] = (generation, compile_workload_kind(resource))
        except InvalidResource as exc:
            previous = self._entry(key)
            kept = (
                f"; generation {previous[0]} stays in force" if previous else "; nothing in force"
            )
            return CompileResult(False, f"{exc}{kept}", previous[0] if previous else None)
        self._rebuild()
        return CompileResult(True, "compiled and in force", generation)

    def remove(self, body: Mapping[str, Any]) -> None:
        key = resource_key(body)
        removed = [d.pop(key, None) for d in (self._policies, self._approvals, self._kinds)]
        if any(removed):
            self._rebuild()

    def set_namespace(self, name: str, labels: Mapping[str, str] | None) -> None:
        if labels is None:
            self._namespaces.pop(name, None)
        else:
            self._namespaces[name] = dict(labels)

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        return self._namespaces.get(name)
