"""Background tasks that cannot die silently.

An asyncio task that raises keeps its exception until someone awaits it: for a loop that runs
for the life of the process (the audit, certificate rotation, the egress resync) that someone
is the shutdown path, so a bug on the first pass would go unnoticed for months. `supervise`
logs the error with its traceback, counts it in `mlgate_background_task_failures`, shows the
task down in `mlgate_background_task_up` and restarts it with a growing back-off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from mlgate.metrics import Metrics

log = logging.getLogger("mlgate.tasks")
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0


async def supervise(
    name: str,
    start: Callable[[], Coroutine[Any, Any, None]],
    metrics: Metrics,
    *,
    first_backoff: float = FIRST_BACKOFF,
) -> None:
    """Run `start()` until it returns; restart it whenever it raises (cancellation stops it)."""
    backoff = first_backoff
    while True:
        metrics.task_up.labels(name).set(1)
        try:
            await start()
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.task_up.labels(name).set(0)
            metrics.task_failures.labels(name).inc()
            log.exception("background task %s failed; restarting it in %gs", name, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            continue
        return
