"""Reading Kubernetes manifests: YAML streams, JSON, directories and stdin, one document at a time.

Documents are produced lazily so that a 10,000-document file never sits in memory as parsed
objects. YAML streams are split on their `---` lines here rather than by `yaml.load_all`: each
document then gets its own start line (for messages and SARIF), and one malformed document does
not hide the ones after it. JSON has no separators, so a JSON file is parsed whole.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

import yaml

from mlgate import kubeyaml
from mlgate.crdskip import crd_header

if TYPE_CHECKING:  # the spool reads documents back as this module makes them
    from mlgate.spool import Spool

STDIN = "-"
STDIN_NAME = "<stdin>"
MANIFEST_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
_SNIFF_BYTES = 4096
_COPY_BYTES = 1 << 20

# A line that starts (`---`) or ends (`...`) a YAML document. The YAML spec forbids such lines
# inside any scalar, so splitting on them never cuts a document in two.
_DOCUMENT_START = re.compile(r"---(?=\s|$)")
_DOCUMENT_END = re.compile(r"\.\.\.(?=\s|$)")
_JSON_START = re.compile(r'\s*(\[|\{\s*("|\}))')
_JSON_SPACE = re.compile(r"\s*")


class InputError(Exception):
    """Input that cannot be read: the message is one line naming the file and the document.

    `source` names the file it is about (None when it is about a command-line argument), so a
    report can give one line per bad file.
    """

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


def one_line(text: str) -> str:
    """Messages quote user input and library errors; a report line must stay one line."""
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class DocRef:
    """Where a document is: file (as the user named it), document number, List item, line."""

    source: str
    document: int
    item: int | None
    line: int

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def label(self) -> str:
        item = f" item {self.item}" if self.item is not None else ""
        return f"doc {self.document}{item}"

    def error(self, message: str, line: int | None = None) -> InputError:
        where = f"{self.source}:{self.line if line is None else line}"
        return InputError(f"{where}: {self.label}: {one_line(message)}", self.source)


@dataclass(frozen=True, slots=True)
class Document:
    ref: DocRef
    obj: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Source:
    """A file, or given text. Stdin can be read only once, so it is copied to `spool`, a temporary
    file read like any other (memory stays flat however long the input)."""

    name: str
    path: Path | None = None
    text: str | None = None
    spool: IO[bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def is_json(self) -> bool:
        """By extension for files; stdin has no name, so by its first characters (a YAML flow
        mapping also starts with `{`, but not with `{"` as JSON objects do)."""
        if self.path is not None and self.spool is None:
            return self.path.suffix.lower() == ".json"
        start = self.text if self.text is not None else self._head()
        return _JSON_START.match(start.lstrip("\ufeff")) is not None

    def _head(self) -> str:
        assert self.path is not None  # a Source is either text or a file
        try:
            with self.path.open("rb") as handle:
                return handle.read(_SNIFF_BYTES).decode("utf-8", errors="replace")
        except OSError:
            return ""

    def read(self) -> str:
        if self.text is not None:
            return self.text
        assert self.path is not None  # a Source is either stdin's text or a file
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise self._unreadable(exc) from None
        return decode(data, self.name)

    def lines(self) -> Iterator[str]:
        """Line by line, so that a large file is never held whole."""
        if self.path is None:
            yield from io.StringIO(self.read())  # splits at "\n" only, as files are split
            return
        try:
            with self.path.open(encoding="utf-8-sig") as handle:
                yield from handle
        except OSError as exc:
            raise self._unreadable(exc) from None
        except UnicodeDecodeError as exc:
            raise self._not_utf8(exc) from None

    def _not_utf8(self, exc: UnicodeDecodeError) -> InputError:
        """Rare, so the line is found only now, by decoding the bytes again."""
        try:
            decode(self.path.read_bytes() if self.path else b"", self.name)
        except InputError as located:
            return located
        except OSError:
            pass
        return InputError(f"{self.name}: cannot read: not UTF-8 text ({exc.reason})", self.name)

    def _unreadable(self, exc: OSError) -> InputError:
        message = f"{self.name}: cannot read: {one_line(exc.strerror or str(exc))}"
        return InputError(message, self.name)


def decode(data: bytes, name: str) -> str:
    """UTF-8 (with or without a byte-order mark, as Windows editors write it) or an error."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = 1 + data.count(b"\n", 0, exc.start)
        message = f"{name}:{line}: cannot read: not UTF-8 text ({exc.reason})"
        raise InputError(message, name) from None


