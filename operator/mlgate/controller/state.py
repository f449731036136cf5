"""The operator's view of the cluster, compiled for the webhook's hot path.

Handlers write; the webhook reads `snapshot()`, an immutable value rebuilt only when something
changed, so a request never sees a half-applied update and never compiles anything itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlgate.api.compile import InvalidResource, failed_policy
from mlgate.api.resources import Compiled, compile_resource
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
    # The spec just compiled, to persist as status.lastGood; None when it did not compile.
    good_spec: Mapping[str, Any] | None = None


def resource_key(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    ns = meta.get("namespace")
    return (
        f"{body.get('kind')}/{ns}/{meta.get('name')}"
        if ns
        else f"{body.get('kind')}/{meta.get('name')}"
    )


def last_good(body: Mapping[str, Any]) -> tuple[int | None, Mapping[str, Any]] | None:
    """(generation, document) of the spec mlgate persisted in status.lastGood, if readable."""
    status = body.get("status")
    saved = status.get("lastGood") if isinstance(status, Mapping) else None
    if not isinstance(saved, Mapping) or not isinstance(saved.get("spec"), str):
        return None
    try:
        spec = json.loads(saved["spec"])
    except ValueError:
        return None
    generation = saved.get("generation")
    return (generation if isinstance(generation, int) else None), {**body, "spec": spec}


@dataclass
class PolicyState:
    """Compiled policies, approvals and WorkloadKinds. An invalid spec keeps the last good
    version in force:
    the one in memory, else the one persisted in status.lastGood (so restarts keep it), else
    the policy denies what it governs (compile.failed_policy)."""

    _policies: dict[str, tuple[int | None, CompiledPolicy]] = field(default_factory=dict)
    _approvals: dict[str, tuple[int | None, Approval]] = field(default_factory=dict)
    _kinds: dict[str, tuple[int | None, KindSpec]] = field(default_factory=dict)
    _namespaces: dict[str, Mapping[str, str]] = field(default_factory=dict)
    _snapshot: Snapshot = field(default_factory=Snapshot)
    # Called when the declared kinds or the policies in force change: the webhook's routing
    # follows both (controller.routing).
    on_routing_changed: Callable[[], None] = lambda: None

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _rebuild(self) -> None:
        before = self._snapshot
        self._snapshot = Snapshot(
            policies=tuple(p for _, (_, p) in sorted(self._policies.items())),
            approvals=tuple(a for _, (_, a) in sorted(self._approvals.items())),
            kinds=self._declared_kinds(),
            generation=self._snapshot.generation + 1,
        )
        if (self._snapshot.kinds, self._snapshot.policies) != (before.kinds, before.policies):
            self.on_routing_changed()

    def _declared_kinds(self) -> Kinds:
        """Two WorkloadKinds for the same kind: the first by name is in force, so the outcome
        does not depend on the order the watch delivered them in."""
        declared: dict[tuple[str, str], KindSpec] = {}
        for _, (_, spec) in sorted(self._kinds.items()):
            declared.setdefault((spec.group, spec.kind), spec)
        return Kinds(declared) if declared else BUILT_IN_ONLY

    def _install(self, key: str, generation: int | None, item: Compiled) -> None:
        if isinstance(item, Approval):
            self._approvals[key] = (generation, item)
        elif isinstance(item, KindSpec):
            self._kinds[key] = (generation, item)
        else:
            self._policies[key] = (generation, item)
        self._rebuild()

    def _in_force(self, key: str) -> tuple[int | None, Compiled] | None:
        current = self._policies.get(key) or self._approvals.get(key) or self._kinds.get(key)
        if current is None or (isinstance(current[1], CompiledPolicy) and current[1].invalid):
            return None
        return current

    def upsert(self, body: Mapping[str, Any]) -> CompileResult:
        key = resource_key(body)
        generation = (body.get("metadata") or {}).get("generation")
        try:
            item = compile_resource(body)
        except InvalidResource as exc:
            return self._keep_last_good(key, body, str(exc))
        self._install(key, generation, item)
        note = ""
        if isinstance(item, Approval) and item.signature_problem:  # shown in the Ready condition
            note = f"; its recorded signature does not count: {item.signature_problem}"
        spec = body.get("spec")
        return CompileResult(
            True,
            f"compiled and in force{note}",
            generation,
            spec if isinstance(spec, Mapping) else None,
        )

    def _keep_last_good(self, key: str, body: Mapping[str, Any], error: str) -> CompileResult:
        previous = self._in_force(key)
        if previous is not None:
            return CompileResult(
                False, f"{error}; generation {previous[0]} stays in force", previous[0]
            )
        saved = last_good(body)
        if saved is not None:
            try:
                item = compile_resource(saved[1])
            except InvalidResource:
                pass
            else:
                self._install(key, saved[0], item)
                return CompileResult(
                    False,
                    f"{error}; generation {saved[0]} (status.lastGood) stays in force",
                    saved[0],
                )
        failed = failed_policy(body, error)
        if failed is None:
            return CompileResult(False, f"{error}; nothing in force", None)
        self._install(key, None, failed)
        return CompileResult(
            False, f"{error}; nothing in force, so it denies every workload it governs", None
        )

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
