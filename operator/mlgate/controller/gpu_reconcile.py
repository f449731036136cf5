"""Keeping GPU budgets true to the cluster, and showing them (GPUBudget status, Prometheus).

Admissions only ever add to or raise reservations. The leader brings them back to what the
live objects need, once a reservation is older than the grace period (so an admission whose
object is not persisted yet is never mistaken for a leftover):
- the object is gone (deleted, or its create failed after admission): the reservation goes;
- it is finished (a Succeeded/Failed pod, a completed Job): the reservation goes;
- it is a child reserved on its own because its owner's reservation was full (the new
  ReplicaSet of a rolling update): it is folded into the owner's once that has room for it;
- otherwise it becomes the object's current demand (a scaled-down Deployment frees GPUs).
Writes carry the version read, like admissions; a conflict is retried on the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mlgate.cluster.client import ApiError
from mlgate.controller.gpu_budget import Budget, BudgetStore, Reservation
from mlgate.controller.gpu_ledger import GpuLedger, controller_of
from mlgate.controller.state import PolicyState
from mlgate.engine.gpu import covered, workload_amounts
from mlgate.engine.gpu_usage import Key, ObservedPod, loads, total, tracked, usage_for
from mlgate.engine.policy import GpuLoad, GpuRules
from mlgate.engine.scope import namespace_in_scope
from mlgate.engine.workloads import Unsupported, view
from mlgate.metrics import Metrics
from mlgate.webhook.gpu_facts import ObjectLookup, device_claims, object_of

log = logging.getLogger("mlgate.gpu")
_FINISHED_POD = frozenset({"Succeeded", "Failed"})
_FINISHED_JOB = frozenset({"Complete", "Failed"})
_COLUMNS = ("used", "reserved", "charged")


def finished(obj: Mapping[str, Any]) -> bool:
    """Objects that exist but hold no GPUs any more."""
    status = obj.get("status")
    status = status if isinstance(status, Mapping) else {}
    if obj.get("kind") == "Pod":
        return status.get("phase") in _FINISHED_POD
    if obj.get("kind") == "Job":
        return any(
            isinstance(c, Mapping) and c.get("type") in _FINISHED_JOB and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
    return False


def _subtree(pods: list[ObservedPod], key: Key) -> dict[str, int]:
    used: dict[str, int] = {}
    for pod in pods:
        if key in pod.chain:
            for r, n in pod.amounts.items():
                used[r] = used.get(r, 0) + n
    return used


@dataclass
class BudgetReconciler:
    store: BudgetStore
    ledger: GpuLedger
    state: PolicyState
    object_lookup: ObjectLookup
    base: GpuRules
    metrics: Metrics
    leads: Callable[[], bool]
    now: Callable[[], datetime]
    grace: float = 30.0
    interval: float = 15.0
    _kick: asyncio.Event = field(default_factory=asyncio.Event)
    _deleted: dict[tuple[str, Key], datetime] = field(default_factory=dict)
    _written: dict[str, dict[str, Any]] = field(default_factory=dict)  # last status, per budget

    def deleted(self, namespace: str, key: Key) -> None:
        """The watch saw the object go: its reservation (if admitted before now) is checked at
        once, without waiting for the grace period."""
        self._deleted[(namespace, key)] = self.now()
        self._kick.set()

    async def run(self, after: asyncio.Event) -> None:
        await after.wait()
        while True:
            try:
                await self.round()
            except (ApiError, OSError) as exc:
                log.warning("GPU budget reconciliation failed, retrying: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.interval)
            self._kick.clear()

    async def round(self) -> None:
        budgets = {b.namespace: b for b in await self.store.all()}
        for namespace in self.ledger.namespaces():
            budgets.setdefault(namespace, Budget(namespace))
        for budget in budgets.values():
            await self.report(await self.reconcile(budget) if self.leads() else budget)

    async def reconcile(self, budget: Budget) -> Budget:
        cutoff = self.now() - timedelta(seconds=self.grace)
        kept = dict(budget.reservations)
        for key, reservation in budget.reservations.items():
            gone_at = self._deleted.pop((budget.namespace, key), None)
            if reservation.updated > cutoff and (gone_at is None or reservation.updated > gone_at):
                continue
            if reservation.within:  # a pod inside its owner's reservation: kept while it runs
                if await self._alive(budget.namespace, key) is None:
                    del kept[key]
                continue
            wanted = await self._wanted(budget.namespace, key, kept)
            if wanted is None:
                del kept[key]
            elif wanted != dict(reservation.amounts):
                kept[key] = Reservation(wanted, reservation.updated)
        if kept == dict(budget.reservations) and budget.version is not None:
            return budget
        if not kept and budget.version is None:
            return budget  # nothing to record for a namespace that only has pods
        if not await self.store.write(budget, kept):
            return budget  # an admission wrote meanwhile; next round
        return await self.store.read(budget.namespace)

    async def _alive(self, namespace: str, key: Key) -> Mapping[str, Any] | None:
        """The object, unless it is gone or finished."""
        obj = await object_of(self.object_lookup, namespace, key)
        return None if obj is None or finished(obj) else obj

    async def _wanted(
        self, namespace: str, key: Key, reservations: Mapping[Key, Reservation]
    ) -> dict[str, int] | None:
        """What `key` should hold now; None: nothing (drop the reservation)."""
        obj = await self._alive(namespace, key)
        item = view(obj) if obj is not None else None
        if obj is None or item is None or isinstance(item, Unsupported):
            return None
        claims = await device_claims(self.object_lookup, item, obj)
        demand = self._tracked(workload_amounts(item, claims))
        if not demand:
            return None
        meta = obj.get("metadata")
        parent = controller_of(meta) if isinstance(meta, Mapping) else None
        owners = self.ledger.chain(namespace, parent) if parent is not None else ()
        others = Budget(namespace, {k: r for k, r in reservations.items() if k != key}).records()
        pods = self.ledger.pods(namespace)
        usage, anchor = usage_for(key, owners, pods, others, demand)
        mine = total(GpuLoad(demand, _subtree(pods, key)))
        if anchor is not None and covered(usage.owner, mine):
            return None  # its owner's reservation holds it now: one charge, not two
        return demand

    def _tracked(self, amounts: Mapping[str, int]) -> dict[str, int]:
        return tracked(self.base, self.state.snapshot().policies, amounts)

    async def report(self, budget: Budget) -> None:
        """GPUBudget status (leader) and gauges (every replica), in the tracked resources."""
        namespace = budget.namespace
        table = loads(self.ledger.pods(namespace), budget.records())
        per_resource: dict[str, dict[str, int]] = {}
        for load in table.values():
            for resource, n in self._tracked(total(load)).items():
                row = per_resource.setdefault(resource, dict.fromkeys(_COLUMNS, 0))
                row["used"] += load.observed.get(resource, 0)
                row["reserved"] += load.reserved.get(resource, 0)
                row["charged"] += n
        quota = self._quota(namespace)
        for resource, row in per_resource.items():
            for what, n in row.items():
                self.metrics.gpu.labels(namespace, resource, what).set(n)
        if quota is not None:
            self.metrics.gpu_quota.labels(namespace).set(quota)
        if not self.leads():
            self._written.clear()  # another replica writes meanwhile; rewrite on taking over
            return
        if budget.version is None:
            return
        status: dict[str, Any] = {
            **{what: sum(row[what] for row in per_resource.values()) for what in _COLUMNS},
            "quota": quota,
            "resources": per_resource,
        }
        if self._written.get(namespace) == status:
            return  # no write every round for nothing
        stamped = {**status, "observedTime": self.now().strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            await self.store.write_status(namespace, stamped)
        except ApiError as exc:
            log.warning("could not write the status of GPUBudget %s: %s", namespace, exc)
            return
        self._written[namespace] = status

    def _quota(self, namespace: str) -> int | None:
        labels = self.state.namespace_labels(namespace) or {}
        quotas = [
            p.gpu.namespace_quota
            for p in self.state.snapshot().policies
            if p.gpu is not None
            and p.gpu.namespace_quota is not None
            and namespace_in_scope(p.match, namespace, labels)
        ]
        return min(quotas) if quotas else None
