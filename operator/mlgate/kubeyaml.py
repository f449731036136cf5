"""YAML read the way kubectl reads it: go-yaml v2's scalar resolution, then JSON.

kubectl turns YAML into JSON with sigs.k8s.io/yaml, which parses with go-yaml v2 (YAML 1.1 with
its own choices) and converts the result to JSON before anything else sees it. PyYAML's YAML 1.1
differs in ways an attacker can use: `hostNetwork: y` is the string "y" to PyYAML but `true` to
kubectl, so an offline check would pass what the cluster runs with host networking. This loader
resolves plain scalars with go-yaml v2's table (`goyaml.v2/resolve.go` in sigs.k8s.io/yaml):

- booleans: y Y yes Yes YES true True TRUE on On ON / n N no No NO false False FALSE off Off OFF;
- null: empty, ~, null, Null, NULL;
- integers as Go's strconv.ParseInt(s, 0, 64) reads them after removing `_` (0x, 0o, 0b, and a
  leading 0 for octal), then unsigned 64-bit, then floats matching go-yaml's float pattern
  (`1e3` is a float, no sexagesimal `1:20`), then larger hex/octal/binary integers;
- .inf, .nan and friends are floats, which JSON cannot carry (kubectl fails on them);
- timestamps stay strings, as go-yaml v2 leaves them when decoding into interface{}.

Map keys become strings as sigs.k8s.io/yaml makes them ("true", "1", "1.5"); a null or other
key has no JSON form. Values that have no JSON form (`!!binary`, `!!set`, `!!omap`, `!!pairs`,
NaN and infinities) are reported with the field they are in, never dropped or guessed at.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

from mlgate.engine.kindspec import field

# libyaml is many times faster; the pure-Python loader accepts the same documents.
_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_Y = "tag:yaml.org,2002:"
_STR = f"{_Y}str"
_PLAIN = "tag:mlgate.io,2026:plain"  # a plain scalar that may be a number: resolved below

_BOOLS = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On"), True),
    "ON": True,
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off"), False),
    "OFF": False,
}
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_SPECIAL_FLOATS = {
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
# strconv.ParseInt(s, 0, 64)'s syntax: sign, then a base prefix or a leading 0 for octal.
_GO_INT = re.compile(r"([+-]?)(0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)")
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?")
_INT64 = range(-(2**63), 2**63)
_UINT64 = range(2**64)


def _go_int(text: str) -> int | None:
    match = _GO_INT.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    prefix = digits[:2].lower()
    if prefix in ("0x", "0b", "0o"):
        value = int(digits[2:], {"0x": 16, "0b": 2, "0o": 8}[prefix])
    else:
        value = int(digits, 8 if digits.startswith("0") else 10)
    return -value if sign == "-" else value


def resolve(text: str) -> tuple[str, Any]:
    """go-yaml v2's resolution of a plain scalar: (its YAML tag, its value)."""
    if text in _BOOLS:
        return "bool", _BOOLS[text]
    if text in _NULLS:
        return "null", None
    if text in _SPECIAL_FLOATS:
        return "float", _SPECIAL_FLOATS[text]
    if text[:1] == ".":
        if _DOT_FLOAT.fullmatch(text) and math.isfinite(value := float(text)):
            return "float", value
        return "str", text
    if text[:1] not in "+-0123456789":
        return "str", text
    plain = text.replace("_", "")
    number = _go_int(plain)
    if number is not None and (number in _INT64 or (number in _UINT64 and plain[0] != "+")):
        return "int", number
    if _GO_FLOAT.fullmatch(plain) and math.isfinite(value := float(plain)):
        return "float", value
    if number is not None and plain[0] not in "+-":
        return "int", number  # a larger hex, octal or binary integer: Go's big.Int
    return "str", text


@dataclass(frozen=True, slots=True)
class NoJSON:
    """A value JSON cannot carry; the loader reports it with its field."""

    what: str
    line: int  # 0-based, within the document


