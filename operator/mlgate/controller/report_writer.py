"""Writes the audit's PolicyReports: the adapter around controller/policy_reports.py.

Only reports labelled as mlgate's are read, changed or deleted; a report is written only when
its content changed, and writes are paced (`pace` seconds apart) so that a first pass over a big
cluster cannot flood the apiserver. When the cluster does not serve wgpolicyk8s.io (the CRDs are
optional), nothing is written and the next pass tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.controller.policy_reports import API_VERSION, CLUSTER, MANAGED_BY, same_report
from mlgate.metrics import Metrics

log = logging.getLogger("mlgate.reports")
SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
Reports = dict[str, dict[str, Any]]


def _path(namespace: str, name: str | None = None) -> str:
    if namespace == CLUSTER:
        return resource_path(API_VERSION, "clusterpolicyreports", name=name)
    return resource_path(API_VERSION, "policyreports", namespace, name)


@dataclass
class ReportWriter:
    client: KubeClient
    metrics: Metrics
    pace: float = 0.05

    async def existing(self) -> Reports | None:
        """mlgate's reports in the cluster by namespace (CLUSTER for the cluster report), or
        None when the cluster does not serve PolicyReports."""
        try:
            namespaced = await self.client.list(
                resource_path(API_VERSION, "policyreports"), {"labelSelector": SELECTOR}
            )
            cluster = await self.client.list(_path(CLUSTER), {"labelSelector": SELECTOR})
        except ApiError as exc:
            if exc.status == 404:
                log.debug("PolicyReport CRDs are not installed; no reports written")
                return None
            raise
        reports: Reports = {str(r["metadata"].get("namespace")): r for r in namespaced}
        if cluster:
            reports[CLUSTER] = cluster[0]
        return reports

    async def sync(self, wanted: Mapping[str, dict[str, Any]], existing: Reports) -> None:
        """Make the cluster's reports `wanted`: apply the changed ones, delete the stale ones."""
        for namespace, body in wanted.items():
            current = existing.get(namespace)
            if current is not None and same_report(current, body):
                continue
            await self._write("apply", namespace, body)
        for namespace, current in existing.items():
            if namespace not in wanted:
                await self._write("delete", namespace, current)

    async def _write(self, operation: str, namespace: str, body: Mapping[str, Any]) -> None:
        path = _path(namespace, str(body["metadata"]["name"]))
        try:
            if operation == "apply":
                await self.client.apply(path, dict(body))
            else:
                await self.client.delete(path)
        except ApiError as exc:
            if not (operation == "delete" and exc.status == 404):
                log.warning("could not %s PolicyReport %s: %s", operation, path, exc)
        else:
            self.metrics.report_writes.labels(operation).inc()
        await asyncio.sleep(self.pace)
