"""kopf handlers: keep the in-memory state in step with the cluster and report policy status.

Handlers are registered on a registry built per process (no module-level globals), so tests and
`mlgate run` each get their own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from mlgate.api.crdgen import CRDS
from mlgate.api.models import GROUP, VERSION
from mlgate.cluster.client import login
from mlgate.controller.egress import EgressReconciler
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.state import CompileResult, PolicyState
from mlgate.engine.gpu import pod_demand
from mlgate.engine.policy import GpuRules
from mlgate.engine.workloads import SUPPORTED, PodView, Unsupported, view

MLGATE_PLURALS = tuple(crd.plural for crd in CRDS)
KIND_OF_PLURAL = {crd.plural: crd.kind for crd in CRDS}
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
MAX_CONDITION_MESSAGE = 32768


def ready_condition(result: CompileResult, now: datetime) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True" if result.ok else "False",
        "reason": "Compiled" if result.ok else "Invalid",
        # The schema's limit: a longer message would fail the whole status write.
        "message": result.message[:MAX_CONDITION_MESSAGE],
        "observedGeneration": result.active_generation,
        "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _same_condition(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    keys = ("status", "reason", "message", "observedGeneration")
    return all(current.get(k) == wanted.get(k) for k in keys)


def quota_condition(
    body: Mapping[str, Any], uptime: float, reservation_ttl: float, now: datetime
) -> dict[str, Any] | None:
    """Whether this process can vouch for the policy's namespace GPU quota right now.

    Reservations live in memory: after a restart, workloads admitted shortly before it whose
    pods do not exist yet are not counted until their pods appear, so the quota can be overrun
    for up to one reservation TTL. The condition says so instead of hiding it.
    """
    gpu = (body.get("spec") or {}).get("gpu") or {}
    if gpu.get("namespaceQuota") is None:
        return None
    rebuilding = uptime < reservation_ttl
    return {
        "type": "GpuQuotaExact",
        "status": "False" if rebuilding else "True",
        "reason": "ReservationsRebuilding" if rebuilding else "Tracking",
        "message": (
            f"mlgate started {int(uptime)}s ago; GPUs of workloads admitted before the restart "
            f"whose pods do not exist yet are not counted for up to {int(reservation_ttl)}s, "
            "so the namespace quota can be overrun until then"
            if rebuilding
            else "pods and newly admitted workloads are counted against the namespace quota"
        ),
        "observedGeneration": (body.get("metadata") or {}).get("generation"),
        "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def status_patch(
    status: Mapping[str, Any],
    result: CompileResult,
    now: datetime,
    extra: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any] | None:
    """The status change to write, or None when the status already says this (no write loops).

    A spec that compiled is persisted as status.lastGood, so that after a restart an invalid
    spec that got in meanwhile does not leave the policy without a version in force.
    """
    wanted = [ready_condition(result, now), *extra]
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    current = {c.get("type"): c for c in conditions}
    good = last_good_status(result)
    if all(w["type"] in current and _same_condition(current[w["type"]], w) for w in wanted) and (
        good is None or status.get("lastGood") == good
    ):
        return None
    types = {w["type"] for w in wanted}
    others = [dict(c) for c in conditions if c.get("type") not in types]
    change: dict[str, Any] = {
        "conditions": [*others, *wanted],
        "observedGeneration": result.active_generation,
    }
    if good is not None:
        change["lastGood"] = good
    return change


def last_good_status(result: CompileResult) -> dict[str, Any] | None:
    if result.good_spec is None:
        return None
    spec = json.dumps(result.good_spec, sort_keys=True, separators=(",", ":"))
    return {"generation": result.active_generation, "spec": spec}


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
    leads: Callable[[], bool] = lambda: True,
    *,
    egress: EgressReconciler | None = None,
) -> None:
    """Attach every handler to `registry`.

    `leads()` is False on replicas that are not the leader: they keep their state current
    but leave status writes to one replica. `egress`, when given, is fed the policies,
    namespaces and managed NetworkPolicies it reconciles (its handlers run after the state's).
    """

    started = time.monotonic()

    def write_status(body: kopf.Body, patch: kopf.Patch, result: CompileResult) -> None:
        now = datetime.now(UTC)
        quota = quota_condition(body, time.monotonic() - started, ledger.reservation_ttl, now)
        change = status_patch(body.get("status") or {}, result, now, (quota,) if quota else ())
        if change is not None:
            patch.status.update(change)

    def on_resource(type: str, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        if type == "DELETED":
            state.remove(body)
        elif leads():
            write_status(body, patch, state.upsert(body))
        else:
            state.upsert(body)

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

    if egress is not None:
        egress.register(registry)
