"""YAML read as kubectl reads it (go-yaml v2 through sigs.k8s.io/yaml), and `mlgate check`
judging what the cluster would receive."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from mlgate import kubeyaml
from mlgate.manifests import _chunks
from tests.unit.factories import realworld
from tests.unit.test_check import GOOD_IMAGE, deployment, dump, policy, rules_of, run_cli

# go-yaml v2's resolve.go, case by case: (plain scalar, JSON value kubectl sends).
RESOLVED: list[tuple[str, Any]] = [
    *[(t, True) for t in ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")],
    *[(t, False) for t in ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "OFF")],
    *[(t, None) for t in ("~", "null", "Null", "NULL")],
    ("yES", "yES"),
    ("oN", "oN"),
    ("1_000", 1000),
    ("+12", 12),
    ("-12", -12),
    ("0x1F", 31),
    ("017", 15),  # a leading 0 is octal, as strconv.ParseInt(s, 0, 64) reads it
    ("0o17", 15),
    ("0b101", 5),
    ("08", 8.0),  # not octal, but go-yaml's float pattern matches
    ("1e3", 1000.0),
    ("1.5", 1.5),
    (".5", 0.5),
    ("-.5", -0.5),
    ("1:20", "1:20"),  # no YAML 1.1 sexagesimal numbers in go-yaml
    ("2024-01-15", "2024-01-15"),  # timestamps stay strings in interface{}
    ("2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00"),
    ("=", "="),
    ("1e999", "1e999"),  # out of float64's range: ParseFloat fails, a string remains
    ("18446744073709551615", 18446744073709551615),  # uint64
    ("18446744073709551616", 1.8446744073709552e19),  # beyond: the float pattern matches
    ("0x10000000000000000", 2**64),  # beyond, hex: big.Int
    ("1.2.3", "1.2.3"),
    ("-x", "-x"),
]


@pytest.mark.parametrize(("text", "expected"), RESOLVED)
def test_plain_scalars_resolve_as_go_yaml_v2(text: str, expected: Any) -> None:
    value, problems = kubeyaml.load(f"v: {text}\n")
    assert problems == []
    assert value == {"v": expected} and type(value["v"]) is type(expected)


def test_quoted_scalars_stay_strings() -> None:
    assert kubeyaml.load("a: 'y'\nb: \"on\"\nc: '1e3'\n")[0] == {"a": "y", "b": "on", "c": "1e3"}


def test_map_keys_become_strings_as_sigs_yaml_makes_them() -> None:
    text = "on: a\nn: b\n1: c\n0x10: d\n1.5: e\n1e6: f\n0.1: g\n"
    assert kubeyaml.load(text)[0] == {
        "true": "a",
        "false": "b",
        "1": "c",
        "16": "d",
        "1.5": "e",
        "1e+06": "f",
        "0.1": "g",
    }


def test_float_keys_beyond_float32_become_infinities_as_go_spells_them() -> None:
    # float32(1e300) is +Inf in Go, and strconv.FormatFloat writes it "+Inf"; not a crash.
    assert kubeyaml.load("1e300: a\n-1e39: b\n3.4e38: c\n")[0] == {
        "+Inf": "a",
        "-Inf": "b",
        "3.4e+38": "c",
    }


def test_keys_that_become_the_same_json_key_are_ambiguous() -> None:
    with pytest.raises(Exception, match="both become 'true' in JSON"):
        kubeyaml.load("on: a\n'true': b\n")
    # The same key twice is YAML's last-one-wins in go-yaml v2 as in PyYAML: no ambiguity.
    assert kubeyaml.load("a: 1\na: 2\n")[0] == {"a": 2}


@pytest.mark.parametrize("key", ["~", "[1, 2]", "{a: 1}", ".nan"])
def test_map_keys_without_a_json_form_are_errors(key: str) -> None:
    with pytest.raises(Exception, match="has no JSON form"):
        kubeyaml.load(f"? {key}\n: x\n")


@pytest.mark.parametrize(
    ("text", "path", "what"),
    [
        ("a:\n  b: !!binary aGVsbG8=\n", "a.b", "a binary value"),
        ("a: [1, .nan]\n", "a[1]", "'.nan' (not a finite number)"),
        ("a: -.Inf\n", "a", "'-.Inf' (not a finite number)"),
        ("a: !!set {x, y}\n", "a", "a set value"),
        ("a: !!omap [{x: 1}]\n", "a", "a omap value"),
        ('a: {"k.x": !!pairs [{x: 1}]}\n', 'a["k.x"]', "a pairs value"),
    ],
)
def test_values_without_a_json_form_are_named_by_field(text: str, path: str, what: str) -> None:
    _, problems = kubeyaml.load(text)
    assert [(p, n.what) for p, n in problems] == [(path, what)]


def test_explicit_tags_resolve_then_must_match() -> None:
    assert kubeyaml.load("a: !!bool y\nb: !!int '0x10'\nc: !!float 1\nd: !!str on\n")[0] == {
        "a": True,
        "b": 16,
        "c": 1.0,
        "d": "on",
    }
    with pytest.raises(Exception, match="cannot decode !!str `yes please` as a !!bool"):
        kubeyaml.load("a: !!bool yes please\n")


def test_merge_keys_still_merge() -> None:
    value, _ = kubeyaml.load("base: &b {x: y}\nd:\n  <<: *b\n  z: 1\n")
    assert value["d"] == {"x": True, "z": 1}


def test_special_floats_resolve_but_are_not_json() -> None:
    assert kubeyaml.resolve(".inf")[0] == "float" and math.isinf(kubeyaml.resolve(".inf")[1])


# --- mlgate check ----------------------------------------------------------------------------


def test_yaml_1_1_booleans_reach_the_rules_as_kubectl_sends_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policies = dump(tmp_path / "p.yaml", policy(egress={}))
    manifest = tmp_path / "m.yaml"
    text = dump(tmp_path / "x.yaml", deployment(hostNetwork=True)).read_text()
    manifest.write_text(text.replace("hostNetwork: true", "hostNetwork: y"))
    assert "hostNetwork: y" in manifest.read_text()
    run = run_cli(capsys, "check", "-p", policies, "-o", "json", manifest)
    assert run.code == 1
    assert rules_of(run.json) == [
        ("fraud-api", "egress.hostNetwork", "spec.template.spec.hostNetwork")
    ]


def test_binary_values_are_an_input_error_naming_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policies = dump(tmp_path / "p.yaml", policy())
    manifest = tmp_path / "m.yaml"
    text = dump(tmp_path / "x.yaml", deployment()).read_text()
    manifest.write_text(text.replace(f"image: {GOOD_IMAGE}", "image: !!binary bmdpbng="))
    run = run_cli(capsys, "check", "-p", policies, manifest)
    assert run.code == 2
    assert "spec.template.spec.containers[0].image: a binary value has no JSON form" in run.err


def test_json_nan_is_an_input_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policies = dump(tmp_path / "p.yaml", policy())
    manifest = tmp_path / "m.json"
    manifest.write_text('{"apiVersion": "v1", "kind": "Pod", "spec": {"x": NaN}}')
    run = run_cli(capsys, "check", "-p", policies, manifest)
    assert run.code == 2 and "NaN is not a JSON value" in run.err


def test_dot_files_in_a_directory_are_judged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policies = dump(tmp_path / "p.yaml", policy())
    dump(tmp_path / "m" / ".sneaky.yaml", deployment("sneaky", "docker.io/evil/x:1"))
    run = run_cli(capsys, "check", "-p", policies, "-o", "json", tmp_path / "m")
    assert run.code == 1
    assert [r for r, _, _ in rules_of(run.json)] == ["sneaky"]


def test_gpu_namespace_quota_is_judged_across_the_whole_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policies = dump(tmp_path / "p.yaml", policy(gpu={"namespaceQuota": 32}))
    workloads = []
    for i in range(7):
        w = deployment(f"train-{i}")
        w["spec"]["template"]["spec"]["containers"][0]["resources"] = {
            "limits": {"nvidia.com/gpu": 16}
        }
        workloads.append(w)
    other = deployment("elsewhere", namespace="ml-dev")
    other["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"nvidia.com/gpu": 16}
    }
    manifest = dump(tmp_path / "m.yaml", *workloads, other)
    run = run_cli(capsys, "check", "-p", policies, "-o", "json", manifest)
    assert run.code == 1
    denied = [name for name, rule, _ in rules_of(run.json) if rule == "gpu.namespaceQuota"]
    # The first two fit 32 together; each later one would exceed it (denied ones reserve none).
    assert denied == [f"train-{i}" for i in range(2, 7)]
    messages = [
        v["message"] for r in run.json["results"] if r["name"] == "train-2" for v in r["violations"]
    ]
    assert "(32 in use + 16 requested)" in messages[0]


def _loader(text: str) -> Any:
    loader = kubeyaml.KubectlLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# The fast path (libyaml's events, no PyYAML nodes) must return exactly what KubectlLoader does.
FAST: list[str] = [
    *[f"v: {text}\n" for text, _ in RESOLVED],
    # as keys too, but for those without a JSON form (null, integers beyond int64)
    *[f"{text}: v\n" for text, value in RESOLVED if kubeyaml.json_key(value) is not None],
    "a: 'y'\nb: \"on\"\nc: '1e3'\nd: |\n  yes\ne: >-\n  017\n",
    "on: a\nn: b\n1: c\n0x10: d\n1.5: e\n1e6: f\n0.1: g\n",
    "a:\nb: ''\nc: [1, 'x', {d: [], e: {}}]\n",
    "list:\n- a\n- - b\n  - {c: no}\n",
    "[1, {a: off}, [null, 0b11]]\n",
    "plain scalar\n",
    "%YAML 1.1\n---\nkey: 1_000\n...\n",
    "# only a comment\n",
    "",
    "big: 18446744073709551616\nhex: 0x10000000000000000\n",
]


@pytest.mark.parametrize("text", FAST)
def test_the_fast_path_loads_what_the_loader_loads(text: str) -> None:
    fast = kubeyaml._fast_load(text)
    assert fast is not kubeyaml._SLOW
    expected = _loader(text)
    assert fast == expected and repr(fast) == repr(expected)  # types too: 1 != True in repr


# What only the loader decides: each of these leaves the fast path.
SLOW: list[str] = [
    "a: &x {b: 1}\nc: *x\n",  # anchors and aliases
    "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n",  # merge keys
    "a: !!str 1\n",  # explicit tags
    "a: !!binary aGk=\n",
    "a: ! 1\n",
    "a: 1\na: 2\n",  # a duplicate key
    "1: a\n'1': b\n",  # two keys that become one JSON key
    "~: a\n",  # a key without a JSON form
    "[1]: a\n",
    "{a: 1}: b\n",
    "a: .nan\n",  # a value without a JSON form
    "a: -.inf\n",
    "v: <<\n",
    "a: [1\n",  # malformed
    "a: 1\n---\nb: 2\n",  # two documents
    "a: " + "[" * 70 + "]" * 70 + "\n",  # deep nesting
]


@pytest.mark.parametrize("text", SLOW)
def test_the_loader_decides_what_the_fast_path_cannot(text: str) -> None:
    assert kubeyaml._fast_load(text) is kubeyaml._SLOW


def _corpus() -> list[Path]:
    tests = Path(__file__).resolve().parents[1]
    roots = [tests / "data", tests.parent / "examples", realworld()]
    return sorted(p for r in roots if r for p in r.rglob("*") if p.suffix in (".yaml", ".yml"))


def test_the_fast_path_loads_every_real_manifest_as_the_loader_does() -> None:
    """Upstream manifests (and ours), document by document: the fast path takes most of them
    and gives exactly the loader's value; anything it leaves is the loader's to decide."""
    fast = 0
    for path in _corpus():
        for chunk in _chunks(path.read_text(encoding="utf-8-sig").splitlines(keepends=True)):
            got = kubeyaml._fast_load(chunk.text)
            if got is kubeyaml._SLOW:
                continue
            fast += 1
            expected = _loader(chunk.text)
            assert repr(got) == repr(expected), f"{path} doc {chunk.number}"
    assert fast >= 50