class KubectlLoader(_BASE):  # type: ignore[misc, valid-type]
    """A safe loader whose scalars, keys and tags follow sigs.k8s.io/yaml (see the module)."""

    yaml_implicit_resolvers: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {}
    yaml_constructors = dict(_BASE.yaml_constructors)
    no_json = False

    def construct_plain(self, node: ScalarNode) -> Any:
        return self._value(resolve(node.value)[1], node)

    def construct_tagged(self, node: ScalarNode) -> Any:
        """An explicit !!bool, !!int, !!float or !!null: go-yaml resolves the text, then the
        result must be of that type (an int may become a float), or it fails."""
        wanted = node.tag.removeprefix(_Y)
        got, value = resolve(str(self.construct_scalar(node)))
        if got == "int" and wanted == "float":
            got, value = "float", float(value)
        if got != wanted:
            raise ConstructorError(
                None, None, f"cannot decode !!{got} `{node.value}` as a !!{wanted}", node.start_mark
            )
        return self._value(value, node)

    def construct_no_json(self, node: Node) -> NoJSON:
        self.no_json = True
        return NoJSON(f"a {node.tag.removeprefix(_Y)} value", node.start_mark.line)

    def _value(self, value: Any, node: Node) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            self.no_json = True
            return NoJSON(f"{node.value!r} (not a finite number)", node.start_mark.line)
        return value

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[str, Any]:
        """Keys become strings as they are constructed: in a Python dict `on` (True) and `1`
        would otherwise be one key, where kubectl sees "true" and "1"."""
        self.flatten_mapping(node)
        mapping: dict[str, Any] = {}
        originals: dict[str, Any] = {}
        for key_node, value_node in node.value:
            original = self._scalar(key_node, deep)
            key = self._key(original, key_node)
            if key in originals and type(originals[key]) is not type(original):
                # Go keeps both in its map and converts them in random order: either may win.
                raise ConstructorError(
                    None,
                    None,
                    f"map keys {originals[key]!r} and {original!r} both become {key!r} in JSON, "
                    "and kubectl keeps either one at random",
                    key_node.start_mark,
                )
            originals[key] = original
            mapping[key] = self._scalar(value_node, deep)
        return mapping

    def _scalar(self, node: Node, deep: bool) -> Any:
        # Most keys and values are strings: their value is the node's text (what
        # construct_yaml_str returns); skipping the generic dispatch loads 1.2x faster.
        if node.tag == _STR and isinstance(node, ScalarNode):
            return node.value
        return self.construct_object(node, deep=deep)

    def _key(self, key: Any, node: Node) -> str:
        text = json_key(key)
        if text is None:
            message = f"map key {key!r} has no JSON form (kubectl rejects it)"
            raise ConstructorError(None, None, message, node.start_mark)
        return text


