"""Documents parsed once by the first pass of `mlgate check` and read back by the next ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlgate import kubeyaml
from mlgate.manifests import Document, InputError, Source, documents
from mlgate.spool import Spool
from tests.unit.test_check import deployment, dump, policy, run_cli

YAML = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: keep-1}
data: {a: &x [1, yes, '017', 017, 0x10000000000000000], b: *x}
---
kind: Pod
  broken: [
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: keep-2}}
- just a string
---
# nothing here
---
plain scalar
"""
JSON = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep-3"}}\n[1, {"a": 2}'


def _seen(items: list[Document | InputError]) -> list[Any]:
    return [
        (i.ref, i.obj) if isinstance(i, Document) else ("error", str(i), i.source) for i in items
    ]


@pytest.mark.parametrize(("name", "text"), [("m.yaml", YAML), ("m.json", JSON)])
def test_later_passes_read_back_what_a_fresh_parse_gives(
    tmp_path: Path, name: str, text: str
) -> None:
    (tmp_path / name).write_text(text)
    source = Source(str(tmp_path / name), path=tmp_path / name)
    fresh = list(documents(source))
    with Spool() as spool:
        first = list(documents(source, lambda chunk: "keep" in chunk, spool))
        assert spool.has(source)
        again = list(documents(source, spool=spool))
        assert _seen(again) == _seen(fresh)
        assert _seen(list(documents(source, spool=spool))) == _seen(fresh)  # as often as asked
    # The first pass still sees only what its filter lets through.
    assert _seen(first) == _seen(list(documents(source, lambda chunk: "keep" in chunk)))


def test_aliases_stay_shared_when_read_back(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(YAML)
    source = Source(str(tmp_path / "m.yaml"), path=tmp_path / "m.yaml")
    with Spool() as spool:
        list(documents(source, spool=spool))
        back = next(iter(documents(source, spool=spool)))
    assert isinstance(back, Document)
    assert back.obj["data"]["a"] is back.obj["data"]["b"]
    assert back.obj["data"]["a"] == [1, True, "017", 15, 2**64]


def test_a_pass_abandoned_half_way_is_not_replayed(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(YAML)
    source = Source(str(tmp_path / "m.yaml"), path=tmp_path / "m.yaml")
    with Spool() as spool:
        next(iter(documents(source, spool=spool)))
        assert not spool.has(source)
        assert _seen(list(documents(source, spool=spool))) == _seen(list(documents(source)))


def test_check_parses_each_document_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    load = kubeyaml.load

    def counting(text: str) -> Any:
        parsed.append(text)
        return load(text)

    monkeypatch.setattr(kubeyaml, "load", counting)
    policies = dump(tmp_path / "p.yaml", policy())
    manifest = dump(tmp_path / "m.yaml", *(deployment(f"svc-{i}") for i in range(5)))
    run = run_cli(capsys, "check", "-p", policies, "-o", "json", manifest)
    assert run.code in (0, 1)
    assert len(run.json["results"]) == 5
    assert len(parsed) == 1 + 5  # the policy, then each workload once


def _no_temporary_files(*_: object, **__: object) -> Any:
    raise OSError(30, "Read-only file system")


def _marshal_refuses(_: object) -> bytes:
    raise ValueError("unmarshallable object")


@pytest.mark.parametrize(
    ("target", "replacement"),
    [
        ("mlgate.spool.tempfile.TemporaryFile", _no_temporary_files),
        ("mlgate.spool.marshal.dumps", _marshal_refuses),
    ],
)
def test_without_a_spool_later_passes_parse_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, replacement: Any
) -> None:
    (tmp_path / "m.yaml").write_text(YAML)
    source = Source(str(tmp_path / "m.yaml"), path=tmp_path / "m.yaml")
    fresh = _seen(list(documents(source)))
    monkeypatch.setattr(target, replacement)
    with Spool() as spool:
        assert _seen(list(documents(source, spool=spool))) == fresh
        assert not spool.has(source)
        assert _seen(list(documents(source, spool=spool))) == fresh


def test_check_works_where_no_temporary_file_can_be_made(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policies = dump(tmp_path / "p.yaml", policy())
    manifest = dump(tmp_path / "m.yaml", deployment("svc"))
    expected = run_cli(capsys, "check", "-p", policies, "-o", "json", manifest)
    monkeypatch.setattr("mlgate.spool.tempfile.TemporaryFile", _no_temporary_files)
    run = run_cli(capsys, "check", "-p", policies, "-o", "json", manifest)
    assert (run.code, run.json) == (expected.code, expected.json)
