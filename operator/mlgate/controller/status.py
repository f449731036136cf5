"""Status updates that no watch event triggers: the end of the post-restart quota window."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from mlgate.api.models import API_VERSION
from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.controller.handlers import quota_condition

log = logging.getLogger("mlgate.status")


async def settle_quota_conditions(client: KubeClient, reservation_ttl: float) -> None:
    """After one reservation TTL every reservation is rebuilt: say so on quota policies."""
    await asyncio.sleep(reservation_ttl)
    for plural in ("clustermlpolicies", "mlpolicies"):
        try:
            items = await client.list(resource_path(API_VERSION, plural))
        except (ApiError, OSError) as exc:
            log.warning("could not list %s to update quota conditions: %s", plural, exc)
            continue
        for item in items:
            wanted = quota_condition(item, reservation_ttl, reservation_ttl, datetime.now(UTC))
            if wanted is None:
                continue
            meta = item["metadata"]
            others = [
                c
                for c in (item.get("status") or {}).get("conditions") or []
                if c.get("type") != wanted["type"]
            ]
            path = (
                resource_path(API_VERSION, plural, meta.get("namespace"), meta["name"]) + "/status"
            )
            try:
                await client.patch(path, {"status": {"conditions": [*others, wanted]}})
            except ApiError as exc:
                log.warning("could not update status of %s %s: %s", plural, meta["name"], exc)
