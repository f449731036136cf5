"""GPU usage as an admission fact, and reserving after an admission as an explicit step.

`gather` reads the namespace's budget (reservations in the apiserver, with their version) and
this replica's cached pods, and turns them into the `GpuUsage` fact the engine judges. When the
engine allows the workload, `reserve` records what it takes; the write is conditional on the
version read, so when another replica reserved in between it fails and the caller judges again
on the fresh budget. Nothing here decides: the engine does, from the same facts `check` sees.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlgate.controller.gpu_budget import Budget, BudgetStore, Reservation
from mlgate.controller.gpu_ledger import MAX_CHAIN, GpuLedger, controller_of
from mlgate.engine.dra import CLAIM, DRA_GROUP, TEMPLATE, Claims, claim_spec, pod_claims
from mlgate.engine.gpu import covered, workload_amounts
from mlgate.engine.gpu_usage import Key, raised, tracked, usage_for
from mlgate.engine.policy import CompiledPolicy, GpuRules, GpuUsage
from mlgate.engine.workloads import WorkloadView, group_of, lookup

# (group, version, plural, namespace, name) -> the object, or None when it does not exist
ObjectLookup = Callable[[str, str, str, str, str], Awaitable[Mapping[str, Any] | None]]
POD = ("", "Pod")


def key_of(item: WorkloadView) -> Key:
    return (group_of(item.api_version), item.kind, item.name)


async def object_of(
    object_lookup: ObjectLookup, namespace: str, key: Key
) -> Mapping[str, Any] | None:
    """The object behind a key, when it is of a kind mlgate knows (None: gone or unknown)."""
    group, kind, name = key
    spec = lookup(f"{group}/" if group else "v1", kind)  # by group: the version is ignored
    if spec is None:
        return None
    found = await object_lookup(group, spec.versions[0], spec.plural, namespace, name)
    if found is None:
        return None
    api_version = f"{group}/{spec.versions[0]}" if group else spec.versions[0]
    return {"apiVersion": api_version, "kind": kind, **found}


DRA_VERSIONS = ("v1", "v1beta2", "v1beta1")  # whichever the apiserver serves
DRA_PLURALS = {CLAIM: "resourceclaims", TEMPLATE: "resourceclaimtemplates"}


async def device_claims(
    object_lookup: ObjectLookup, item: WorkloadView, obj: Mapping[str, Any]
) -> Claims:
    """The ResourceClaims and templates the workload's pods name, read from the apiserver;
    absent ones are left out (the engine says their devices cannot be counted). A claim or
    template being admitted is its own (its pod names it)."""
    found: dict[tuple[str, str], Any] = {}
    if group_of(item.api_version) == DRA_GROUP and item.kind in DRA_PLURALS:
        found[(item.kind, item.name)] = claim_spec(item.kind, obj)
    for pod in item.pods:
        for ref in pod_claims(pod.spec, pod.path):
            if (ref.kind, ref.name) in found:
                continue
            for version in DRA_VERSIONS:
                claim = await object_lookup(
                    DRA_GROUP, version, DRA_PLURALS[ref.kind], item.namespace, ref.name
                )
                if claim is not None:
                    found[(ref.kind, ref.name)] = claim_spec(ref.kind, claim)
                    break
    return found


@dataclass(frozen=True)
class GpuPlan:
    """What the webhook knows of a workload before it reads the budget."""

    key: Key
    owners: tuple[Key, ...]  # controlling owners up the chain, nearest first
    amounts: Mapping[str, int]  # the tracked extended resources of the whole workload


@dataclass(frozen=True)
class GpuStep:
    """The reservation to record once the workload is admitted."""

    budget: Budget
    key: Key
    amounts: Mapping[str, int]
    within: tuple[Key, ...] = ()  # a pod recorded inside its owner's reservation


@dataclass
class GpuAccounting:
    ledger: GpuLedger
    store: BudgetStore
    object_lookup: ObjectLookup
    now: Callable[[], datetime]
    base: GpuRules | None = None

    async def plan(
        self,
        item: WorkloadView,
        obj: Mapping[str, Any],
        policies: Iterable[CompiledPolicy],
        claims: Claims | None,
    ) -> GpuPlan | None:
        """None when the workload asks for no tracked resource (runtimes, which run no pod, never
        do): nothing to read or reserve. A namespace's budget holds what is charged in it, so
        a cluster-scoped object, which belongs to none, is never charged."""
        amounts = tracked(self.base, policies, workload_amounts(item, claims))
        if not amounts or not item.namespace:
            return None
        meta = obj.get("metadata")
        owners = await self._owners(item.namespace, meta if isinstance(meta, Mapping) else {})
        return GpuPlan(key_of(item), owners, amounts)

    async def _owners(self, namespace: str, meta: Mapping[str, Any]) -> tuple[Key, ...]:
        """The controlling owners up the chain, from this replica's watch cache, else the
        apiserver for kinds mlgate knows. The chain stops at an owner it cannot read: the
        workload is then charged by itself, never on top of a reservation it may belong to."""
        chain: list[Key] = []
        parent = controller_of(meta)
        while parent is not None and parent not in chain and len(chain) < MAX_CHAIN:
            chain.append(parent)
            if self.ledger.known(namespace, parent):
                parent = self.ledger.owner(namespace, parent)
                continue
            parent = await self._read_owner(namespace, parent)
        return tuple(chain)

    async def _complete_chains(self, namespace: str) -> None:
        """Pods whose owner this replica's watches have not delivered yet (a ReplicaSet created a
        moment ago) would be charged apart from their root: read those owners now."""
        for pod in self.ledger.pods(namespace):
            tail = pod.chain[-1]
            if len(pod.chain) > 1 and not self.ledger.known(namespace, tail):
                await self._read_owner(namespace, tail)

    async def _read_owner(self, namespace: str, key: Key) -> Key | None:
        found = await object_of(self.object_lookup, namespace, key)
        meta = found.get("metadata") if found is not None else None
        owner = controller_of(meta) if isinstance(meta, Mapping) else None
        if found is not None:
            self.ledger.object_seen(namespace, key, owner)  # what the watch will say anyway
        return owner

    async def gather(self, namespace: str, plan: GpuPlan) -> tuple[GpuUsage, GpuStep | None]:
        """The usage fact and, should the engine admit the workload, the reservation to record.

        A pod that fits inside its reserved owner's reservation is recorded as one of the
        owner's pods (other replicas' watches may not show it yet); another workload that fits
        records nothing (its pods will be judged). Any other raises its own reservation to its
        demand (never lowers it: an update that fails after admission must not leave GPUs
        uncounted; the reconciler lowers it later)."""
        await self._complete_chains(namespace)
        budget = await self.store.read(namespace)
        records = budget.records()
        pods = self.ledger.pods(namespace)
        usage, _ = usage_for(plan.key, plan.owners, pods, records, plan.amounts)
        if covered(usage.owner, plan.amounts):
            if plan.key[:2] != POD or plan.key in records.members:
                return usage, None
            return usage, GpuStep(budget, plan.key, plan.amounts, plan.owners)
        current = records.charges.get(plan.key, {})
        wanted = raised(current, plan.amounts)
        if wanted == dict(current):
            return usage, None
        return usage, GpuStep(budget, plan.key, wanted)

    async def reserve(self, step: GpuStep) -> bool:
        """Record the step; False when the budget changed since it was read."""
        record = Reservation(step.amounts, self.now(), step.within)
        reservations = {**step.budget.reservations, step.key: record}
        return await self.store.write(step.budget, reservations)
