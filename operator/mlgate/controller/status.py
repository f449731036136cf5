"""Status writes that no watch event triggers: after an election."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from mlgate.api.models import API_VERSION
from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.controller.handlers import KIND_OF_PLURAL, MLGATE_PLURALS, status_patch
from mlgate.controller.state import PolicyState

log = logging.getLogger("mlgate.status")


async def write_all_statuses(client: KubeClient, state: PolicyState) -> None:
    """Bring every mlgate resource's status up to date, e.g. once this replica leads."""
    now = datetime.now(UTC)
    for plural in MLGATE_PLURALS:
        try:
            items = await client.list(resource_path(API_VERSION, plural))
        except (ApiError, OSError) as exc:
            log.warning("could not list %s to update their status: %s", plural, exc)
            continue
        for item in items:
            item.setdefault("apiVersion", API_VERSION)
            item.setdefault("kind", KIND_OF_PLURAL[plural])
            change = status_patch(item.get("status") or {}, state.upsert(item), now)
            if change is None:
                continue
            meta = item["metadata"]
            path = resource_path(API_VERSION, plural, meta.get("namespace"), meta["name"])
            try:
                await client.patch(f"{path}/status", {"status": change})
            except ApiError as exc:
                log.warning("could not update status of %s %s: %s", plural, meta["name"], exc)
