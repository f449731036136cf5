"""The declarative kind form: paths, wildcards bound across a location, counts, containers."""

from __future__ import annotations

from typing import Any

import pytest

from mlgate.engine import kindspec
from mlgate.engine.kindspec import (
    UNBOUNDED,
    ContainerField,
    Count,
    Layout,
    Location,
    Shape,
    Wildcard,
    parse_path,
    resolve,
    runs_containers,
)
from mlgate.engine.workloads import Kinds, KindSpec, WorkloadView, view

P = parse_path


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", ()),
        ("spec", ("spec",)),
        ("spec.tasks[*].template", ("spec", "tasks", Wildcard.ITEM, "template")),
        ("spec.replicaSpecs.*.template", ("spec", "replicaSpecs", Wildcard.KEY, "template")),
        ('metadata.annotations["a.b/c"]', ("metadata", "annotations", "a.b/c")),
        ('a["x\\"y"].b', ("a", 'x"y', "b")),
    ],
)
def test_paths_parse(text: str, segments: tuple[Any, ...]) -> None:
    assert P(text).segments == segments


@pytest.mark.parametrize(
    "text", [".spec", "spec..x", "spec.", "spec[0]", "spec[*]x", "a b", "a[x]"]
)
def test_bad_paths_are_refused_with_the_position(text: str) -> None:
    with pytest.raises(kindspec.InvalidPath, match="character"):
        P(text)


DOC: dict[str, Any] = {
    "spec": {
        "tasks": [
            {"name": "a", "replicas": 2, "template": {"x": 1}},
            "garbage",
            {"name": "b", "template": {"x": 2}},
        ],
        "roles": {"Worker": {"n": 3}, 7: {"n": 4}},
    }
}


def test_wildcards_range_and_report_what_they_matched() -> None:
    found = list(resolve(DOC, P("spec.tasks[*].template")))
    assert [(f.path, f.value, f.bound) for f in found] == [
        ("spec.tasks[0].template", {"x": 1}, (0,)),
        ("spec.tasks[2].template", {"x": 2}, (2,)),
    ]
    roles = list(resolve(DOC, P("spec.roles.*.n")))
    assert [(f.path, f.bound) for f in roles] == [
        ("spec.roles.Worker.n", ("Worker",)),
        ("spec.roles.7.n", ("7",)),  # numeric keys as the apiserver stringifies them
    ]


def test_bound_wildcards_take_the_locations_match() -> None:
    assert kindspec.first(DOC, P("spec.tasks[*].replicas"), (0,)) == 2
    assert kindspec.first(DOC, P("spec.tasks[*].replicas"), (2,)) is None
    assert kindspec.first(DOC, P("spec.roles.*.n"), ("7",)) == 4


def count(obj: dict[str, Any], c: Count, bound: tuple[Any, ...] = ()) -> int:
    return c.value(obj, bound)


def test_counts() -> None:
    obj = {"a": 3, "b": "5", "c": 0, "on": True, "off": "false", "lead": {}}
    assert count(obj, Count((P("a"), P("b")))) == 5  # the largest present
    assert count(obj, Count((P("missing"),))) == 1
    assert count(obj, Count((P("missing"),), default=None)) == UNBOUNDED
    assert count(obj, Count(ceiling=(P("missing"),))) == UNBOUNDED
    assert count(obj, Count((P("a"),), ceiling=(P("b"),))) == 5
    assert count(obj, Count(ceiling=(P("c"),), zero_unset=True)) == UNBOUNDED
    assert count(obj, Count((P("a"),), ceiling=(P("b"),), autoscaled=P("off"))) == 3
    assert count(obj, Count((P("a"),), ceiling=(P("b"),), autoscaled=P("on"))) == 5
    assert count(obj, Count((P("a"),), less_one_with=P("lead"))) == 2
    assert count(obj, Count((P("c"),), less_one_with=P("lead"))) == 0


