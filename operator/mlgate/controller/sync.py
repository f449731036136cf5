"""The initial sync: the webhook reports ready only once policies and facts are loaded.

kopf's watches keep the state current afterwards; this one-off listing makes readiness mean
"judging against the cluster's real policy set", so a restart never admits against nothing.
"""

from __future__ import annotations

import logging

from mlgate.api.models import API_VERSION
from mlgate.cluster.client import KubeClient, resource_path
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.handlers import KIND_OF_PLURAL, MLGATE_PLURALS, pod_gpus, pod_owner
from mlgate.controller.state import PolicyState
from mlgate.engine.policy import GpuRules

log = logging.getLogger("mlgate.sync")


async def initial_sync(
    client: KubeClient, state: PolicyState, ledger: GpuLedger, gpu_rules: GpuRules
) -> None:
    for plural in MLGATE_PLURALS:
        for item in await client.list(resource_path(API_VERSION, plural)):
            item.setdefault("apiVersion", API_VERSION)
            item.setdefault("kind", KIND_OF_PLURAL[plural])
            result = state.upsert(item)
            if not result.ok:
                log.warning("invalid %s %s: %s", plural, item["metadata"]["name"], result.message)
    for ns in await client.list(resource_path("v1", "namespaces")):
        meta = ns.get("metadata") or {}
        state.set_namespace(str(meta.get("name")), meta.get("labels") or {})
    for pod in await client.list(resource_path("v1", "pods")):
        pod.setdefault("apiVersion", "v1")
        pod.setdefault("kind", "Pod")
        meta = pod.get("metadata") or {}
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            ledger.pod_seen(
                str(meta.get("uid")),
                str(meta.get("namespace")),
                pod_owner(meta),
                pod_gpus(gpu_rules, pod),
            )
    snapshot = state.snapshot()
    log.info(
        "initial sync done: %d policies, %d approved models",
        len(snapshot.policies),
        len(snapshot.approvals),
    )
