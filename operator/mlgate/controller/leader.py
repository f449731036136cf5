"""Leader election on a coordination.k8s.io Lease: one replica does the write work.

Every replica keeps watching and serves the webhook; only the leader writes status and manages
NetworkPolicies. kopf's peering cannot do this: it pauses the non-leading operators' watches
altogether, which would leave their webhooks judging with stale policies.

Expiry is judged the way client-go does it, by when this replica last saw the Lease change on
its own clock, never by comparing another node's timestamps with ours, so clock skew between
replicas cannot make two of them leaders.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlgate.cluster.client import ApiError, KubeClient, resource_path

log = logging.getLogger("mlgate.leader")
LEASES = "coordination.k8s.io/v1"


def _micro_time(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaderElection:
    client: KubeClient
    namespace: str
    name: str
    identity: str
    lease_seconds: float = 15.0
    renew_seconds: float = 5.0
    on_elected: Callable[[], Coroutine[Any, Any, None]] | None = None
    clock: Callable[[], float] = time.monotonic
    _leading_since_renewal: float | None = None
    _observed: tuple[str, float] | None = None  # (resourceVersion, local time first seen)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def is_leader(self) -> bool:
        """True only while our last successful renewal is younger than the lease."""
        renewed = self._leading_since_renewal
        return renewed is not None and self.clock() - renewed < self.lease_seconds

    def _path(self, with_name: bool = True) -> str:
        return resource_path(LEASES, "leases", self.namespace, self.name if with_name else None)

    def _spec(self, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _micro_time(datetime.now(UTC))
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_seconds),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _expired(self, lease: dict[str, Any]) -> bool:
        version = str(lease["metadata"].get("resourceVersion"))
        if self._observed is None or self._observed[0] != version:
            self._observed = (version, self.clock())
        return self.clock() - self._observed[1] >= self.lease_seconds

    async def _create(self) -> bool:
        body = {
            "apiVersion": LEASES,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self._spec(0, None),
        }
        try:
            await self.client.create(self._path(with_name=False), body)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def _claim(self, lease: dict[str, Any]) -> bool:
        spec = lease.get("spec") or {}
        ours = spec.get("holderIdentity") == self.identity
        if not ours and not self._expired(lease):
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        body = {**lease, "spec": self._spec(transitions, spec.get("acquireTime") if ours else None)}
        try:
            await self.client.replace(self._path(), body)
        except ApiError as exc:
            if exc.status == 409:  # someone else renewed or claimed it first
                return False
            raise
        return True

    async def try_acquire_or_renew(self) -> bool:
        lease = await self.client.get_or_none(self._path())
        won = await self._create() if lease is None else await self._claim(lease)
        was_leader = self.is_leader
        if won:
            self._leading_since_renewal = self.clock()
            if not was_leader:
                log.info("became the leader (lease %s/%s)", self.namespace, self.name)
                if self.on_elected is not None:
                    task = asyncio.create_task(self.on_elected())
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        elif was_leader and not self.is_leader:
            log.warning("lost the leadership (lease %s/%s)", self.namespace, self.name)
        return won

    async def run_forever(self) -> None:
        while True:
            try:
                await self.try_acquire_or_renew()
            except (ApiError, OSError, TimeoutError) as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            await asyncio.sleep(self.renew_seconds)