# ---------------------------------------------------------------------------------------------
# Paths -> sources


def _directory_files(root: Path) -> list[Path]:
    """Manifest files under `root`, recursively, sorted.

    Files and directories whose names start with a dot are read too: `kubectl apply -f DIR`
    applies `.hidden.yaml` (cli-runtime's visitor filters by extension only), and with `-R` it
    descends into dot-directories, so skipping them would hide manifests the cluster receives.
    """
    found: list[Path] = []
    for current, _, files in os.walk(root):
        found.extend(Path(current, f) for f in files if Path(f).suffix.lower() in MANIFEST_SUFFIXES)
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _sources_of(arg: str, stdin: TextIO) -> list[Source]:
    if arg == STDIN:
        return [_spool_stdin(stdin)]
    path = Path(arg)
    if path.is_dir():
        files = _directory_files(path)
        if not files:
            raise InputError(f"{arg}: no *.yaml, *.yml or *.json files in this directory")
        return [Source(str(f), path=f) for f in files]
    if not path.exists():
        raise InputError(f"{arg}: cannot read: no such file or directory")
    return [Source(arg, path=path)]


def _spool_stdin(stdin: TextIO) -> Source:
    """Stdin copied, in bounded chunks, to a temporary file that is deleted when closed (the file
    is reopened by name for each pass; the Source holds it open until it is dropped)."""
    # The raw bytes when there are any: the locale's encoding is not the manifests'.
    raw = getattr(stdin, "buffer", None)
    spool = tempfile.NamedTemporaryFile(prefix="mlgate-stdin-")  # noqa: SIM115 - kept open
    if raw is not None:
        shutil.copyfileobj(raw, spool, _COPY_BYTES)
    else:
        for chunk in iter(lambda: stdin.read(_COPY_BYTES), ""):
            spool.write(chunk.encode("utf-8"))
    spool.flush()
    return Source(STDIN_NAME, path=Path(spool.name), spool=spool)


def _identity(source: Source) -> str:
    return STDIN if source.path is None or source.spool else str(source.path.resolve())


def expand_paths(
    args: Sequence[str], stdin: TextIO, seen: set[str] | None = None
) -> tuple[list[Source], list[InputError]]:
    """Files and directories named on the command line -> sources, each file once.

    `seen` is shared between calls so a file named twice (say as a policy and inside a
    directory of manifests) is read once.
    """
    seen = set() if seen is None else seen
    sources: list[Source] = []
    errors: list[InputError] = []
    for arg in args:
        try:
            expanded = _sources_of(arg, stdin)
        except InputError as exc:
            errors.append(exc)
            continue
        for source in expanded:
            if _identity(source) not in seen:
                seen.add(_identity(source))
                sources.append(source)
    return sources, errors


# ---------------------------------------------------------------------------------------------
# Text -> documents


@dataclass(frozen=True, slots=True)
class _Chunk:
    """The text of one YAML document, with the file lines it spans."""

    number: int
    first_line: int  # of the chunk's text, i.e. of its `---` line when it has one
    start_line: int  # of its first content: what a person looks for
    text: str


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith(("#", "%"))


