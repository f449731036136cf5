"""CustomResourceDefinition documents recognised from their text, so they are not parsed.

A CRD's schema can run to megabytes, which PyYAML builds into objects at about a second per
megabyte, and nothing in a CRD is judged. Its header is read from the text instead; only when
the text leaves no doubt. Every top-level key of a block mapping starts at column 0, so when each
line at column 0 is a plain `key:` and `apiVersion` and `kind` each appear once, those lines are
the document's own. Anything else (flow style, quoted or complex keys, merge keys, a second
`kind:` line, e.g. hidden in a multi-line string) is parsed as usual, so a workload cannot pass
itself off as a CRD.
"""

from __future__ import annotations

import re
from typing import Any

_COLUMN_0 = re.compile(r"^[^\s#].*$", re.MULTILINE)
_CONTENT = re.compile(r"^[ \t]*[^\s#].*$", re.MULTILINE)
_BARE_MARKER = re.compile(r"(---|\.\.\.)[ \t]*(#.*)?$")
_PLAIN_KEY = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)[ \t]*:(?:[ \t]+(.*))?$")
_METADATA = re.compile(r"^metadata:[ \t]*(?:#.*)?\n((?:(?:[ \t]+.*)?\n)*)", re.MULTILINE)
CRD_KIND = "CustomResourceDefinition"
CRD_GROUP = "apiextensions.k8s.io/"


def _scalar(text: str | None) -> str:
    value = (text or "").split(" #", 1)[0].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _root_at_column_0(text: str) -> bool:
    """Whether the document's first content is at column 0: then its root mapping's keys all are
    (an indented root would let column-0 lines be the inside of a multi-line string)."""
    for match in _CONTENT.finditer(text):
        line = match.group(0)
        if not _BARE_MARKER.match(line):
            return not line[0].isspace()
    return False


def crd_header(text: str) -> dict[str, Any] | None:
    """apiVersion, kind and metadata.name of a CRD document's text; None when the text is not
    unmistakably a CRD."""
    if CRD_KIND not in text:
        return None
    if not _root_at_column_0(text):
        return None
    found: dict[str, list[str]] = {"apiVersion": [], "kind": []}
    for line in _COLUMN_0.findall(text):
        if _BARE_MARKER.match(line):
            continue
        if line.startswith("%"):
            return None  # a directive may change tags: leave it to the parser
        key = _PLAIN_KEY.match(line)
        if key is None:
            return None
        if key.group(1) in found:
            found[key.group(1)].append(_scalar(key.group(2)))
    versions, kinds = found["apiVersion"], found["kind"]
    if len(versions) != 1 or kinds != [CRD_KIND] or not versions[0].startswith(CRD_GROUP):
        return None
    header: dict[str, Any] = {"apiVersion": versions[0], "kind": CRD_KIND}
    name = _metadata_name(text)
    if name:
        header["metadata"] = {"name": name}
    return header


def _metadata_name(text: str) -> str:
    """`metadata.name`: the `name:` line at the metadata block's own indentation."""
    block = _METADATA.search(text)
    indent: str | None = None
    for line in block.group(1).splitlines() if block else ():
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = line[: len(line) - len(stripped)] if indent is None else indent
        if line.startswith(indent + "name:"):
            return _scalar(line[len(indent) + 5 :])
    return ""
