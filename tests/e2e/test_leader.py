"""Lease leader election against the real apiserver: exactly one leader, fail-over on expiry."""

from __future__ import annotations

import asyncio

import pytest

from mlgate.cluster.client import KubeClient, login
from mlgate.controller.leader import LeaderElection
from mlgate.devcluster import Cluster


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_leader_and_fail_over(
    control_plane: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    async with KubeClient(login()) as client:
        await _elections(client, namespace)


async def _elections(client: KubeClient, namespace: str) -> None:
    clock = Clock()
    elected: list[str] = []

    def elector(identity: str) -> LeaderElection:
        async def note() -> None:
            elected.append(identity)

        return LeaderElection(
            client, namespace, "mlgate", identity, lease_seconds=15, on_elected=note, clock=clock
        )

    a, b = elector("pod-a"), elector("pod-b")
    results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(results) == [False, True]
    leader, follower = (a, b) if results[0] else (b, a)
    assert leader.is_leader and not follower.is_leader

    clock.now += 10  # the leader renews in time: the follower sees the lease change and waits
    assert await leader.try_acquire_or_renew()
    assert not await follower.try_acquire_or_renew()
    clock.now += 10
    assert not await follower.try_acquire_or_renew()  # 10 s since it saw the renewal: not expired

    clock.now += 20  # the leader is gone: no renewal for longer than the lease
    assert not leader.is_leader  # it stops writing on its own, before anyone takes over
    assert await follower.try_acquire_or_renew()
    assert follower.is_leader
    assert not await leader.try_acquire_or_renew()  # the old leader finds the lease taken
    await asyncio.sleep(0)
    assert elected == [leader.identity, follower.identity]
    lease = await client.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/mlgate")
    assert lease["spec"]["holderIdentity"] == follower.identity
    assert lease["spec"]["leaseTransitions"] == 1