class _Splitter:
    """Accumulates lines into YAML documents the way `yaml.load_all` delimits them."""

    def __init__(self) -> None:
        self.number = 0
        self._reset(1, explicit=False)

    def _reset(self, first_line: int, explicit: bool) -> None:
        self.lines: list[str] = []
        self.first_line = first_line
        self.start_line: int | None = None
        self.explicit = explicit  # began with `---`: a document even when empty

    def add(self, lineno: int, line: str) -> _Chunk | None:
        """The document that `line` completes, if any. Called once per line: kept cheap."""
        if line.startswith("---") and _DOCUMENT_START.match(line):
            done = self.flush()
            self._reset(lineno, explicit=True)
            if _is_content(line[3:]):
                self.start_line = lineno
            self.lines.append(line)
            return done
        self.lines.append(line)
        if line.startswith("...") and _DOCUMENT_END.match(line):
            done = self.flush()
            self._reset(lineno + 1, explicit=False)
            return done
        if self.start_line is None and _is_content(line):
            self.start_line = lineno
        return None

    def flush(self) -> _Chunk | None:
        # Comments before the first `---` are not a document; an empty `---` section is one.
        done = None
        if self.explicit or self.start_line is not None:
            self.number += 1
            start = self.start_line if self.start_line is not None else self.first_line
            done = _Chunk(self.number, self.first_line, start, "".join(self.lines))
        self._reset(self.first_line, explicit=False)
        return done


def _chunks(lines: Iterable[str]) -> Iterator[_Chunk]:
    splitter = _Splitter()
    for lineno, line in enumerate(lines, 1):
        # Inside a document, a line that cannot end it only joins it (what `add` would do):
        # that is most lines, and the method call per line was a tenth of `mlgate check`.
        if splitter.start_line is not None and not line.startswith(("---", "...")):
            splitter.lines.append(line)
            continue
        done = splitter.add(lineno, line)
        if done is not None:
            yield done
    last = splitter.flush()
    if last is not None:
        yield last


def _yaml_problem(exc: yaml.YAMLError, first_line: int) -> tuple[str, int | None]:
    """The problem and its file line: PyYAML's own text spans several lines and names no file."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"malformed YAML: {exc}", None
    line = first_line + exc.problem_mark.line
    message = f"malformed YAML: {exc.problem} at column {exc.problem_mark.column + 1}"
    if exc.context and exc.context_mark is not None:
        message += f" ({exc.context} at line {first_line + exc.context_mark.line})"
    return message, line


def _load_yaml(chunk: _Chunk, ref: DocRef) -> Any:
    """The document as kubectl reads it (see `kubeyaml`); a value JSON cannot carry is an
    error naming its field, as kubectl could not send the object either."""
    try:
        value, no_json = kubeyaml.load(chunk.text)
    except yaml.YAMLError as exc:
        message, line = _yaml_problem(exc, chunk.first_line)
        raise ref.error(message, line) from None
    except RecursionError:
        raise ref.error("document nests too deeply to be a Kubernetes object") from None
    if no_json:
        path, item = no_json[0]
        raise ref.error(
            f"{path}: {item.what} has no JSON form, so kubectl cannot send it; write it as a "
            "plain string or number",
            chunk.first_line + item.line,
        )
    return value


def _list_items(value: Any) -> list[Any] | None:
    """The items of a `kind: List` (or any `*List` kind), or of a bare JSON/YAML array."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        kind, items = value.get("kind"), value.get("items")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
            return items
    return None


def _typed_item(container: Any, item: dict[str, Any]) -> dict[str, Any]:
    """Items of a typed list from the API (`DeploymentList`) omit their own apiVersion and kind."""
    if not isinstance(container, dict) or "kind" in item:
        return item
    kind = str(container.get("kind", ""))
    if kind == "List" or not kind.endswith("List"):
        return item
    return {"apiVersion": container.get("apiVersion"), "kind": kind[: -len("List")], **item}


def _objects(value: Any, ref: DocRef) -> Iterator[Document | InputError]:
    """The Kubernetes objects of one parsed document: itself, or the items of a List."""
    if value is None:
        return  # an empty document, e.g. a Helm template rendered to nothing
    items = _list_items(value)
    if items is None:
        if isinstance(value, dict):
            yield Document(ref, value)
        else:
            yield ref.error(f"expected a Kubernetes object (a mapping), found {_type(value)}")
        return
    for number, item in enumerate(items, 1):
        item_ref = replace(ref, item=number)
        if isinstance(item, dict):
            yield Document(item_ref, _typed_item(value, item))
        else:
            yield item_ref.error(f"expected a Kubernetes object (a mapping), found {_type(item)}")


