"""CRDs: crds/ is what the models generate, the schemas are structural, and validation of
invalid resources names the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate import cli
from mlgate.api.compile import InvalidResource, parse_resource
from mlgate.api.crdgen import render_all

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
# Never valid in a structural schema, or not what the apiserver expects of one.
FORBIDDEN_KEYS = frozenset({"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "definitions"})


def crds(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    code = cli.main(["crds", *map(str, args)])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Drift


def test_crds_directory_matches_the_models(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = crds(capsys, "--check", "--output-dir", CRDS)
    assert (code, err) == (0, ""), "crds/ is stale: run `make crds`"


def test_generated_files_pass_the_check_and_drift_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert crds(capsys, "--output-dir", tmp_path)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(render_all())
    assert crds(capsys, "--check", "--output-dir", tmp_path) == (0, "")

    edited = tmp_path / "mlgate.io_mlpolicies.yaml"
    edited.write_text(edited.read_text().replace("MLPolicy", "MLPolicies", 1))
    (tmp_path / "mlgate.io_retired.yaml").write_text("{}")
    (tmp_path / "mlgate.io_approvedmodels.yaml").unlink()
    code, err = crds(capsys, "--check", "--output-dir", tmp_path)
    assert code == 1
    assert err == (
        f"mlgate: {tmp_path} differs from the CRDs the models generate: "
        "mlgate.io_approvedmodels.yaml, mlgate.io_mlpolicies.yaml, mlgate.io_retired.yaml; "
        "run `make crds`\n"
    )

    assert crds(capsys, "--output-dir", tmp_path)[0] == 0  # regenerating repairs all three
    assert crds(capsys, "--check", "--output-dir", tmp_path) == (0, "")


# ---------------------------------------------------------------------------------------------
# Structural schemas


def load(name: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load((CRDS / name).read_text())
    return crd


def schema_nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node: properties, array items and map values, recursively."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from schema_nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from schema_nodes(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("name", sorted(render_all()))
def test_every_crd_schema_is_structural(name: str) -> None:
    crd = load(name)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    for path, node in schema_nodes(schema):
        assert not FORBIDDEN_KEYS & set(node), f"{name}{path}: {FORBIDDEN_KEYS & set(node)}"
        assert node.get("additionalProperties") is not False, f"{name}{path}"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{name}{path}: no type"
        if "properties" in node:
            assert node["type"] == "object", f"{name}{path}"
    assert {"spec", "status", "metadata"} <= set(schema["properties"])


@pytest.mark.parametrize(
    ("name", "kind", "scope"),
    [
        ("mlgate.io_clustermlpolicies.yaml", "ClusterMLPolicy", "Cluster"),
        ("mlgate.io_mlpolicies.yaml", "MLPolicy", "Namespaced"),
        ("mlgate.io_approvedmodels.yaml", "ApprovedModel", "Cluster"),
    ],
)
def test_crd_names_kinds_and_scopes(name: str, kind: str, scope: str) -> None:
    spec = load(name)["spec"]
    assert (spec["group"], spec["names"]["kind"], spec["scope"]) == ("mlgate.io", kind, scope)
    assert load(name)["metadata"]["name"] == f"{spec['names']['plural']}.mlgate.io"
    assert spec["versions"][0]["name"] == "v1alpha1"
    assert spec["versions"][0]["subresources"] == {"status": {}}


# ---------------------------------------------------------------------------------------------
# Invalid resources are rejected, naming the field


def cluster_policy(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": "production-ml"},
        "spec": spec,
    }


BAD_PEM = "-----BEGIN PUBLIC KEY-----\nAAAAAAAA\n-----END PUBLIC KEY-----\n"


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"images": {"foo": ["x"]}}, "spec.images.foo", "Extra inputs are not permitted"),
        ({"gpus": {}}, "spec.gpus", "Extra inputs are not permitted"),
        (
            {"images": {"allowedRegistries": ["ghcr.io/acme/*", "ghcr.io/acme/*:latest"]}},
            "spec.images.allowedRegistries[1]",
            "names a tag",
        ),
        (
            {"images": {"allowedRegistries": ["ghcr.io/acme/*", "bad glob"]}},
            "spec.images.allowedRegistries[1]",
            "String should match pattern",
        ),
        (
            {
                "images": {
                    "signatures": [{"images": ["ghcr.io/*"], "keys": [{"publicKey": BAD_PEM}]}]
                }
            },
            "spec.images.signatures[0].keys[0].publicKey",
            "malformed PEM public key",
        ),
        (
            {"images": {"signatures": [{"images": ["ghcr.io/*"], "keys": [{}]}]}},
            "spec.images.signatures[0].keys[0]",
            "set exactly one of publicKey or secretRef",
        ),
        ({"gpu": {"maxPerPod": -1}}, "spec.gpu.maxPerPod", "greater than or equal to 0"),
        ({"gpu": {"maxPerWorkload": -8}}, "spec.gpu.maxPerWorkload", "greater than or equal to 0"),
        ({"gpu": {"namespaceQuota": -32}}, "spec.gpu.namespaceQuota", "greater than or equal to 0"),
        ({"mode": "Deny"}, "spec.mode", "Input should be 'Enforce', 'Warn' or 'Audit'"),
        ({"mode": "enforce"}, "spec.mode", "Input should be 'Enforce', 'Warn' or 'Audit'"),
    ],
)
def test_invalid_policies_are_rejected_naming_the_field(
    spec: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(InvalidResource) as caught:
        parse_resource(cluster_policy(spec))
    message = str(caught.value)
    assert f"{field}: " in message
    assert reason in message.split(f"{field}: ", 1)[1]


def test_the_example_policies_and_models_are_valid() -> None:
    examples = REPO / "examples"
    for path in sorted([*examples.glob("policies/*.yaml"), *examples.glob("models/*.yaml")]):
        for doc in yaml.safe_load_all(path.read_text()):
            assert parse_resource(doc).metadata.name, path
