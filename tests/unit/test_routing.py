"""controller.routing: the mutating webhook is routed only while a policy in force can patch,
and the WorkloadKinds' rules follow the declared kinds, on the configurations mlgate runs with."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mlgate.cluster.client import resource_path
from mlgate.controller.routing import MUTATING, VALIDATING, WEBHOOK_API, KindRouter
from mlgate.controller.state import PolicyState
from mlgate.webhook.admission import mutates
from mlgate.webhook.config import (
    IMAGES_MUTATING_WEBHOOK,
    mutating_webhook_configuration,
    webhook_configuration,
    workload_rules,
)
from tests.unit.factories import policy
from tests.unit.test_mutation import signatures

VERIFY = {"models": {"verifyLoaded": {}}}
CLIENT = {"url": "https://mlgate.example:8443/x", "caBundle": ""}


class FakeClient:
    """The two configurations as the chart installs them; patches applied as the apiserver
    would (test, then replace)."""

    def __init__(self) -> None:
        self.configs = {
            resource_path(WEBHOOK_API, VALIDATING, name="mlgate"): webhook_configuration(
                "mlgate", CLIENT, "mlgate-system"
            ),
            resource_path(WEBHOOK_API, MUTATING, name="mlgate"): mutating_webhook_configuration(
                "mlgate", CLIENT, "mlgate-system"
            ),
        }
        self.calls = 0

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        self.calls += 1
        return self.configs.get(path)

    async def patch(self, path: str, ops: list[dict[str, Any]], content_type: str) -> None:
        self.calls += 1
        hooks = self.configs[path]["webhooks"]
        for op in ops:
            _, _, index, key = op["path"].split("/")
            if op["op"] == "test":
                assert hooks[int(index)][key] == op["value"]
            else:
                hooks[int(index)][key] = op["value"]

    def mutating_rules(self) -> Any:
        (hook,) = self.configs[resource_path(WEBHOOK_API, MUTATING, name="mlgate")]["webhooks"]
        assert hook["name"] == IMAGES_MUTATING_WEBHOOK
        return hook["rules"]


def router(state: PolicyState, client: FakeClient, leads: bool = True) -> KindRouter:
    return KindRouter(
        client,  # type: ignore[arg-type]
        state,
        ("mlgate",),
        lambda: leads,
        mutating_names=("mlgate",),
    )


def started(routing: KindRouter) -> None:
    """What run() does once the webhook serves, without its loop."""
    routing._started = True


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"images": signatures()}, True),
        ({"mode": "Warn", "images": signatures()}, False),
        ({"images": signatures(mutateDigest=False)}, False),
        (VERIFY, True),
        ({"mode": "Audit", **VERIFY}, False),  # only Enforce policies insert verifiers
        ({"images": {"requireDigest": True}}, False),
    ],
)
def test_mutates_is_whether_mutation_can_patch_anything(spec: Any, expected: bool) -> None:
    state = PolicyState()
    assert state.upsert(policy(**spec)).ok
    assert mutates(state.snapshot().policies) is expected


def test_mutation_is_routed_only_while_a_policy_in_force_patches() -> None:
    async def main() -> None:
        state, client = PolicyState(), FakeClient()
        routing = router(state, client)
        started(routing)
        changes: list[int] = []
        state.on_routing_changed = lambda: changes.append(1)

        assert await routing.sync()
        assert client.mutating_rules() == []  # no policy at all: nothing to patch
        pins = policy(name="pins", images=signatures())
        assert state.upsert(pins).ok and changes == [1]
        assert await routing.sync()
        assert client.mutating_rules() == workload_rules()
        assert state.upsert(policy(name="other", images={"requireDigest": True})).ok
        assert await routing.sync()
        assert client.mutating_rules() == workload_rules()  # one policy that pins is enough
        state.remove(pins)
        assert await routing.sync()
        assert client.mutating_rules() == []

        calls = client.calls
        assert await routing.sync()
        assert client.calls == calls  # nothing changed since: the apiserver is not asked
        assert await routing.sync(recheck=True)
        assert client.calls > calls

    asyncio.run(main())


def test_a_reset_configuration_is_routed_again_on_recheck() -> None:
    """A chart upgrade restores the chart's rules: the periodic recheck empties them again."""

    async def main() -> None:
        state, client = PolicyState(), FakeClient()
        routing = router(state, client)
        started(routing)
        assert await routing.sync()
        client.configs[resource_path(WEBHOOK_API, MUTATING, name="mlgate")] = (
            mutating_webhook_configuration("mlgate", CLIENT, "mlgate-system")
        )
        assert await routing.sync(recheck=True)
        assert client.mutating_rules() == []

    asyncio.run(main())


@pytest.mark.parametrize("leads", [True, False])
def test_nothing_is_routed_before_the_webhook_serves_or_by_a_follower(leads: bool) -> None:
    async def main() -> None:
        client = FakeClient()
        routing = router(PolicyState(), client, leads=leads)
        assert await routing.sync()
        if leads:
            assert client.calls == 0  # not started yet
            started(routing)
            assert await routing.sync()
            assert client.mutating_rules() == []
        else:
            started(routing)
            assert await routing.sync()
            assert client.calls == 0

    asyncio.run(main())
