"""The initial sync: the webhook reports ready only once policies and facts are loaded.

kopf's watches keep the state current afterwards; this one-off listing makes readiness mean
"judging against the cluster's real policy set", so a restart never admits against nothing.
"""

from __future__ import annotations

import logging

from mlgate.api.models import API_VERSION
from mlgate.cluster.client import KubeClient, resource_path
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.handlers import (
    KIND_OF_PLURAL,
    MLGATE_PLURALS,
    observe_pod,
    observe_workload,
)
from mlgate.controller.state import PolicyState
from mlgate.engine.workloads import SUPPORTED

log = logging.getLogger("mlgate.sync")


async def initial_sync(client: KubeClient, state: PolicyState, ledger: GpuLedger) -> None:
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
    await _sync_gpu_facts(client, ledger)
    snapshot = state.snapshot()
    log.info(
        "initial sync done: %d policies, %d approved models",
        len(snapshot.policies),
        len(snapshot.approvals),
    )


async def _sync_gpu_facts(client: KubeClient, ledger: GpuLedger) -> None:
    """Pods' GPUs and the owner links of the core workload kinds, so the first admissions after
    a start already charge pods to their root owner's reservation (kopf's watches take over)."""
    for spec in SUPPORTED:
        if spec.group not in {"", "apps", "batch"}:
            continue  # CRD kinds may not be served; their watches fill the links in shortly
        api_version = f"{spec.group}/{spec.versions[0]}" if spec.group else spec.versions[0]
        for item in await client.list(resource_path(api_version, spec.plural)):
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", spec.kind)
            if spec.plural == "pods":
                observe_pod(ledger, "ADDED", item)
            else:
                observe_workload(ledger, "ADDED", item)
