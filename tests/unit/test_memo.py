"""Bounded caches of the engine's pure functions of one string."""

from __future__ import annotations

from mlgate.engine.memo import text_cache


def test_a_short_text_is_worked_out_once_a_long_one_every_time() -> None:
    calls: list[str] = []

    @text_cache(maxsize=2, max_length=4)
    def upper(text: str) -> str:
        calls.append(text)
        return text.upper()

    assert [upper("ab"), upper("ab"), upper("abcde"), upper("abcde")] == ["AB", "AB"] + [
        "ABCDE"
    ] * 2
    assert calls == ["ab", "abcde", "abcde"]  # long texts are never kept


def test_the_cache_forgets_the_least_recent_text_beyond_its_size() -> None:
    calls: list[str] = []

    @text_cache(maxsize=2, max_length=10)
    def same(text: str) -> str:
        calls.append(text)
        return text

    for text in ("a", "b", "c", "a"):
        same(text)
    assert calls == ["a", "b", "c", "a"]
