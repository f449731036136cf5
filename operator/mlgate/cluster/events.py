"""Kubernetes Events on workloads, so Warn/Audit violations show in `kubectl describe`."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.engine.decisions import Violation
from mlgate.engine.workloads import WorkloadView

log = logging.getLogger("mlgate.events")
_MAX_MESSAGE = 1024


def warning_event(involved: Mapping[str, str], message: str, now: datetime) -> dict[str, Any]:
    """A PolicyViolation Warning Event on the object `involved` names (apiVersion, kind,
    namespace, name and, when known, uid)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{involved.get('name') or 'workload'}.mlgate.{uuid.uuid4().hex[:12]}",
            "namespace": involved.get("namespace"),
        },
        "involvedObject": dict(involved),
        "reason": "PolicyViolation",
        "message": message[:_MAX_MESSAGE],
        "type": "Warning",
        "source": {"component": "mlgate"},
        "reportingComponent": "mlgate",
        "reportingInstance": "mlgate",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def event_body(
    item: WorkloadView, violations: tuple[Violation, ...], now: datetime
) -> dict[str, Any]:
    involved = {
        "apiVersion": item.api_version,
        "kind": item.kind,
        "name": item.name,
        "namespace": item.namespace,
    }
    return warning_event(involved, "; ".join(v.describe() for v in violations), now)


async def post_event(client: KubeClient, body: dict[str, Any]) -> bool:
    """Best effort: an event that cannot be posted is logged, never fails the caller."""
    involved = body["involvedObject"]
    try:
        await client.create(resource_path("v1", "events", involved.get("namespace")), body)
    except (ApiError, OSError, TimeoutError) as exc:
        log.warning(
            "could not post event for %s/%s: %s", involved.get("namespace"), involved["name"], exc
        )
        return False
    return True


async def post_violations(
    client: KubeClient, item: WorkloadView, violations: tuple[Violation, ...]
) -> None:
    await post_event(client, event_body(item, violations, datetime.now(UTC)))