def _type(value: Any) -> str:
    names = {"list": "a list", "str": "a string", "int": "a number", "float": "a number"}
    return names.get(type(value).__name__, f"a {type(value).__name__}")


Interesting = Callable[[str], bool]
_Item = Document | InputError
_Keep = Callable[[_Item], None] | None


def _yaml_documents(source: Source, wanted: Interesting, keep: _Keep) -> Iterator[_Item]:
    for chunk in _chunks(source.lines()):
        interesting = wanted(chunk.text)
        if not interesting and keep is None:
            continue
        ref = DocRef(source.name, chunk.number, None, chunk.start_line)
        header = crd_header(chunk.text)
        if header is not None:  # megabytes of schema that nothing judges: not parsed
            items: Iterable[_Item] = (Document(ref, header),)
        else:
            try:
                items = _objects(_load_yaml(chunk, ref), ref)
            except InputError as exc:
                items = (exc,)
        for item in items:
            if keep is not None:
                keep(item)
            if interesting:
                yield item


def _not_json(constant: str) -> None:
    # Python's json reads NaN and Infinity, which are not JSON: kubectl rejects them.
    raise ValueError(f"{constant} is not a JSON value")


def _json_values(text: str, name: str) -> Iterator[tuple[DocRef, Any]]:
    """Each top-level value: one object, an array, or a stream of them (as `jq` prints).

    Raises InputError at the first malformed value: unlike YAML, JSON cannot resynchronise.
    """
    decoder = json.JSONDecoder(parse_constant=_not_json)
    pos, line, number = 0, 1, 0
    while True:
        space = _JSON_SPACE.match(text, pos)
        start = space.end() if space else pos
        line += text.count("\n", pos, start)
        if start >= len(text):
            return
        number += 1
        ref = DocRef(name, number, None, line)
        try:
            value, pos = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            message = f"malformed JSON: {exc.msg} at column {exc.colno}"
            raise ref.error(message, exc.lineno) from None
        except ValueError as exc:
            raise ref.error(f"malformed JSON: {exc}") from None
        except RecursionError:
            raise ref.error("document nests too deeply to be a Kubernetes object") from None
        yield ref, value
        line += text.count("\n", start, pos)


def _json_documents(source: Source, wanted: Interesting, keep: _Keep) -> Iterator[_Item]:
    text = source.read()
    interesting = wanted(text)
    if not interesting and keep is None:
        return
    for ref, value in _json_values(text, source.name):
        for item in _objects(value, ref):
            if keep is not None:
                keep(item)
            if interesting:
                yield item


def _everything(text: str) -> bool:
    return True


def documents(
    source: Source, interesting: Interesting | None = None, spool: Spool | None = None
) -> Iterator[Document | InputError]:
    """Every Kubernetes object of `source`, in order, with an InputError in place of each
    document that cannot be read (reading goes on after it when the format allows).

    `interesting` sees a document's raw text before it is parsed: a cheap filter for a pass that
    needs only some documents. With a `spool`, the first pass over a source parses every
    document and keeps them all there, and later passes read them back instead of parsing again.
    """
    if spool is not None and interesting is None and spool.has(source):
        yield from spool.replay(source)
        return
    read = _json_documents if source.is_json else _yaml_documents
    keep = spool.writer(source) if spool is not None else None
    try:
        yield from read(source, interesting or _everything, keep)
    except InputError as exc:  # the source became unreadable, or its JSON broke
        if keep is not None:
            keep(exc)
        yield exc
    if spool is not None:
        spool.done(source)


def api_version_kind(obj: Mapping[str, Any]) -> tuple[str, str]:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    return (
        api_version if isinstance(api_version, str) else "",
        kind if isinstance(kind, str) else "",
    )
