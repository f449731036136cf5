"""Reading manifests: YAML streams, JSON, Lists, directories, stdin, and bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mlgate.manifests import (
    STDIN_NAME,
    Document,
    InputError,
    Source,
    documents,
    expand_paths,
)

Seen = list[tuple[int, int | None, int, str]]


def read(source: Source) -> tuple[Seen, list[str]]:
    """(document, item, line, name) of each object, and the error messages, in order."""
    objects: Seen = []
    errors: list[str] = []
    for doc in documents(source):
        if isinstance(doc, InputError):
            errors.append(str(doc))
        else:
            name = doc.obj.get("metadata", {}).get("name", "")
            objects.append((doc.ref.document, doc.ref.item, doc.ref.line, name))
    return objects, errors


def write(tmp_path: Path, name: str, text: str) -> Source:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return Source(str(path), path=path)


def stdin(text: str) -> Source:
    return Source(STDIN_NAME, text=text)


def cm(name: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"


# ---------------------------------------------------------------------------------------------
# YAML streams


def test_documents_are_numbered_like_yaml_load_all_with_their_first_content_line() -> None:
    text = (
        "# leading comment, not a document\n"  # 1
        + cm("a")  # 2-5
        + "---\n"  # 6: an empty document still counts
        + "---\n# Source: chart/templates/b.yaml\n"  # 7-8
        + cm("b")  # 9-12
        + "--- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n"  # 13
    )
    objects, errors = read(stdin(text))
    assert errors == []
    assert objects == [(1, None, 2, "a"), (3, None, 9, "b"), (4, None, 13, "c")]


def test_document_end_marker_starts_a_new_document() -> None:
    objects, _ = read(stdin(cm("a") + "...\n" + cm("b")))
    assert objects == [(1, None, 1, "a"), (2, None, 6, "b")]


def test_a_malformed_document_is_reported_with_file_document_and_line_and_reading_goes_on(
    tmp_path: Path,
) -> None:
    source = write(
        tmp_path,
        "m.yaml",
        cm("a") + "---\nkind: Pod\nmetadata:\n  name: x\n   bad: 1\n" + "---\n" + cm("c"),
    )
    objects, errors = read(source)
    assert objects == [(1, None, 1, "a"), (3, None, 11, "c")]
    assert len(errors) == 1
    assert errors[0].startswith(f"{source.name}:9: doc 2: malformed YAML: ")
    assert "\n" not in errors[0]


def test_dashes_inside_a_value_do_not_split_a_document() -> None:
    text = cm("a") + "data:\n  notes: |\n    --- not a separator when indented\n"
    objects, errors = read(stdin(text))
    assert (objects, errors) == ([(1, None, 1, "a")], [])


def test_a_scalar_document_is_an_error_naming_its_type() -> None:
    _, errors = read(stdin("just a string\n"))
    assert errors == [
        f"{STDIN_NAME}:1: doc 1: expected a Kubernetes object (a mapping), found a string"
    ]


# ---------------------------------------------------------------------------------------------
# Lists


def test_list_items_are_separate_objects_named_by_item() -> None:
    text = (
        cm("a")
        + "---\napiVersion: v1\nkind: List\nitems:\n- "
        + "\n  ".join(cm("b").splitlines())
        + "\n- "
        + "\n  ".join(cm("c").splitlines())
        + "\n"
    )
    objects, errors = read(stdin(text))
    assert errors == []
    assert objects == [(1, None, 1, "a"), (2, 1, 6, "b"), (2, 2, 6, "c")]


def test_typed_list_items_get_the_kind_and_api_version_of_the_list() -> None:
    text = "apiVersion: apps/v1\nkind: DeploymentList\nitems:\n- metadata: {name: d}\n"
    docs = [d for d in documents(stdin(text)) if isinstance(d, Document)]
    assert [(d.obj["apiVersion"], d.obj["kind"]) for d in docs] == [("apps/v1", "Deployment")]


def test_a_list_item_that_is_not_an_object_is_an_error() -> None:
    _, errors = read(stdin("apiVersion: v1\nkind: List\nitems: [3]\n"))
    assert errors == [
        f"{STDIN_NAME}:1: doc 1 item 1: expected a Kubernetes object (a mapping), found a number"
    ]


# ---------------------------------------------------------------------------------------------
# JSON


def obj(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (json.dumps(obj("a")), [(1, None, 1, "a")]),
        (json.dumps([obj("a"), obj("b")]), [(1, 1, 1, "a"), (1, 2, 1, "b")]),
        (
            json.dumps({"apiVersion": "v1", "kind": "List", "items": [obj("a")]}, indent=2),
            [(1, 1, 1, "a")],
        ),
        (
            json.dumps(obj("a")) + "\n\n" + json.dumps(obj("b")),
            [(1, None, 1, "a"), (2, None, 3, "b")],
        ),
    ],
    ids=["object", "array", "List", "stream"],
)
def test_json_files_hold_an_object_an_array_a_list_or_a_stream(
    tmp_path: Path, text: str, expected: Seen
) -> None:
    assert read(write(tmp_path, "x.json", text)) == (expected, [])


def test_malformed_json_names_file_document_and_line(tmp_path: Path) -> None:
    source = write(tmp_path, "x.json", json.dumps(obj("a")) + '\n{"kind": "Pod",\n "x": }')
    objects, errors = read(source)
    assert objects == [(1, None, 1, "a")]
    assert errors == [f"{source.name}:3: doc 2: malformed JSON: Expecting value at column 7"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (json.dumps([obj("a")]), [(1, 1, 1, "a")]),
        (
            '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}',
            [(1, None, 1, "a")],
        ),
        ("{apiVersion: v1, kind: ConfigMap, metadata: {name: a}}", [(1, None, 1, "a")]),
    ],
    ids=["json-array", "json-object", "yaml-flow-mapping"],
)
def test_stdin_is_read_as_json_or_yaml_by_its_first_characters(text: str, expected: Seen) -> None:
    assert read(stdin(text)) == (expected, [])


# ---------------------------------------------------------------------------------------------
# Paths


def test_directories_are_read_recursively_sorted_with_hidden_files_skipping_other_files(
    tmp_path: Path,
) -> None:
    for name in (
        "b.yaml",
        "a/z.yml",
        "a/y.json",
        "c.txt",
        ".hidden.yaml",
        ".git/x.yaml",
        "a/.d/x.yaml",
    ):
        write(tmp_path, name, "{}")
    sources, errors = expand_paths([str(tmp_path)], io.StringIO())
    assert errors == []
    # As `kubectl apply -R -f DIR` reads them: by extension only, dot-files and -dirs included.
    assert [Path(s.name).relative_to(tmp_path).as_posix() for s in sources] == [
        ".git/x.yaml",
        ".hidden.yaml",
        "a/.d/x.yaml",
        "a/y.json",
        "a/z.yml",
        "b.yaml",
    ]


def test_a_file_named_twice_is_read_once_and_stdin_is_read_once(tmp_path: Path) -> None:
    source = write(tmp_path, "a.yaml", cm("a"))
    seen: set[str] = set()
    first, _ = expand_paths([source.name, "-"], io.StringIO(cm("s")), seen)
    again, _ = expand_paths(
        [str(tmp_path), "-", f"{tmp_path}/../{tmp_path.name}/a.yaml"], io.StringIO(), seen
    )
    assert [s.name for s in first] == [source.name, STDIN_NAME]
    assert first[1].read() == cm("s")  # spooled, read as a file is
    assert again == []


def test_explicitly_named_files_are_read_whatever_their_extension(tmp_path: Path) -> None:
    source = write(tmp_path, "rendered.txt", cm("a"))
    sources, _ = expand_paths([source.name], io.StringIO())
    assert read(sources[0]) == ([(1, None, 1, "a")], [])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.yaml", None, "cannot read: no such file or directory"),
        ("empty-dir", "dir", "no *.yaml, *.yml or *.json files in this directory"),
    ],
)
def test_unreadable_paths_are_one_line_errors(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    sources, errors = expand_paths([str(path)], io.StringIO())
    assert sources == []
    assert [str(e) for e in errors] == [f"{path}: {message}"]


@pytest.mark.parametrize("name", ["latin1.yaml", "latin1.json"])
def test_a_file_that_is_not_utf8_is_an_error_naming_it_and_the_line(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    path.write_bytes(b"apiVersion: v1\nkind: ConfigMap\ndata: {a: caf\xe9}\n")
    _, errors = read(Source(str(path), path=path))
    assert errors == [f"{path}:3: cannot read: not UTF-8 text (invalid continuation byte)"]


def test_a_byte_order_mark_is_not_part_of_the_document(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + cm("a").encode())
    assert read(Source(str(path), path=path)) == ([(1, None, 1, "a")], [])


def test_documents_filter_skips_uninteresting_text_before_parsing() -> None:
    text = "kind: Pod\n  broken: [\n---\n" + cm("mlgate")
    docs = list(documents(stdin(text), lambda chunk: "mlgate" in chunk))
    assert [d.ref.document for d in docs if isinstance(d, Document)] == [2]
    assert not any(isinstance(d, InputError) for d in docs)
