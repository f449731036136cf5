"""The examples are executable documentation: each noncompliant manifest breaks exactly the rules
its `# expect:` line names, and the compliant ones pass every example policy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.unit.test_check import Run, run_cli, run_process

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POLICIES = EXAMPLES / "policies"
MODELS = EXAMPLES / "models"
RUNTIMES = EXAMPLES / "runtimes"  # the ServingRuntimes, configs and TrainingRuntimes they name
COMPLIANT = sorted((EXAMPLES / "workloads" / "compliant").glob("*.yaml"))
NONCOMPLIANT = sorted((EXAMPLES / "workloads" / "noncompliant").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (.+)$", re.MULTILINE)
DIGEST_IMAGE = re.compile(r"@sha256:[0-9a-f]{64}$")
REQUIRED_KINDS = {
    "Deployment", "Job", "CronJob", "InferenceService", "PyTorchJob", "RayCluster", "Pod",
    "LLMInferenceService", "JobSet", "TrainJob",
}  # fmt: skip


def expected_rules(path: Path) -> set[str]:
    match = EXPECT.match(path.read_text())
    assert match, f"{path.name} must start with `# expect: rule, ...`"
    return {rule.strip() for rule in match.group(1).split(",")}


def check(capsys: pytest.CaptureFixture[str], *paths: Path) -> Run:
    return run_cli(
        capsys, "check", "-p", POLICIES, "--models", MODELS, "--runtimes", RUNTIMES, "-o", "json",
        *paths,
    )  # fmt: skip


def rules_by_file(run: Run) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for result in run.json["results"]:
        found.setdefault(Path(result["file"]).name, set()).update(
            v["rule"] for v in result["violations"]
        )
    return found


@pytest.mark.parametrize("path", NONCOMPLIANT, ids=lambda p: p.stem)
def test_noncompliant_example_breaks_exactly_the_expected_rules(
    capsys: pytest.CaptureFixture[str], path: Path
) -> None:
    run = check(capsys, path)
    (result,) = run.json["results"]
    assert {v["rule"] for v in result["violations"]} == expected_rules(path)
    enforced = any(v["mode"] == "Enforce" for v in result["violations"])
    assert run.code == (1 if enforced else 0)
    assert result["notes"] == []


@pytest.mark.parametrize("path", COMPLIANT, ids=lambda p: p.stem)
def test_compliant_example_passes_every_policy(
    capsys: pytest.CaptureFixture[str], path: Path
) -> None:
    run = check(capsys, path)
    assert run.code == 0
    assert [(r["status"], r["violations"], r["notes"]) for r in run.json["results"]] == [
        ("compliant", [], [])
    ]
    assert "# expect:" not in path.read_text()


def test_the_console_script_judges_the_example_directories() -> None:
    run = run_process(
        "check", "-p", POLICIES, "--models", MODELS, "--runtimes", RUNTIMES, "-o", "json",
        EXAMPLES / "workloads",
    )  # fmt: skip
    assert run.code == 1
    assert run.err == ""
    found = rules_by_file(run)
    assert found == {
        **{p.name: set() for p in COMPLIANT},
        **{p.name: expected_rules(p) for p in NONCOMPLIANT},
    }
    summary = run.json["summary"]
    assert summary["skipped"] == 0
    assert summary["policies"] == ["ml-prod/ml-prod-serving", "production-ml", "registry-migration"]
    assert summary["approvedModels"] == 6


@pytest.mark.parametrize("examples", [COMPLIANT, NONCOMPLIANT], ids=["compliant", "noncompliant"])
def test_examples_cover_the_main_workload_kinds(examples: list[Path]) -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in examples}
    assert kinds >= REQUIRED_KINDS


@pytest.mark.parametrize("path", COMPLIANT + NONCOMPLIANT, ids=lambda p: p.stem)
def test_examples_are_plausible_kubernetes_objects(path: Path) -> None:
    """`make demo` applies them to a real apiserver with ml-prod labelled as governed."""
    (doc,) = yaml.safe_load_all(path.read_text())
    assert doc["metadata"]["namespace"] == "ml-prod"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    # KServe predictors may name no image: their ServingRuntime supplies it.
    for image in re.findall(r"^\s*(?:- )?image: (\S+)$", path.read_text(), re.MULTILINE):
        if "@" in image:
            assert DIGEST_IMAGE.search(image), image
