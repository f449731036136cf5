"""Status writes that no watch event triggers: after an election and after the quota window."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from mlgate.api.models import API_VERSION
from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.controller.handlers import KIND_OF_PLURAL, MLGATE_PLURALS, quota_condition, status_patch
from mlgate.controller.state import PolicyState

log = logging.getLogger("mlgate.status")


async def write_all_statuses(
    client: KubeClient, state: PolicyState, uptime: float, reservation_ttl: float
) -> None:
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
            quota = quota_condition(item, uptime, reservation_ttl, now)
            change = status_patch(
                item.get("status") or {}, state.upsert(item), now, (quota,) if quota else ()
            )
            if change is None:
                continue
            meta = item["metadata"]
            path = resource_path(API_VERSION, plural, meta.get("namespace"), meta["name"])
            try:
                await client.patch(f"{path}/status", {"status": change})
            except ApiError as exc:
                log.warning("could not update status of %s %s: %s", plural, meta["name"], exc)


async def settle_quota_conditions(
    client: KubeClient, state: PolicyState, reservation_ttl: float, leads: Callable[[], bool]
) -> None:
    """After one reservation TTL every reservation is rebuilt: say so on quota policies."""
    await asyncio.sleep(reservation_ttl)
    if leads():
        await write_all_statuses(client, state, reservation_ttl, reservation_ttl)
