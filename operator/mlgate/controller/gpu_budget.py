"""Where GPU reservations are recorded: GPUBudget objects in the apiserver (or memory, in tests).

Every write carries the resourceVersion the writer read, so of two replicas that judged against
the same budget only the first write lands; the other is told so and judges again. A restart
loses nothing: the record is in etcd, not in a replica's memory.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from mlgate.api.gpubudget import (
    GPU_BUDGET_KIND,
    GPU_BUDGET_PLURAL,
    GpuBudgetSpec,
    GpuOwner,
    GpuReservation,
)
from mlgate.api.models import API_VERSION
from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.engine.gpu_usage import Key, Records

log = logging.getLogger("mlgate.gpu")
CONFLICT, NOT_FOUND = 409, 404


@dataclass(frozen=True, slots=True)
class Reservation:
    amounts: Mapping[str, int]
    updated: datetime
    # A pod admitted inside an owner's reservation: its owner chain (see `Records.members`).
    within: tuple[Key, ...] = ()


@dataclass(frozen=True, slots=True)
class Budget:
    namespace: str
    reservations: Mapping[Key, Reservation] = field(default_factory=dict)
    version: str | None = None  # resourceVersion read; None: no record yet

    def records(self) -> Records:
        items = self.reservations.items()
        return Records(
            {k: r.amounts for k, r in items if not r.within},
            {k: (r.within, r.amounts) for k, r in items if r.within},
        )


class BudgetStore(Protocol):
    async def read(self, namespace: str) -> Budget: ...

    async def write(self, budget: Budget, reservations: Mapping[Key, Reservation]) -> bool:
        """Replace the reservations of `budget` if nobody wrote since it was read."""
        ...

    async def all(self) -> list[Budget]: ...

    async def write_status(self, namespace: str, status: Mapping[str, Any]) -> None: ...


@dataclass
class MemoryBudgetStore:
    """One process's store with the same precondition semantics (unit tests, a single replica
    without a cluster)."""

    _records: dict[str, tuple[str, dict[Key, Reservation]]] = field(default_factory=dict)
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    statuses: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    async def read(self, namespace: str) -> Budget:
        version, reservations = self._records.get(namespace, (None, {}))
        return Budget(namespace, dict(reservations), version)

    async def write(self, budget: Budget, reservations: Mapping[Key, Reservation]) -> bool:
        current = self._records.get(budget.namespace, (None, {}))[0]
        if current != budget.version:
            return False
        self._records[budget.namespace] = (str(next(self._versions)), dict(reservations))
        return True

    async def all(self) -> list[Budget]:
        return [await self.read(ns) for ns in self._records]

    async def write_status(self, namespace: str, status: Mapping[str, Any]) -> None:
        self.statuses[namespace] = status


def _parse(namespace: str, obj: Mapping[str, Any]) -> Budget:
    version = str((obj.get("metadata") or {}).get("resourceVersion") or "") or None
    try:
        spec = GpuBudgetSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        # The CRD schema makes this unreachable short of a schema change; the record is then
        # rewritten from scratch (workloads' pods still count) rather than trusted half-read.
        log.error("GPUBudget %s is unreadable, starting it over: %s", namespace, exc)
        return Budget(namespace, {}, version)
    reservations = {
        (r.group, r.kind, r.name): Reservation(
            dict(r.resources), r.updated, tuple((o.group, o.kind, o.name) for o in r.within)
        )
        for r in spec.reservations
    }
    return Budget(namespace, reservations, version)


def _spec(namespace: str, reservations: Mapping[Key, Reservation]) -> dict[str, Any]:
    items = [
        GpuReservation(
            group=k[0],
            kind=k[1],
            name=k[2],
            resources=dict(r.amounts),
            updated=r.updated,
            within=[GpuOwner(group=o[0], kind=o[1], name=o[2]) for o in r.within],
        )
        for k, r in sorted(reservations.items())
    ]
    spec = GpuBudgetSpec(namespace=namespace, reservations=items)
    return spec.model_dump(by_alias=True, mode="json")


@dataclass
class ApiBudgetStore:
    client: KubeClient
    own_namespace: str

    def path(self, name: str | None = None) -> str:
        return resource_path(API_VERSION, GPU_BUDGET_PLURAL, self.own_namespace, name)

    async def read(self, namespace: str) -> Budget:
        found = await self.client.get_or_none(self.path(namespace))
        return Budget(namespace) if found is None else _parse(namespace, found)

    async def write(self, budget: Budget, reservations: Mapping[Key, Reservation]) -> bool:
        metadata: dict[str, Any] = {
            "name": budget.namespace,
            "namespace": self.own_namespace,
            "labels": {"app.kubernetes.io/managed-by": "mlgate"},
        }
        body = {"apiVersion": API_VERSION, "kind": GPU_BUDGET_KIND, "metadata": metadata}
        body["spec"] = _spec(budget.namespace, reservations)
        try:
            if budget.version is None:
                await self.client.create(self.path(), body)
            else:
                metadata["resourceVersion"] = budget.version
                await self.client.replace(self.path(budget.namespace), body)
        except ApiError as exc:
            # Written, or deleted, since we read it. (A 404 on create means the GPUBudget CRD
            # is not installed: that is raised, and the admission fails closed saying so.)
            if exc.status == CONFLICT or (exc.status == NOT_FOUND and budget.version is not None):
                return False
            raise
        return True

    async def all(self) -> list[Budget]:
        items = await self.client.list(self.path())
        return [
            _parse(str((i.get("spec") or {}).get("namespace") or i["metadata"]["name"]), i)
            for i in items
        ]

    async def write_status(self, namespace: str, status: Mapping[str, Any]) -> None:
        await self.client.patch(f"{self.path(namespace)}/status", {"status": status})