def test_image_text() -> None:
    assert kindspec.image_text("nginx") == "nginx"
    assert kindspec.image_text({"registry": "r.io/", "name": "a/b", "tag": "1"}) == "r.io/a/b:1"
    assert kindspec.image_text({"repository": "a", "digest": "sha256:x"}) == "a@sha256:x"
    assert kindspec.image_text({"type": "string"}) is None
    assert kindspec.image_text(3) is None


@pytest.mark.parametrize(
    ("obj", "runs"),
    [
        ({"inference": {"template": {"spec": {"containers": []}}}}, True),  # Kaito: top level
        ({"spec": {"deploy": {"image": {"registry": "r", "name": "x"}}}}, True),  # a mapping
        ({"spec": {"baseImage": "evil/miner"}}, True),
        ({"spec": {"steps": [{"image": "evil/miner"}]}}, True),
        ({"status": {"containerStatuses": [{"image": "x"}]}}, False),  # not desired state
        ({"metadata": {"annotations": {"image": "x"}}}, False),
        ({"spec": {"imagePullPolicy": "Always", "ports": [{"port": 80}]}}, False),
        ("x", False),
    ],
)
def test_runs_containers_anywhere_but_metadata_and_status(obj: Any, runs: bool) -> None:
    assert runs_containers(obj) is runs


def test_runs_containers_survives_cycles() -> None:
    loop: dict[str, Any] = {"a": {}}
    loop["a"]["b"] = loop
    assert runs_containers({"spec": loop}) is False


# A kind described only by data: the same views as code would give.
GADGET = KindSpec(
    "example.com",
    "Gadget",
    "gadgets",
    ("v1",),
    Layout(
        (
            Location(
                Shape.POD_SPEC,
                P("spec.units[*]"),
                (Count((P("spec.units[*].size"),)), Count((P("spec.copies"),))),
                role_path=P("spec.units[*].name"),
                containers=(
                    ContainerField(
                        P(""), name="main", image_default=P("spec.image"), gpus=P("gpu")
                    ),
                ),
                annotations=P('spec.units[*].meta["notes"]'),
            ),
        ),
        (kindspec.ModelField(P("spec.units[*].model"), prefix="hf://"),),
    ),
)
KINDS = Kinds({("example.com", "Gadget"): GADGET})


def test_a_declared_kind_is_viewed_like_a_built_in_one() -> None:
    obj = {
        "apiVersion": "example.com/v1",
        "kind": "Gadget",
        "metadata": {"name": "g", "namespace": "ml"},
        "spec": {
            "image": "r.io/default:1",
            "copies": 2,
            "units": [
                {"name": "x", "size": 3, "gpu": 2, "model": "org/m", "meta": {"notes": {"a": "b"}}},
                {"name": "y", "image": "r.io/own:2", "model": "s3://b/m"},
            ],
        },
    }
    assert view(obj) != view(obj, KINDS)  # unknown without the declaration
    w = view(obj, KINDS)
    assert isinstance(w, WorkloadView)
    assert [(p.path, p.role, p.count, p.annotations) for p in w.pods] == [
        ("spec.units[0]", "x", 6, {"a": "b"}),
        ("spec.units[1]", "y", 2, {}),
    ]
    assert [(c.image_path, c.image) for p in w.pods for c in p.containers] == [
        ("spec.image", "r.io/default:1"),  # judged where it is written
        ("spec.units[1].image", "r.io/own:2"),
    ]
    assert w.pods[0].containers[0].resources == {"limits": {"nvidia.com/gpu": 2}}
    assert [(m.value, m.path) for m in w.model_refs] == [
        ("hf://org/m", "spec.units[0].model"),
        ("s3://b/m", "spec.units[1].model"),
    ]


def test_a_declared_kind_never_replaces_a_built_in_one() -> None:
    fake = KindSpec("apps", "Deployment", "deployments", ("v1",), Layout())
    kinds = Kinds({("apps", "Deployment"): fake})
    spec = kinds.lookup("apps/v1", "Deployment")
    assert spec is not None and spec is not fake
