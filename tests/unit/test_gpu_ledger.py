"""GPU quota accounting: pods, reservations, and pods consuming their workload's reservation."""

from __future__ import annotations

from mlgate.controller.gpu_ledger import GpuLedger


def test_pods_count_and_terminated_pods_stop_counting() -> None:
    ledger = GpuLedger()
    ledger.pod_seen("u1", "ns", "train-abc", 4)
    ledger.pod_seen("u2", "ns", "bare", 2)
    ledger.pod_seen("u3", "other", "x", 8)
    assert ledger.usage("ns", now=0) == 6
    ledger.pod_gone("u1")
    assert ledger.usage("ns", now=0) == 2


def test_reservation_counts_until_pods_appear_then_pods_consume_it() -> None:
    ledger = GpuLedger(reservation_ttl=600)
    ledger.reserve("ns", "web", 8, now=0)
    assert ledger.usage("ns", now=1) == 8
    ledger.pod_seen("p1", "ns", "web-5d8f", 2)  # owned by ReplicaSet web-5d8f of Deployment web
    ledger.pod_seen("p2", "ns", "web-5d8f", 2)
    assert ledger.usage("ns", now=2) == 8  # not 12: the pods are part of the reservation
    ledger.pod_seen("p3", "ns", "other", 1)
    assert ledger.usage("ns", now=3) == 9


def test_reservation_expires_and_pods_remain() -> None:
    ledger = GpuLedger(reservation_ttl=10)
    ledger.reserve("ns", "web", 8, now=0)
    ledger.pod_seen("p1", "ns", "web-5d8f", 2)
    assert ledger.usage("ns", now=11) == 2


def test_longest_workload_name_wins_so_prefixes_are_not_confused() -> None:
    ledger = GpuLedger()
    ledger.reserve("ns", "train", 4, now=0)
    ledger.reserve("ns", "train-big", 16, now=0)
    for i in range(4):
        ledger.pod_seen(f"p{i}", "ns", "train-big-worker", 4)
    assert ledger.usage("ns", now=1) == 20  # train-big's 16 covers its 4 pods; train keeps 4


def test_excluded_workload_is_left_out_with_its_pods() -> None:
    ledger = GpuLedger()
    ledger.reserve("ns", "web", 8, now=0)
    ledger.pod_seen("p1", "ns", "web-5d8f", 2)
    ledger.pod_seen("p2", "ns", "batch", 3)
    assert ledger.usage("ns", now=1, exclude="web") == 3


def test_zero_demand_clears_a_reservation() -> None:
    ledger = GpuLedger()
    ledger.reserve("ns", "web", 8, now=0)
    ledger.reserve("ns", "web", 0, now=1)
    assert ledger.usage("ns", now=2) == 0
