"""The HTTPS endpoint the apiserver calls, plus health, readiness and metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlgate import jsonbound
from mlgate.engine.decisions import Mode, Violation
from mlgate.engine.workloads import WorkloadView
from mlgate.metrics import Metrics
from mlgate.webhook.admission import Admission, Outcome
from mlgate.webhook.mutation import Answer, Mutation, encode_patch
from mlgate.webhook.review import MalformedReview, Request, parse_review, response

log = logging.getLogger("mlgate.webhook")
# The apiserver takes request bodies up to 3 MiB, and a review carries the object twice (object
# and oldObject) re-encoded, where Go escapes <, > and & as six bytes each: up to ~36 MiB.
MAX_BODY = 40 * 1024 * 1024

Judge = Callable[[Request], Coroutine[Any, Any, Answer]]
T = TypeVar("T")
EventSink = Callable[[WorkloadView, tuple[Violation, ...]], Coroutine[Any, Any, None]]


@dataclass
class Webhook:
    admission: Admission
    metrics: Metrics
    deadline: float = 8.0  # seconds; keep below the configuration's timeoutSeconds
    events: EventSink | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/validate", self.validate)
        app.router.add_post("/mutate", self.mutate)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.prometheus)
        app.on_shutdown.append(self._drain)
        return app

    async def healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, _: web.Request) -> web.Response:
        if self.ready.is_set():
            return web.Response(text="ok")
        return web.Response(status=503, text="initial policy sync not finished")

    async def prometheus(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def validate(self, http: web.Request) -> web.Response:
        return await self._serve(http, self._validated)

    async def mutate(self, http: web.Request) -> web.Response:
        """Pins verified image tags to their digest (mlgate.webhook.mutation)."""
        return await self._serve(http, Mutation(self.admission).review)

    async def _validated(self, req: Request) -> Answer:
        return Answer(await self.admission.review(req))

    async def _serve(self, http: web.Request, judge: Judge) -> web.Response:
        started = time.perf_counter()
        try:
            req = parse_review(jsonbound.loads(await http.read()))
        except (MalformedReview, ValueError) as exc:
            self.metrics.errors.labels("malformed").inc()
            log.warning("malformed admission review: %s", exc)
            return _json({"error": f"malformed AdmissionReview: {exc}"}, status=400)
        answer = await self._answer(req, judge)
        outcome = answer.outcome
        self._record(req, outcome, time.perf_counter() - started)
        code, reason = _status(outcome)
        return _json(
            response(
                req.uid,
                outcome.allowed,
                outcome.message,
                warnings=outcome.warnings,
                code=code,
                reason=reason,
                patch=encode_patch(answer.patch) if answer.patch else None,
            )
        )

    async def _answer(self, req: Request, judge: Judge) -> Answer:
        if not self.ready.is_set():
            self.metrics.errors.labels("not-ready").inc()
            return Answer(
                Outcome(
                    False,
                    "mlgate is starting and has not loaded its policies yet; retry",
                    route="not-ready",
                )
            )
        try:
            answer = await within(judge(req), self.deadline)
        except TimeoutError:
            self.metrics.errors.labels("deadline").inc()
            return Answer(
                Outcome(
                    False,
                    f"mlgate could not finish judging within {self.deadline:g}s "
                    "(denied: fail closed); retry",
                    route="deadline",
                )
            )
        except Exception:  # a bug must deny this one request, not take the server down
            self.metrics.errors.labels("internal").inc()
            log.exception("internal error judging request", extra={"uid": req.uid})
            return Answer(
                Outcome(
                    False,
                    "mlgate hit an internal error judging this request (denied: fail closed)",
                    route="error",
                )
            )
        if answer.outcome.route == "error":  # an object mlgate cannot judge: denied, and counted
            self.metrics.errors.labels("unjudgeable").inc()
        return answer

    def _record(self, req: Request, outcome: Outcome, seconds: float) -> None:
        result = "allowed" if outcome.allowed else "denied"
        self.metrics.answered(req.operation, req.kind, result, outcome.route, seconds)
        violations = outcome.decision.violations if outcome.decision else ()
        for v in violations:
            self.metrics.violations.labels(v.policy, v.rule, v.mode).inc()
        _log(req, outcome, violations)
        self._report(req, outcome, violations)

    def _report(self, req: Request, outcome: Outcome, violations: tuple[Violation, ...]) -> None:
        """Events for the findings of an allowed, real (not dry-run) admission."""
        reported = tuple(v for v in violations if v.mode is not Mode.ENFORCE)
        if reported and outcome.allowed and not req.dry_run and self.events and outcome.workload:
            task = asyncio.create_task(self.events(outcome.workload, reported))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _drain(self, _: web.Application) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=5)


async def within(judging: Coroutine[Any, Any, T], seconds: float) -> T:
    """`await judging`, refused with TimeoutError after `seconds`: the deadline is armed only
    when the coroutine first suspends, since only an await that suspends can block. Most
    answers come from memory without suspending, and arming asyncio.timeout for each (a timer
    scheduled and cancelled) was ~5% of the webhook's CPU in issue 16's profile. Time spent
    before the first suspension counts."""
    until = asyncio.get_running_loop().time() + seconds
    try:
        waiting = judging.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    async with asyncio.timeout_at(until):
        return await _Resumed(judging, waiting)


class _Resumed(Generic[T]):
    """A coroutine already stepped once by hand (within()), awaited to its end: what it first
    waits on is handed to the task as `yield from` would have, and everything the task sends
    or throws (a cancellation from the deadline) goes on to the coroutine."""

    def __init__(self, coroutine: Coroutine[Any, Any, T], waiting: Any) -> None:
        self.coroutine, self.waiting = coroutine, waiting

    def __await__(self) -> Generator[Any, Any, T]:
        waiting = self.waiting
        while True:
            try:
                try:
                    sent = yield waiting
                except GeneratorExit:
                    self.coroutine.close()
                    raise
                except BaseException as exc:  # passed on, as yield from does
                    waiting = self.coroutine.throw(exc)
                else:
                    waiting = self.coroutine.send(sent)
            except StopIteration as done:
                return cast(T, done.value)


def _log(req: Request, outcome: Outcome, violations: tuple[Violation, ...]) -> None:
    """One line per denial or finding; a clean allow only at DEBUG: at INFO that line cost about
    a tenth of the webhook's CPU (docs/benchmarks.md), and the metrics count every one."""
    level = logging.INFO if violations or not outcome.allowed else logging.DEBUG
    if log.isEnabledFor(level):
        log.log(
            level,
            "%s %s %s/%s: %s",
            req.operation,
            req.kind,
            req.namespace,
            req.name,
            "allowed" if outcome.allowed else "denied",
            extra={
                "uid": req.uid,
                "route": outcome.route,
                "dryRun": req.dry_run,
                "user": req.username,
                "violations": [f"{v.mode}:{v.policy}:{v.rule}:{v.path}" for v in violations],
            },
        )


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    # orjson: the review is most of the webhook's bytes; stdlib json was a sixth of its CPU.
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _status(outcome: Outcome) -> tuple[int, str]:
    if outcome.route in ("deadline", "error", "not-ready"):
        return (
            500 if outcome.route == "error" else 503,
            "InternalError" if outcome.route == "error" else "ServiceUnavailable",
        )
    return 403, "Forbidden"
