"""Kubernetes Events on workloads, so Warn/Audit violations show in `kubectl describe`."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.engine.decisions import Violation
from mlgate.engine.workloads import WorkloadView

log = logging.getLogger("mlgate.events")
_MAX_MESSAGE = 1024


def event_body(
    item: WorkloadView, violations: tuple[Violation, ...], now: datetime
) -> dict[str, Any]:
    text = "; ".join(f"[{v.policy}] {v.rule} at {v.path}: {v.message}" for v in violations)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{item.name or 'workload'}.mlgate.{uuid.uuid4().hex[:12]}",
            "namespace": item.namespace,
        },
        "involvedObject": {
            "apiVersion": item.api_version,
            "kind": item.kind,
            "name": item.name,
            "namespace": item.namespace,
        },
        "reason": "PolicyViolation",
        "message": text[:_MAX_MESSAGE],
        "type": "Warning",
        "source": {"component": "mlgate"},
        "reportingComponent": "mlgate",
        "reportingInstance": "mlgate",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_violations(
    client: KubeClient, item: WorkloadView, violations: tuple[Violation, ...]
) -> None:
    """Best effort: an event that cannot be posted is logged, never fails the admission."""
    try:
        await client.create(
            resource_path("v1", "events", item.namespace),
            event_body(item, violations, datetime.now(UTC)),
        )
    except (ApiError, OSError, TimeoutError) as exc:
        log.warning("could not post event for %s/%s: %s", item.namespace, item.name, exc)