def json_key(key: Any) -> str | None:
    """The string sigs.k8s.io/yaml makes of a map key, or None when it has no JSON form."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int) and key in _INT64:
        return str(key)
    if isinstance(key, float) and math.isfinite(key):
        return go_float32_key(key)
    return None


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def go_float32_key(value: float) -> str:
    """strconv.FormatFloat(v, 'g', -1, 32), as sigs.k8s.io/yaml spells a float map key: the
    fewest digits that read back as the same float32, exponent form below 1e-4 or from 1e6;
    beyond float32's range Go's conversion gives an infinity, spelled "+Inf" or "-Inf"."""
    single = _float32(value)
    if math.isinf(single):
        return "+Inf" if single > 0 else "-Inf"
    text = f"{single:.8e}"
    for digits in range(1, 10):
        text = f"{single:.{digits - 1}e}"
        if _float32(float(text)) == single:
            break
    mantissa, exponent = text.split("e")
    sign = "-" if mantissa.startswith("-") else ""
    figures = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    power = int(exponent)
    if power < -4 or power >= 6:
        rest = f".{figures[1:]}" if figures[1:] else ""
        return f"{sign}{figures[0]}{rest}e{'-' if power < 0 else '+'}{abs(power):02d}"
    if power < 0:
        return f"{sign}0.{'0' * (-power - 1)}{figures}"
    whole, fraction = figures[: power + 1].ljust(power + 1, "0"), figures[power + 1 :]
    return f"{sign}{whole}{'.' + fraction if fraction else ''}"


def _resolver(tag: str, pattern: str, first: str | list[str]) -> None:
    KubectlLoader.add_implicit_resolver(tag, re.compile(pattern), list(first))


_resolver(f"{_Y}bool", f"^(?:{'|'.join(_BOOLS)})$", "yYnNtTfFoO")
_resolver(f"{_Y}null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""])
_resolver(f"{_Y}merge", r"^(?:<<)$", "<")
_resolver(_PLAIN, r"^[-+0-9.]", "-+0123456789.")
KubectlLoader.add_constructor(_PLAIN, KubectlLoader.construct_plain)
for _tag in ("bool", "int", "float", "null"):
    KubectlLoader.add_constructor(f"{_Y}{_tag}", KubectlLoader.construct_tagged)
for _tag in ("binary", "set", "omap", "pairs"):
    KubectlLoader.add_constructor(f"{_Y}{_tag}", KubectlLoader.construct_no_json)
KubectlLoader.add_constructor(f"{_Y}timestamp", KubectlLoader.construct_yaml_str)


# ---------------------------------------------------------------------------------------------
# The fast path: most manifests are plain mappings, sequences and scalars. Built straight from
# libyaml's events they load about twice as fast as through PyYAML's nodes and constructor.
# Anything else (anchors, aliases, tags, merge keys, a duplicate or complex key, a value JSON
# cannot carry, deep nesting, a syntax error) is left to KubectlLoader, which decides and
# reports it: the fast path only ever returns what the loader would return.

_SLOW = object()  # "not for the fast path"
_MAX_DEPTH = 64  # deeper documents go to the loader, whose recursion limit is the judge
_CParser: Any = getattr(getattr(yaml, "_yaml", None), "CParser", None)
_MISSING = object()  # a mapping waiting for its next key


def _fast_load(text: str) -> Any:
    if _CParser is None:
        return _SLOW
    parser = _CParser(text)
    try:
        return _from_events(parser.get_event)
    except yaml.YAMLError:
        return _SLOW
    finally:
        parser.dispose()


# Only plain scalars starting with one of these can resolve to something other than a string.
_MAY_RESOLVE = frozenset(["", *"yYnNtTfFoO~<.+-0123456789"])


def _scalar_of(event: Any) -> Any:
    if event.anchor is not None or event.tag is not None:
        return _SLOW
    value = event.value
    if not event.implicit[0] or value[:1] not in _MAY_RESOLVE:  # quoted, or a plain word
        return value
    if value == "<<":
        return _SLOW
    value = resolve(value)[1]
    if type(value) is float and not math.isfinite(value):
        return _SLOW
    return value


def _from_events(next_event: Any) -> Any:
    next_event()  # StreamStartEvent
    if type(next_event()) is _END:
        return None  # no document: what get_single_data returns
    # Open collections, innermost last; for a mapping, its key waiting for a value.
    open_: list[Any] = []
    keys: list[Any] = []
    done: Any = _SLOW
    while done is _SLOW:
        event = next_event()
        kind = type(event)
        if kind is _SCALAR:
            value = _scalar_of(event)
            if value is _SLOW:
                return _SLOW
        elif kind is _MAP or kind is _SEQ:
            if event.anchor is not None or event.tag is not None or len(open_) >= _MAX_DEPTH:
                return _SLOW
            if open_ and keys[-1] is _MISSING and type(open_[-1]) is dict:
                return _SLOW  # a mapping or sequence as a key
            open_.append({} if kind is _MAP else [])
            keys.append(_MISSING)
            continue
        elif kind is _MAP_END or kind is _SEQ_END:
            keys.pop()
            value = open_.pop()
        else:  # an alias
            return _SLOW
        if not open_:
            done = value
            continue
        top = open_[-1]
        if type(top) is list:
            top.append(value)
        elif keys[-1] is _MISSING:
            key = value if type(value) is str else json_key(value)
            if key is None or key in top:
                return _SLOW
            keys[-1] = key
        else:
            top[keys[-1]] = value
            keys[-1] = _MISSING
    next_event()  # DocumentEndEvent
    return done if type(next_event()) is _END else _SLOW


_SCALAR, _MAP, _SEQ = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
_MAP_END, _SEQ_END, _END = yaml.MappingEndEvent, yaml.SequenceEndEvent, yaml.StreamEndEvent


def _field(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else field(path, key)


def no_json_values(value: Any) -> Iterator[tuple[str, NoJSON]]:
    """(field path, value) of every value without a JSON form, in document order."""
    stack: list[tuple[str, Any]] = [("", value)]
    seen: set[int] = set()
    while stack:
        path, item = stack.pop()
        if isinstance(item, NoJSON):
            yield path or "<document>", item
            continue
        if not isinstance(item, Mapping | list) or id(item) in seen:
            continue
        seen.add(id(item))
        pairs = item.items() if isinstance(item, Mapping) else enumerate(item)
        stack.extend(reversed([(_field(path, k), v) for k, v in pairs]))


def load(text: str) -> tuple[Any, list[tuple[str, NoJSON]]]:
    """One YAML document as kubectl reads it, and the values it could not turn into JSON."""
    value = _fast_load(text)
    if value is not _SLOW:
        return value, []
    loader = KubectlLoader(text)
    try:
        value = loader.get_single_data()
    finally:
        loader.dispose()
    return value, list(no_json_values(value)) if loader.no_json else []
