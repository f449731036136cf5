"""Defensive reads: the dict and list fast paths accept exactly what the general checks do."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from mlgate.engine.reads import as_list, as_map, as_str, is_map


class _Labels(Mapping[str, str]):
    """A Mapping that is not a dict, as a YAML loader or a caller may hand over."""

    def __init__(self, items: dict[str, str]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


MAPPINGS = [{}, {"a": 1}, OrderedDict(a=1), MappingProxyType({"a": 1}), _Labels({"a": "b"})]
NOT_MAPPINGS = [None, [], ["a"], ("a",), "a", b"a", 0, 1.5, True, {"a"}]


@pytest.mark.parametrize("value", MAPPINGS)
def test_every_mapping_reads_as_itself(value: Mapping[str, Any]) -> None:
    assert is_map(value)
    assert as_map(value) is value


@pytest.mark.parametrize("value", NOT_MAPPINGS)
def test_anything_else_reads_as_an_empty_mapping(value: Any) -> None:
    assert not is_map(value)
    assert as_map(value) == {}


@pytest.mark.parametrize("value", [[], [1], (), (1,)])
def test_lists_and_tuples_read_as_themselves(value: Any) -> None:
    assert as_list(value) is value


@pytest.mark.parametrize("value", [None, {}, {"a": 1}, "ab", b"ab", {1}, 3, _Labels({})])
def test_other_values_read_as_no_items(value: Any) -> None:
    assert as_list(value) == ()


def test_strings() -> None:
    assert as_str("a") == "a"
    assert as_str(1) == ""
    assert as_str(None) == ""
