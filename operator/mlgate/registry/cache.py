"""A bounded TTL cache and single-flight de-duplication for the verifier's lookups."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Values expire after the TTL given when they were stored; least recently used go first."""

    def __init__(
        self, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl: float) -> None:
        if ttl <= 0:
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class SingleFlight(Generic[K, V]):
    """Concurrent calls with the same key share one execution of the work.

    The work runs in its own task, so a caller that gives up (its request hit a deadline) does
    not cancel it for the others; the work must bound its own duration.
    """

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[V]] = {}

    async def do(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        task = self._flights.get(key)
        if task is None:

            async def run() -> V:
                try:
                    return await work()
                finally:
                    self._flights.pop(key, None)

            task = asyncio.ensure_future(run())
            # Retrieve the outcome even if every caller gave up, so it is never reported lost.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._flights[key] = task
        return await asyncio.shield(task)

    def __len__(self) -> int:
        return len(self._flights)
