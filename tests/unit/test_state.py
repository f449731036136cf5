"""Policy state: compile on change, keep the last good version when an update is invalid."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from mlgate.controller.handlers import quota_condition, status_patch
from mlgate.controller.state import PolicyState
from tests.unit.factories import policy


def test_invalid_update_keeps_last_good_version_in_force() -> None:
    state = PolicyState()
    good = policy(gpu={"maxPerPod": 4})
    assert state.upsert(good).ok
    bad = copy.deepcopy(good)
    bad["metadata"]["generation"] = 2
    bad["spec"]["gpu"]["maxPerPod"] = -1
    result = state.upsert(bad)
    assert not result.ok
    assert "spec.gpu.maxPerPod" in result.message
    assert "generation 1 stays in force" in result.message
    (active,) = state.snapshot().policies
    assert active.gpu is not None and active.gpu.max_per_pod == 4


def test_removal_and_generation_bump() -> None:
    state = PolicyState()
    state.upsert(policy("a"))
    state.upsert(policy("b"))
    before = state.snapshot().generation
    state.remove(policy("a"))
    snapshot = state.snapshot()
    assert [p.name for p in snapshot.policies] == ["b"]
    assert snapshot.generation == before + 1


def test_status_patch_written_once_per_change() -> None:
    state = PolicyState()
    result = state.upsert(policy())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    change = status_patch({}, result, now)
    assert change is not None
    (ready,) = change["conditions"]
    assert (
        ready["type"] == "Ready" and ready["status"] == "True" and ready["observedGeneration"] == 1
    )
    assert status_patch(change, result, now) is None


def test_quota_condition_reports_the_post_restart_window() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    body = policy(gpu={"namespaceQuota": 8})
    early = quota_condition(body, uptime=30, reservation_ttl=600, now=now)
    assert early is not None and early["status"] == "False"
    assert early["reason"] == "ReservationsRebuilding" and "overrun" in early["message"]
    late = quota_condition(body, uptime=601, reservation_ttl=600, now=now)
    assert late is not None and late["status"] == "True"
    assert quota_condition(policy(gpu={"maxPerPod": 1}), 30, 600, now) is None
    state = PolicyState()
    result = state.upsert(body)
    change = status_patch({}, result, now, (early,))
    assert change is not None
    assert [c["type"] for c in change["conditions"]] == ["Ready", "GpuQuotaExact"]
    assert status_patch(change, result, now, (late,)) is not None
    assert status_patch(change, result, now, (early,)) is None
