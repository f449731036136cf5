"""Policy state: compile on change, keep the last good version when an update is invalid."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from mlgate.controller.handlers import status_patch
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
