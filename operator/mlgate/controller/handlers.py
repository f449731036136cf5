"""kopf handlers: keep the in-memory state in step with the cluster and report policy status.

Handlers are registered on a registry built per process (no module-level globals), so tests and
`mlgate run` each get their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from mlgate.api.models import GROUP, VERSION
from mlgate.cluster.client import login
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.state import CompileResult, PolicyState
from mlgate.engine.gpu import pod_demand
from mlgate.engine.policy import GpuRules
from mlgate.engine.workloads import SUPPORTED, PodView, Unsupported, view

MLGATE_PLURALS = ("clustermlpolicies", "mlpolicies", "approvedmodels")
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def ready_condition(result: CompileResult, now: datetime) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True" if result.ok else "False",
        "reason": "Compiled" if result.ok else "Invalid",
        "message": result.message,
        "observedGeneration": result.active_generation,
        "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _same_condition(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    keys = ("status", "reason", "message", "observedGeneration")
    return all(current.get(k) == wanted.get(k) for k in keys)


def status_patch(
    status: Mapping[str, Any], result: CompileResult, now: datetime
) -> dict[str, Any] | None:
    """The status change to write, or None when the status already says this (no write loops)."""
    wanted = ready_condition(result, now)
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    current = next((c for c in conditions if c.get("type") == "Ready"), None)
    if current is not None and _same_condition(current, wanted):
        return None
    others = [dict(c) for c in conditions if c.get("type") != "Ready"]
    return {"conditions": [*others, wanted], "observedGeneration": result.active_generation}


def pod_owner(meta: Mapping[str, Any]) -> str:
    """The pod's controlling owner, or the pod itself when it was created bare."""
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return str(ref.get("name") or "")
    return str(meta.get("name") or "")


def pod_gpus(rules: GpuRules, body: Mapping[str, Any]) -> int:
    item = view(body)
    if isinstance(item, Unsupported):
        return 0
    pods: tuple[PodView, ...] = item.pods
    return sum(pod_demand(rules, pod).gpus for pod in pods)


def register(
    registry: kopf.OperatorRegistry,
    state: PolicyState,
    ledger: GpuLedger,
    gpu_rules: GpuRules,
    writes_status: bool = True,
) -> None:
    """Attach every handler to `registry`.

    `writes_status` is False on replicas that are not the leader: they keep their state current
    but leave status writes to one replica.
    """

    def on_resource(type: str, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        if type == "DELETED":
            state.remove(body)
            return
        result = state.upsert(body)
        if not writes_status:
            return
        change = status_patch(body.get("status") or {}, result, datetime.now(UTC))
        if change is not None:
            patch.status.update(change)

    @kopf.on.login(registry=registry)
    def on_login(**_: Any) -> kopf.ConnectionInfo:
        return login()

    for plural in MLGATE_PLURALS:
        kopf.on.event(GROUP, VERSION, plural, registry=registry, id=f"track-{plural}")(on_resource)

    def on_workload(type: str, name: str, namespace: str | None, **_: Any) -> None:
        if type == "DELETED" and namespace:
            ledger.release(namespace, name)

    # Deleting a workload frees its GPU reservation at once instead of after the reservation TTL.
    for spec in SUPPORTED:
        if spec.plural != "pods":
            kopf.on.event(
                spec.group,
                spec.versions[0],
                spec.plural,
                registry=registry,
                id=f"release-{spec.plural}",
            )(on_workload)

    @kopf.on.event("", "v1", "namespaces", registry=registry, id="track-namespaces")
    def on_namespace(type: str, name: str, labels: Mapping[str, str], **_: Any) -> None:
        state.set_namespace(name, None if type == "DELETED" else labels)

    @kopf.on.event("", "v1", "pods", registry=registry, id="track-pod-gpus")
    def on_pod(type: str, body: kopf.Body, meta: Mapping[str, Any], **_: Any) -> None:
        uid = str(meta.get("uid") or "")
        phase = (body.get("status") or {}).get("phase")
        if type == "DELETED" or phase in _TERMINAL_PHASES:
            ledger.pod_gone(uid)
            return
        ledger.pod_seen(
            uid, str(meta.get("namespace") or ""), pod_owner(meta), pod_gpus(gpu_rules, body)
        )
