"""jsonbound reads the nesting depth off the bytes: it must agree with the decoded tree for
any strings, escapes and layout, or a deep review would slip past the cut (RecursionError
later) or a shallow one be cut."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from mlgate import jsonbound

# Characters that could confuse a byte-level reading: quotes, backslashes, brackets, non-ASCII.
TRICKY = ['"', "\\", "[", "]", "{", "}", "\\\\", '\\"', "é", "\u2028", "😀", "a", " ", "\n"]


def depth(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + max(map(depth, node.values()), default=0)
    if isinstance(node, list):
        return 1 + max(map(depth, node), default=0)
    return 0


def tricky_string(rng: random.Random) -> str:
    return "".join(rng.choice(TRICKY) for _ in range(rng.randrange(6)))


def document(rng: random.Random, levels: int) -> Any:
    if levels == 0 or rng.random() < 0.2:
        return rng.choice([tricky_string(rng), 1, -2.5, True, None])
    if rng.random() < 0.5:
        return [document(rng, levels - 1) for _ in range(rng.randrange(4))]
    return {tricky_string(rng): document(rng, levels - 1) for _ in range(rng.randrange(4))}


@pytest.mark.parametrize("seed", range(300))
def test_nesting_read_off_the_bytes_is_the_tree_depth(seed: int) -> None:
    rng = random.Random(seed)
    doc = document(rng, rng.randrange(1, 12))
    for text in (
        orjson.dumps(doc),
        json.dumps(doc).encode(),  # \uXXXX escapes, spaces after separators
        json.dumps(doc, ensure_ascii=False, indent=1).encode(),
    ):
        assert jsonbound._nesting(text) == depth(doc), text


@pytest.mark.parametrize("levels", [jsonbound.MAX_DEPTH, jsonbound.MAX_DEPTH + 1])
def test_the_cut_starts_just_below_max_depth(levels: int) -> None:
    """Closing brackets and escaped quotes in strings never make a deep document look shallow."""
    doc: Any = {"s": ']]]}}}\\"'}
    for _ in range(levels - 1):
        doc = [doc, '"]\\']
    assert depth(doc) == levels
    assert (jsonbound.loads(orjson.dumps(doc)) == doc) is (levels <= jsonbound.MAX_DEPTH)
