#!/usr/bin/env python3
"""Generate a chart's README.md from README.md.gotmpl and the `# --` comments in values.yaml.

A small stand-in for helm-docs (https://github.com/norwoodj/helm-docs), which is not available
here, using the same conventions so the real tool can take over later:

* a value is documented by a comment block that starts with `# --` right above its key; more
  comment lines continue the description; `# -- (type) text` overrides the inferred type;
* a documented key that holds a map or list documents everything under it;
* README.md.gotmpl may use {{ template "chart.X" . }} for name, description, version,
  appVersion, kubeVersion and valuesTable.

Every value must be documented (itself or through a documented parent): an undocumented value is
an error. `--check` exits 1 when README.md is not what the template and values produce.

    python hack/helm-docs.py [--chart charts/mlgate] [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHART = REPO / "charts" / "mlgate"
TEMPLATE_NAME = "README.md.gotmpl"
README_NAME = "README.md"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+|\"[^\"]+\"|'[^']+'):(?:\s|$)")
_LIST_ITEM = re.compile(r"^(?P<indent> *)- ")
_DOC_START = re.compile(r"^\s*# -- ?(?P<text>.*)$")
_DOC_MORE = re.compile(r"^\s*#(?: (?P<text>.*))?$")
_TYPE_OVERRIDE = re.compile(r"^\((?P<type>[a-z][a-z0-9/ ]*)\)\s*(?P<rest>.*)$")
_TEMPLATE_CALL = re.compile(r"\{\{-?\s*template\s+\"chart\.(?P<name>[A-Za-z]+)\"\s+\.\s*-?\}\}")


class DocsError(Exception):
    """values.yaml or the template cannot be documented; the message says where."""


@dataclass(frozen=True)
class Entry:
    path: tuple[str, ...]
    type: str
    default: Any
    description: str

    @property
    def key(self) -> str:
        return ".".join(self.path)


def _unquote(key: str) -> str:
    return key[1:-1] if key[:1] in "\"'" and key[-1:] == key[:1] else key


def documented_paths(text: str) -> dict[tuple[str, ...], str]:
    """Key path -> raw description, for every key preceded by a `# --` comment block."""
    found: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mapping keys
    pending: list[str] | None = None
    list_indent: int | None = None  # inside a list item: its content is the parent's value
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            pending = None  # a description stands right above its key
            continue
        if (start := _DOC_START.match(line)) is not None:
            pending = [start["text"].strip()]
            continue
        if (more := _DOC_MORE.match(line)) is not None:
            if pending is not None:
                pending.append((more["text"] or "").strip())
            continue
        indent = len(line) - len(line.lstrip(" "))
        if list_indent is not None and indent > list_indent:
            continue
        list_indent = None
        if (item := _LIST_ITEM.match(line)) is not None:
            list_indent = len(item["indent"])
            if pending is not None:
                raise DocsError(f"line {number}: a `# --` comment must stand above a key")
            continue
        key = _KEY.match(line)
        if key is None:
            pending = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, _unquote(key["key"])))
        if pending is not None:
            found[tuple(k for _, k in stack)] = " ".join(p for p in pending if p)
            pending = None
    return found


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "string"


def _lookup(values: Any, path: tuple[str, ...]) -> Any:
    node = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            raise DocsError(f"{'.'.join(path)}: documented but not a key of values.yaml")
        node = node[part]
    return node


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict) and node:
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, key))]
    return [path]


def entries(text: str) -> list[Entry]:
    """The documented values, in file order; DocsError if a value has no documentation."""
    values = yaml.safe_load(text) or {}
    docs = documented_paths(text)
    undocumented = [
        ".".join(leaf)
        for leaf in _leaves(values)
        if not any(leaf[: len(path)] == path for path in docs)
    ]
    if undocumented:
        raise DocsError(
            "values without a `# --` comment (on them or a parent): " + ", ".join(undocumented)
        )
    result = []
    for path, raw in docs.items():
        default = _lookup(values, path)
        kind, description = _type_of(default), raw
        if (override := _TYPE_OVERRIDE.match(raw)) is not None:
            kind, description = override["type"], override["rest"]
        result.append(Entry(path, kind, default, description))
    return result


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(value: Any) -> str:
    rendered = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    return f"`{_cell(rendered)}`"


def values_table(items: list[Entry]) -> str:
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    rows += [
        f"| `{e.key}` | {e.type} | {_default(e.default)} | {_cell(e.description)} |" for e in items
    ]
    return "\n".join(rows)


def render(chart: Path) -> str:
    """The README the chart's template and values produce."""
    meta: dict[str, Any] = yaml.safe_load((chart / "Chart.yaml").read_text(encoding="utf-8"))
    values_text = (chart / "values.yaml").read_text(encoding="utf-8")
    fields = {
        "name": str(meta.get("name", "")),
        "description": " ".join(str(meta.get("description", "")).split()),
        "version": str(meta.get("version", "")),
        "appVersion": str(meta.get("appVersion", "")),
        "kubeVersion": str(meta.get("kubeVersion", "")),
        "valuesTable": values_table(entries(values_text)),
    }

    def substitute(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in fields:
            raise DocsError(f"{TEMPLATE_NAME}: unknown template chart.{name}")
        return fields[name]

    template = (chart / TEMPLATE_NAME).read_text(encoding="utf-8")
    return _TEMPLATE_CALL.sub(substitute, template)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART, help="chart directory")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if README.md is not up to date"
    )
    args = parser.parse_args(argv)
    chart: Path = args.chart
    try:
        text = render(chart)
    except (DocsError, OSError, yaml.YAMLError) as exc:
        print(f"helm-docs: {chart}: {exc}", file=sys.stderr)
        return 2
    readme = chart / README_NAME
    if args.check:
        current = readme.read_text(encoding="utf-8") if readme.is_file() else ""
        if current != text:
            print(
                f"helm-docs: {readme} is out of date: run `python hack/helm-docs.py`",
                file=sys.stderr,
            )
            return 1
        return 0
    readme.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
