"""Report formats, rendered from hand-made outcomes: text, the JSON shape, SARIF 2.1.0."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mlgate import __version__
from mlgate.check import Outcome, Result
from mlgate.engine.decisions import ATLAS, OWASP, Decision, Mode, Rule, Violation
from mlgate.manifests import STDIN_NAME, DocRef
from mlgate.reports import RULE_DESCRIPTIONS, render_json, render_sarif, render_text, summary_line

IMAGE = "spec.template.spec.containers[0].image"


def violation(rule: Rule, mode: Mode = Mode.ENFORCE, policy: str = "prod") -> Violation:
    return Violation(policy, mode, rule, IMAGE if rule.value.startswith("images") else "spec",
                     f"{rule} is broken; fix it", ATLAS[rule], OWASP[rule])  # fmt: skip


def result(
    name: str,
    *violations: Violation,
    source: str = "app.yaml",
    line: int = 1,
    kind: str = "Deployment",
    namespace: str = "ml-prod",
    notes: tuple[str, ...] = (),
    item: int | None = None,
) -> Result:
    allowed = not any(v.mode is Mode.ENFORCE for v in violations)
    return Result(
        ref=DocRef(source, 1, item, line),
        api_version="apps/v1" if kind == "Deployment" else "v1",
        kind=kind,
        namespace=namespace,
        name=name,
        decision=Decision(allowed, tuple(violations), ("prod",), notes),
        supported=kind != "ConfigMap",
    )


OUTCOME = Outcome(
    results=(
        result("ok"),
        result(
            "bad",
            violation(Rule.IMAGES_REGISTRY),
            violation(Rule.IMAGES_DIGEST, Mode.WARN, "migration"),
            line=20,
        ),
        result("noted", notes=("[prod] x: signature not verified offline",), namespace=""),
        result("audited", violation(Rule.GPU_PRODUCT, Mode.AUDIT), source=STDIN_NAME, item=2),
        result("config", kind="ConfigMap", notes=("ConfigMap is not a workload kind; not judged",)),
    ),
    policies=("prod", "migration"),
    approvals=1,
)


# ---------------------------------------------------------------------------------------------
# Text


def test_text_lists_findings_and_notes_per_workload_then_a_summary() -> None:
    assert render_text(OUTCOME).splitlines() == [
        "app.yaml:20 (doc 1) Deployment ml-prod/bad",
        f"  DENY  [prod] images.registry at {IMAGE}: images.registry is broken; fix it "
        "(ATLAS AML.T0010, AML.T0010.004; OWASP LLM03)",
        f"  WARN  [migration] images.digest at {IMAGE}: images.digest is broken; fix it "
        "(ATLAS AML.T0010, AML.T0010.004; OWASP LLM03)",
        "app.yaml:1 (doc 1) Deployment noted",
        "  note  [prod] x: signature not verified offline",
        "<stdin>:1 (doc 1 item 2) Deployment ml-prod/audited",
        "  AUDIT [prod] gpu.product at spec: gpu.product is broken; fix it "
        "(ATLAS AML.T0029, AML.T0034; OWASP LLM10)",
        "",
        "mlgate: 4 workloads checked against 2 policies and 1 approved model: 1 denied, "
        "1 audited, 2 compliant; 1 document skipped, not workloads (ConfigMap)",
    ]


def test_the_summary_counts_workloads_apart_from_other_documents() -> None:
    unknown = [
        result(f"u{i}", violation(Rule.WORKLOAD_UNSUPPORTED), kind="Trainer") for i in (1, 2)
    ]
    others = [replace(r, workload=False) for r in unknown]
    skipped = [result("c", kind=f"Kind{i:02}") for i in range(10)]
    skipped = [replace(r, supported=False) for r in skipped]
    outcome = Outcome(results=(result("ok"), *others, *skipped), policies=("prod",))
    assert summary_line(outcome) == (
        "mlgate: 1 workload checked against 1 policy: 1 compliant; 2 other documents judged "
        "(Trainer): 2 denied; 10 documents skipped, not workloads (Kind00, Kind01, Kind02, "
        "Kind03, Kind04, Kind05, Kind06, Kind07 and 2 more kinds)"
    )


def test_text_of_a_clean_run_is_only_the_summary() -> None:
    outcome = Outcome(results=(result("ok"),), policies=("prod",))
    assert render_text(outcome) == "mlgate: 1 workload checked against 1 policy: 1 compliant\n"


# ---------------------------------------------------------------------------------------------
# JSON


RESULT_KEYS = {
    "file", "document", "item", "line", "apiVersion", "kind", "namespace", "name", "status",
    "allowed", "violations", "notes",
}  # fmt: skip
VIOLATION_KEYS = {"policy", "mode", "rule", "path", "message", "atlas", "owasp"}
SUMMARY_KEYS = {
    "documents", "workloads", "denied", "warned", "audited", "compliant", "skipped", "policies",
    "approvedModels", "exitCode",
}  # fmt: skip


def test_json_shape_is_stable() -> None:
    report = json.loads(render_json(OUTCOME))
    assert set(report) == {"format", "tool", "results", "summary"}
    assert report["format"] == 1
    assert report["tool"] == {"name": "mlgate", "version": __version__}
    assert all(set(r) == RESULT_KEYS for r in report["results"])
    assert all(set(v) == VIOLATION_KEYS for r in report["results"] for v in r["violations"])
    assert set(report["summary"]) == SUMMARY_KEYS


def test_json_carries_every_document_with_its_verdict() -> None:
    report = json.loads(render_json(OUTCOME))
    assert [(r["name"], r["status"], r["allowed"]) for r in report["results"]] == [
        ("ok", "compliant", True),
        ("bad", "denied", False),
        ("noted", "compliant", True),
        ("audited", "audited", True),
        ("config", "skipped", True),
    ]
    bad = report["results"][1]
    assert (bad["file"], bad["document"], bad["item"], bad["line"]) == ("app.yaml", 1, None, 20)
    assert bad["violations"][0] == {
        "policy": "prod",
        "mode": "Enforce",
        "rule": "images.registry",
        "path": IMAGE,
        "message": "images.registry is broken; fix it",
        "atlas": ["AML.T0010", "AML.T0010.004"],
        "owasp": ["LLM03"],
    }
    assert report["summary"] == {
        "documents": 5,
        "workloads": 4,
        "denied": 1,
        "warned": 0,
        "audited": 1,
        "compliant": 2,
        "skipped": 1,
        "policies": ["prod", "migration"],
        "approvedModels": 1,
        "exitCode": 1,
    }


# ---------------------------------------------------------------------------------------------
# SARIF


def sarif(outcome: Outcome, root: Path) -> dict[str, Any]:
    log: dict[str, Any] = json.loads(render_sarif(outcome, root))
    return log


def assert_sarif_shape(log: dict[str, Any]) -> None:
    """The parts of the SARIF 2.1.0 schema that code-scanning tools rely on."""
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "mlgate"
    assert driver["version"] == __version__
    assert driver["informationUri"].startswith("https://")
    ids = [rule["id"] for rule in driver["rules"]]
    assert len(ids) == len(set(ids))
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"]
        assert rule["helpUri"].startswith("https://")
        assert "security" in rule["properties"]["tags"]
        assert set(ATLAS[Rule(rule["id"])]) <= set(rule["properties"]["tags"])
    for res in run["results"]:
        assert driver["rules"][res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["level"] in {"error", "warning", "note"}
        assert res["message"]["text"]
        for location in res["locations"]:
            physical = location["physicalLocation"]
            assert physical["artifactLocation"]["uri"]
            assert not physical["artifactLocation"]["uri"].startswith("/")
            assert isinstance(physical["region"]["startLine"], int)
            assert physical["region"]["startLine"] >= 1
            assert location["logicalLocations"][0]["fullyQualifiedName"]


def test_sarif_has_the_2_1_0_shape(tmp_path: Path) -> None:
    assert_sarif_shape(sarif(OUTCOME, tmp_path))


def test_sarif_has_one_rule_per_rule_used_and_a_result_per_violation(tmp_path: Path) -> None:
    run = sarif(OUTCOME, Path.cwd())["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == [
        "gpu.product",
        "images.digest",
        "images.registry",
    ]
    assert [
        (
            r["ruleId"],
            r["level"],
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            r["locations"][0]["physicalLocation"]["region"]["startLine"],
            r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
        )
        for r in run["results"]
    ] == [
        ("images.registry", "error", "app.yaml", 20, "Deployment/ml-prod/bad"),
        ("images.digest", "warning", "app.yaml", 20, "Deployment/ml-prod/bad"),
        ("gpu.product", "note", "stdin", 1, "Deployment/ml-prod/audited"),
    ]
    assert run["results"][0]["message"]["text"] == (
        f"Deployment ml-prod/bad: [prod] images.registry at {IMAGE}: "
        "images.registry is broken; fix it"
    )
    assert run["invocations"] == [{"executionSuccessful": True, "exitCode": 1}]


@pytest.mark.parametrize(
    ("source", "expected"),
    [("manifests/app v2.yaml", "manifests/app%20v2.yaml"), (STDIN_NAME, "stdin")],
)
def test_sarif_uris_are_relative_to_the_root(tmp_path: Path, source: str, expected: str) -> None:
    located = str(tmp_path / source) if source != STDIN_NAME else source
    outcome = Outcome(results=(result("bad", violation(Rule.IMAGES_TAG), source=located),))
    uri = sarif(outcome, tmp_path)["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert uri["artifactLocation"]["uri"] == expected


def test_sarif_of_a_clean_run_has_no_results(tmp_path: Path) -> None:
    log = sarif(Outcome(results=(result("ok"),)), tmp_path)
    assert_sarif_shape(log)
    assert log["runs"][0]["results"] == []
    assert log["runs"][0]["tool"]["driver"]["rules"] == []


def test_every_rule_has_a_description_for_sarif() -> None:
    assert set(RULE_DESCRIPTIONS) == set(Rule)
