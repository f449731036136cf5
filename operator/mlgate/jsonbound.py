"""JSON decoding that any nesting depth cannot break.

The apiserver accepts objects nested thousands of levels deep (custom resources that preserve
unknown fields); Python's json module, and every recursive walk after it, gives up at about a
thousand levels with RecursionError. mlgate reads nothing that deep (the deepest field it judges
is a few dozen levels down), so whatever lies below MAX_DEPTH is replaced by one string that
names the depth and the subtree's SHA-256. Equal subtrees give equal strings, so "did this
update change anything" still compares correctly, and every later walk is shallow.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import orjson

MAX_DEPTH = 100
# A JSON string (escapes included) or a bracket; everything else cannot change the depth.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_OPEN = frozenset("[{")


def _deeper_than(doc: Any, limit: int) -> bool:
    """Whether containers nest below `limit`: only containers are walked (scalars are most
    of a document), and the walk stops at the first too deep (it runs on every review)."""
    stack = [(doc, 1)] if isinstance(doc, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        values = node.values() if isinstance(node, dict) else node
        stack.extend((v, depth + 1) for v in values if isinstance(v, dict | list))
    return False


def _placeholder(subtree: str) -> str:
    digest = hashlib.sha256(subtree.encode()).hexdigest()
    return json.dumps(f"<mlgate: nested deeper than {MAX_DEPTH} levels, sha256:{digest}>")


def _truncate(text: str) -> str:
    """`text` with every container opened below MAX_DEPTH replaced by a placeholder string."""
    out: list[str] = []
    depth, kept, start = 0, 0, -1
    for token in _TOKEN.finditer(text):
        mark = token.group()
        if mark.startswith('"'):
            continue
        if mark in _OPEN:
            depth += 1
            if depth == MAX_DEPTH + 1:
                start = token.start()
        else:
            if depth == MAX_DEPTH + 1 and start >= 0:
                out += [text[kept:start], _placeholder(text[start : token.end()])]
                kept, start = token.end(), -1
            depth -= 1
    out.append(text[kept:])
    return "".join(out)


def loads(data: bytes | str) -> Any:
    """json.loads, with containers below MAX_DEPTH replaced (see the module docstring).

    Raises ValueError for text that is not JSON, never RecursionError.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        # Not JSON, nested beyond orjson's limit, or an integer beyond 64 bits: the slower
        # path tells them apart (and reads big integers as json does).
        text = data.decode() if isinstance(data, bytes) else data
        try:
            doc = json.loads(text)
        except RecursionError:
            return _loads_truncated(text)
    if not _deeper_than(doc, MAX_DEPTH):
        return doc
    return _loads_truncated(data.decode() if isinstance(data, bytes) else data)


def _loads_truncated(text: str) -> Any:
    try:
        return json.loads(_truncate(text))
    except RecursionError:  # unbalanced brackets: never closed, so never truncated
        raise ValueError("not JSON: brackets nested too deeply and never closed") from None
