"""The initial sync: the webhook reports ready only once policies and facts are loaded.

kopf's watches keep the state current afterwards (controller/watch.py the GPU ledger, whose
first listings this waits for); this one-off listing makes readiness mean
"judging against the cluster's real policy set", so a restart never admits against nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mlgate.api.models import API_VERSION
from mlgate.cluster.client import KubeClient, resource_path
from mlgate.controller.handlers import KIND_OF_PLURAL, MLGATE_PLURALS
from mlgate.controller.state import PolicyState
from mlgate.controller.watch import ListWatch

log = logging.getLogger("mlgate.sync")


async def initial_sync(
    client: KubeClient, state: PolicyState, gpu_watches: Iterable[ListWatch]
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
    # Pods' GPUs and the owner links, so the first admissions after a start already charge pods
    # to their root owner's reservation.
    for watch in gpu_watches:
        await watch.synced.wait()
    snapshot = state.snapshot()
    log.info(
        "initial sync done: %d policies, %d approved models",
        len(snapshot.policies),
        len(snapshot.approvals),
    )
