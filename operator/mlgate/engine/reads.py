"""Defensive reads of untrusted documents, shared by every engine module.

Admission requests and manifests are untrusted: a field of the wrong type reads as empty, so
a malformed document yields less to judge or a conservative count, never an exception.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeGuard

_EMPTY: Mapping[str, Any] = MappingProxyType({})


# Decoded JSON is made of dicts and lists: testing for those first skips the abstract base
# class check (several times slower) on the path every admission takes.


def is_map(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or isinstance(value, Mapping)


def as_map(value: Any) -> Mapping[str, Any]:
    return value if type(value) is dict or isinstance(value, Mapping) else _EMPTY


def as_list(value: Any) -> Sequence[Any]:
    return value if type(value) is list or isinstance(value, list | tuple) else ()


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def mappings_under(node: Any) -> Iterator[Mapping[str, Any]]:
    """Every mapping in `node` (itself included, through lists too), each once.

    There is no depth limit an attacker could nest below: the walk is iterative, so nesting
    cannot overflow the stack, and it remembers what it saw, so a recursive YAML alias cannot
    loop."""
    stack, seen = [node], set()
    while stack:
        item = stack.pop()
        if not isinstance(item, Mapping | list) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, list):
            stack.extend(item)
            continue
        yield item
        stack.extend(item.values())
