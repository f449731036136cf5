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
from itertools import accumulate
from typing import Any

import orjson

MAX_DEPTH = 100
# A JSON string (escapes included) or a bracket; everything else cannot change the depth.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_OPEN = frozenset("[{")


# Byte tables for _nesting: every byte but quotes and brackets deleted; openers +1, closers -1.
_NOT_MARKS = bytes(range(256)).translate(None, b'"[]{}')
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def _nesting(text: bytes) -> int:
    """How deep containers nest in `text`, JSON that orjson has just decoded (so well formed).

    Read off the bytes instead of walking the decoded tree: a walk visits every value (most of
    a review is managedFields, scalars and small maps) and cost several orjson decodes; these
    are a few passes of bytes methods in C. In valid JSON a backslash occurs only inside a
    string, where escapes read left to right, as bytes.replace does: dropping every escaped
    backslash, then every escaped quote, leaves each string as quote, body, quote, with no
    quote in the body. Of the rest only quotes and brackets matter: a bracket is outside every
    string when an even number of quotes precede it. Two adjacent quotes (an empty string, or
    the end of one string and the start of the next) can go without changing that, which
    leaves quotes only around the few strings holding brackets; splitting there puts the
    text outside strings at even positions. UTF-8 encodes nothing else as the ASCII bytes of
    a quote, backslash or bracket."""
    if b"\\" in text:
        text = text.replace(b"\\\\", b"")
        if b'\\"' in text:
            text = text.replace(b'\\"', b"")
    marks = text.translate(None, _NOT_MARKS).replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])
    return max(accumulate(memoryview(marks.translate(_STEPS)).cast("b")), default=0)


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
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if _nesting(raw) <= MAX_DEPTH:
        return doc
    return _loads_truncated(data.decode() if isinstance(data, bytes) else data)


def _loads_truncated(text: str) -> Any:
    try:
        return json.loads(_truncate(text))
    except RecursionError:  # unbalanced brackets: never closed, so never truncated
        raise ValueError("not JSON: brackets nested too deeply and never closed") from None
