"""Bounded caches for the engine's pure functions of one string (an image, a model URI, a shell
script): admissions repeat the same few values, so each is worked out once.

Bounded in count by the LRU, and in memory by the length of what is kept: the strings come from
workloads, and a long one (only an odd or hostile one) is worked out every time instead.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, wraps
from typing import TypeVar

T = TypeVar("T")


def text_cache(maxsize: int, max_length: int) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    """Cache `function(text)` for the `maxsize` most recent texts of at most `max_length`
    characters. The result must be immutable: every caller gets the same object."""

    def wrap(function: Callable[[str], T]) -> Callable[[str], T]:
        cached = lru_cache(maxsize=maxsize)(function)

        @wraps(function)
        def call(text: str) -> T:
            return cached(text) if len(text) <= max_length else function(text)

        return call

    return wrap
