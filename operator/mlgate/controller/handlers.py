"""kopf handlers: keep the in-memory state in step with the cluster and report policy status;
and the GPU ledger's lean watches (controller/watch.py), which see every stored workload.

Handlers are registered on a registry built per process (no module-level globals), so tests and
`mlgate run` each get their own.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from mlgate.api.crdgen import CRDS
from mlgate.api.models import GROUP, VERSION
from mlgate.cluster.client import KubeClient, login
from mlgate.controller.egress import EgressReconciler
from mlgate.controller.gpu_ledger import GpuLedger, controller_of
from mlgate.controller.state import CompileResult, PolicyState
from mlgate.controller.watch import ListWatch
from mlgate.engine.gpu import workload_amounts
from mlgate.engine.gpu_usage import Key
from mlgate.engine.workloads import SUPPORTED, Unsupported, group_of, view

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


def status_patch(
    status: Mapping[str, Any],
    result: CompileResult,
    now: datetime,
) -> dict[str, Any] | None:
    """The status change to write, or None when the status already says this (no write loops).

    A spec that compiled is persisted as status.lastGood, so that after a restart an invalid
    spec that got in meanwhile does not leave the policy without a version in force.
    """
    wanted = [ready_condition(result, now)]
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


def pod_amounts(body: Mapping[str, Any]) -> dict[str, int]:
    """Every extended resource a pod requests (policies pick theirs when judging)."""
    item = view(body)
    return {} if isinstance(item, Unsupported) else workload_amounts(item)


def observe_pod(ledger: GpuLedger, type: str, body: Mapping[str, Any]) -> None:
    meta = body.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    if type == "DELETED" or (body.get("status") or {}).get("phase") in _TERMINAL_PHASES:
        ledger.pod_gone(uid, deleted=type == "DELETED")
        return
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    ledger.pod_seen(uid, namespace, name, controller_of(meta), pod_amounts(body))


def observe_workload(
    ledger: GpuLedger, type: str, body: Mapping[str, Any]
) -> tuple[str, Key] | None:
    """Remember who controls a workload object, so its pods can be charged to the root."""
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    if not namespace:
        return None
    key = (group_of(str(body.get("apiVersion") or "")), str(body.get("kind") or ""), meta["name"])
    if type == "DELETED":
        ledger.object_gone(namespace, key)
    else:
        ledger.object_seen(namespace, key, controller_of(meta))
    return namespace, key


async def no_routing() -> None:
    """Without a router (tests, `mlgate check`) nothing is routed."""


def gpu_watches(
    client: KubeClient, ledger: GpuLedger, deleted: Callable[[str, Key], None]
) -> tuple[ListWatch, ...]:
    """The GPU ledger's watches (controller/watch.py, not kopf: every stored workload flows
    through them): pods in full (their resources and phase), every other kind that runs pods
    as metadata only (the owner links, and deletions that free a reservation at once).
    Runtimes and configs come from kopf's watch in controller/runtimes.py alone."""

    def on_workload(type: str, body: dict[str, Any]) -> None:
        key = observe_workload(ledger, type, body)
        if type == "DELETED" and key is not None:
            deleted(*key)  # the budget reconciler frees its reservation without waiting

    def on_pod(type: str, body: dict[str, Any]) -> None:
        observe_pod(ledger, type, body)
        meta = body.get("metadata") or {}
        if type == "DELETED" or (body.get("status") or {}).get("phase") in _TERMINAL_PHASES:
            deleted(str(meta.get("namespace") or ""), ("", "Pod", str(meta.get("name") or "")))

    return tuple(
        ListWatch(
            client,
            spec.api_versions[0],
            spec.kind,
            spec.plural,
            on_pod if spec.plural == "pods" else on_workload,
            metadata_only=spec.plural != "pods",
        )
        for spec in SUPPORTED
        if spec.runs_pods  # runtimes and configs own no pods and reserve nothing
    )


def register(
    registry: kopf.OperatorRegistry,
    state: PolicyState,
    leads: Callable[[], bool] = lambda: True,
    *,
    egress: EgressReconciler | None = None,
    routed: Callable[[], Awaitable[object]] = no_routing,
) -> None:
    """Attach the handlers of mlgate's own resources and namespaces to `registry`.

    `leads()` is False on replicas that are not the leader: they keep their state current
    but leave status writes to one replica. `egress`, when given, is fed the policies,
    namespaces and managed NetworkPolicies it reconciles (its handlers run after the state's).
    `routed()` brings the webhook configurations in step with the state (controller.routing):
    awaited before Ready is written, so a policy reported Ready is also routed (its workloads
    reach the mutating webhook when it pins or verifies).
    """

    def write_status(body: kopf.Body, patch: kopf.Patch, result: CompileResult) -> None:
        change = status_patch(body.get("status") or {}, result, datetime.now(UTC))
        if change is not None:
            patch.status.update(change)

    async def on_resource(type: str, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        if type == "DELETED":
            state.remove(body)
        elif leads():
            result = state.upsert(body)
            await routed()
            write_status(body, patch, result)
        else:
            state.upsert(body)

    @kopf.on.login(registry=registry)
    def on_login(**_: Any) -> kopf.ConnectionInfo:
        return login()

    for plural in MLGATE_PLURALS:
        kopf.on.event(GROUP, VERSION, plural, registry=registry, id=f"track-{plural}")(on_resource)

    @kopf.on.event("", "v1", "namespaces", registry=registry, id="track-namespaces")
    def on_namespace(type: str, name: str, labels: Mapping[str, str], **_: Any) -> None:
        state.set_namespace(name, None if type == "DELETED" else labels)

    if egress is not None:
        egress.register(registry)
