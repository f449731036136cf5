"""The webhook's HTTP surface on a real loopback socket: errors fail closed, the server survives."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.state import PolicyState
from mlgate.metrics import Metrics
from mlgate.webhook.admission import Admission, Outcome
from mlgate.webhook.review import Request
from mlgate.webhook.server import Webhook, within
from tests.unit.factories import deployment, policy, review


def make_webhook(deadline: float = 5.0) -> Webhook:
    state = PolicyState()
    assert state.upsert(policy(images={"requireDigest": True})).ok
    state.set_namespace("ml-prod", {"mlgate.io/governed": "true"})
    return Webhook(Admission(state, GpuLedger()), Metrics(), deadline)


def serve(webhook: Webhook, body: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(webhook.app())) as client:
            await body(client)

    asyncio.run(main())


async def post(client: TestClient[Any, Any], payload: Any) -> tuple[int, dict[str, Any]]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = await client.post("/validate", data=data)
    return response.status, await response.json()


def test_not_ready_denies_and_reports_unready() -> None:
    webhook = make_webhook()

    async def body(client: TestClient[Any, Any]) -> None:
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/healthz")).status == 200
        status, answer = await post(client, review(deployment()))
        assert status == 200 and answer["response"]["allowed"] is False
        assert "has not loaded its policies" in answer["response"]["status"]["message"]
        webhook.ready.set()
        assert (await client.get("/readyz")).status == 200

    serve(webhook, body)


def test_malformed_bodies_get_400_and_the_server_keeps_serving() -> None:
    webhook = make_webhook()
    webhook.ready.set()

    async def body(client: TestClient[Any, Any]) -> None:
        for bad in (
            b"{not json",
            b"\xff",  # not UTF-8
            b"[]",
            {"apiVersion": "v1", "kind": "Pod"},
            {"kind": "AdmissionReview"},
        ):
            status, answer = await post(client, bad)
            assert status == 400 and "malformed AdmissionReview" in answer["error"]
        status, answer = await post(client, review(deployment(image="nginx")))
        assert status == 200 and answer["response"]["allowed"] is False
        assert answer["response"]["uid"] == review(deployment())["request"]["uid"]
        metrics = await (await client.get("/metrics")).text()
        assert 'mlgate_admission_errors_total{reason="malformed"} 5.0' in metrics
        assert 'rule="images.digest"' in metrics
        assert 'mlgate_admission_duration_seconds_bucket{le="0.005",operation="CREATE"}' in metrics

    serve(webhook, body)


def test_a_bug_in_one_request_fails_it_closed_and_others_still_work() -> None:
    webhook = make_webhook()
    webhook.ready.set()
    real = webhook.admission.review
    calls = 0

    async def flaky(req: Request) -> Outcome:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("simulated bug")
        return await real(req)

    webhook.admission.review = flaky  # type: ignore[method-assign]

    async def body(client: TestClient[Any, Any]) -> None:
        status, answer = await post(client, review(deployment()))
        assert status == 200 and answer["response"]["allowed"] is False
        assert answer["response"]["status"]["code"] == 500
        assert "internal error" in answer["response"]["status"]["message"]
        status, answer = await post(client, review(deployment()))
        assert answer["response"]["allowed"] is True

    serve(webhook, body)


def test_deadline_denies_instead_of_hanging() -> None:
    webhook = make_webhook(deadline=0.2)
    webhook.ready.set()

    async def slow(_: Request) -> Outcome:
        await asyncio.sleep(5)
        return Outcome(True)

    webhook.admission.review = slow  # type: ignore[method-assign]

    async def body(client: TestClient[Any, Any]) -> None:
        status, answer = await post(client, review(deployment()))
        assert status == 200 and answer["response"]["allowed"] is False
        assert "within 0.2s" in answer["response"]["status"]["message"]

    serve(webhook, body)


def test_denials_are_logged_at_info_clean_allows_only_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    webhook = make_webhook()
    webhook.ready.set()
    pinned = "registry.example.com/ml/api@sha256:" + "a" * 64

    async def body(client: TestClient[Any, Any]) -> None:
        for image in (pinned, "nginx"):
            status, _ = await post(client, review(deployment(image=image)))
            assert status == 200

    caplog.set_level(logging.DEBUG, logger="mlgate.webhook")
    serve(webhook, body)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "mlgate.webhook"]
    assert [level for level, message in lines if message.endswith("allowed")] == [logging.DEBUG]
    assert [level for level, message in lines if message.endswith("denied")] == [logging.INFO]


async def _pauses_then(result: str, pauses: int, error: Exception | None = None) -> str:
    """Suspends `pauses` times (on a bare yield and on a future), then answers or raises."""
    loop = asyncio.get_running_loop()
    for i in range(pauses):
        if i % 2:
            await asyncio.sleep(0)
        else:
            future: asyncio.Future[None] = loop.create_future()
            loop.call_soon(future.set_result, None)
            await future
    if error is not None:
        raise error
    return result


@pytest.mark.parametrize("pauses", [0, 1, 5])
def test_within_answers_what_the_coroutine_returns_suspended_or_not(pauses: int) -> None:
    assert asyncio.run(within(_pauses_then("ok", pauses), 5)) == "ok"
    with pytest.raises(KeyError):
        asyncio.run(within(_pauses_then("ok", pauses, KeyError("bug")), 5))


def test_within_refuses_a_coroutine_that_waits_past_the_deadline() -> None:
    finished: list[bool] = []

    async def blocks() -> str:
        try:
            await asyncio.sleep(5)
        finally:
            finished.append(True)  # cancelled, not abandoned
        return "late"

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await within(blocks(), 0.05)

    asyncio.run(main())
    assert finished == [True]


def test_within_counts_the_time_before_the_first_suspension() -> None:
    async def busy_then_waits() -> str:
        computed = time.perf_counter() + 0.1
        while time.perf_counter() < computed:  # computing, before anything could block
            pass
        await asyncio.sleep(0)
        return "late"

    with pytest.raises(TimeoutError):
        asyncio.run(within(busy_then_waits(), 0.05))


def test_each_answer_is_counted_and_timed_under_its_own_labels() -> None:
    metrics = Metrics()
    metrics.answered("CREATE", "Deployment", "allowed", "judged", 0.002)
    metrics.answered("CREATE", "Deployment", "allowed", "judged", 0.2)
    metrics.answered("UPDATE", "Deployment", "denied", "judged", 0.002)
    sample = metrics.registry.get_sample_value
    counted = {"operation": "CREATE", "kind": "Deployment", "result": "allowed", "route": "judged"}
    assert sample("mlgate_admission_requests_total", counted) == 2
    assert sample("mlgate_admission_requests_total", counted | {"operation": "UPDATE"}) is None
    denied = counted | {"operation": "UPDATE", "result": "denied"}
    assert sample("mlgate_admission_requests_total", denied) == 1
    assert sample("mlgate_admission_duration_seconds_count", {"operation": "CREATE"}) == 2
    timed = {"operation": "CREATE", "le": "0.005"}
    assert sample("mlgate_admission_duration_seconds_bucket", timed) == 1
