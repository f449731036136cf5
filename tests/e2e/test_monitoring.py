"""Continuous monitoring on the real control plane: the audit's PolicyReports, Events, metrics
and `mlgate report`, with only some ML CRDs installed (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from mlgate.devcluster import Cluster
from mlgate.devrun import WEBHOOK_CONFIG_KINDS, MlgateProcess, stand_in_crds
from tests.e2e.test_admission import BAD, GOOD, apply, policy_doc, wait_policy, workload

REPO = Path(__file__).resolve().parents[2]
REPORT_CRDS = REPO / "charts" / "mlgate" / "files" / "policy-report-crds.yaml"
MAX_RESULTS = 3
ABSENT_GROUP = "ray.io"  # not served when the module starts; installed by a test
T = TypeVar("T")
MONITOR_ARGS = [
    "--audit-interval", "2",
    "--report-max-results", str(MAX_RESULTS),
    "--lease-name", "mlgate-monitoring",
]  # fmt: skip


def _crds(group: str | None = None, *, without: str | None = None) -> list[dict[str, Any]]:
    return [
        crd
        for crd in stand_in_crds()
        if (group is None or crd["spec"]["group"] == group) and crd["spec"]["group"] != without
    ]


def _install(cp: Cluster, crds: list[dict[str, Any]]) -> None:
    cp.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(crds))
    names = [f"crd/{crd['metadata']['name']}" for crd in crds]
    cp.kubectl("wait", "--for=condition=Established", *names, "--timeout=60s", check=True)


@pytest.fixture(scope="module")
def monitor(
    control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlgateProcess]:
    """mlgate with a 2 s audit interval, on a cluster that serves no ray.io kinds."""
    control_plane.kubectl("apply", "-f", str(REPO / "crds"), check=True)
    control_plane.kubectl("apply", "-f", str(REPORT_CRDS), check=True)
    _install(control_plane, _crds(without=ABSENT_GROUP))
    absent = [crd["metadata"]["name"] for crd in _crds(ABSENT_GROUP)]
    control_plane.kubectl("delete", "crd", *absent, "--ignore-not-found", "--wait=true", check=True)
    control_plane.kubectl("create", "namespace", "mlgate-system")
    log = tmp_path_factory.mktemp("mlgate") / "mlgate.log"
    with MlgateProcess(
        control_plane.kubeconfig,
        log,
        webhook_config="mlgate-e2e-monitoring",
        extra_args=MONITOR_ARGS,
    ) as process:
        yield process
    control_plane.kubectl(
        "delete", WEBHOOK_CONFIG_KINDS, "mlgate-e2e-monitoring", "--ignore-not-found"
    )
    _install(control_plane, _crds(ABSENT_GROUP))  # as the other modules expect


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def report(cp: Cluster, namespace: str) -> dict[str, Any] | None:
    out = cp.kubectl("-n", namespace, "get", "policyreport", "mlgate-audit", "-o", "json")
    return json.loads(out.stdout) if out.returncode == 0 else None


def results(cp: Cluster, namespace: str) -> list[tuple[str, str, str, str]]:
    """(kind/name, policy, rule, result) of every result in the namespace's report."""
    found = report(cp, namespace) or {}
    return sorted(
        (
            f"{r['resources'][0]['kind']}/{r['resources'][0]['name']}",
            r["policy"],
            r["rule"],
            r["result"],
        )
        for r in found.get("results") or []
    )


def results_become(cp: Cluster, namespace: str, wanted: list[tuple[str, str, str, str]]) -> None:
    last: list[Any] = []

    def probe() -> bool | None:
        last[:] = results(cp, namespace)
        return True if last == sorted(wanted) else None

    try:
        eventually(probe, f"results {wanted}")
    except AssertionError:
        raise AssertionError(f"results are {last}, wanted {sorted(wanted)}") from None


@pytest.fixture
def policy_name(control_plane: Cluster) -> Iterator[str]:
    name = f"mon-{uuid.uuid4().hex[:8]}"
    yield name
    control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def mlgate_report(cp: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlgate", "report", "--kubeconfig", str(cp.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_workload_admitted_before_its_policy_is_reported_fixed_and_deleted(
    control_plane: Cluster, monitor: MlgateProcess, namespace: str, policy_name: str
) -> None:
    cp = control_plane
    apply(cp, workload("Deployment", "legacy", namespace, BAD)).check_returncode()
    apply(cp, workload("Deployment", "clean", namespace, GOOD)).check_returncode()
    # Audit mode, so that the workload can be broken again below.
    policy = policy_doc(policy_name, namespace, "Audit", images={"requireDigest": True})
    apply(cp, policy).check_returncode()
    wait_policy(cp, policy_name)
    results_become(cp, namespace, [("Deployment/legacy", policy_name, "images.digest", "fail")])
    found = report(cp, namespace)
    assert found is not None
    (result,) = found["results"]
    assert result["source"] == "mlgate"
    assert result["properties"]["atlas"] == "AML.T0010,AML.T0010.004"
    assert found["summary"]["pass"] == 1 and found["summary"]["fail"] == 1

    # The newly violating workload gets one Event; the metrics count the violation.
    def event() -> str | None:
        out = cp.kubectl(
            "-n", namespace, "get", "events",
            "--field-selector", "reason=PolicyViolation,involvedObject.name=legacy",
            "-o", "jsonpath={.items[*].message}",
        )  # fmt: skip
        return out.stdout or None

    assert "images.digest" in eventually(event, "a PolicyViolation event")
    metrics = monitor.metrics()
    labels = f'namespace="{namespace}",policy="{policy_name}",result="fail",rule="images.digest"'
    audit_lines = [line for line in metrics.splitlines() if line.startswith("mlgate_audit")]
    assert f"mlgate_audit_violations{{{labels}}} 1.0" in audit_lines, audit_lines
    assert 'mlgate_background_task_failures_total{task="audit"}' not in metrics

    # `mlgate report` shows it, filtered; SARIF and JSON carry the ATLAS ids.
    table = mlgate_report(cp, "-n", namespace)
    assert table.returncode == 1, table.stderr
    assert "legacy" in table.stdout and "images.digest" in table.stdout
    as_json = json.loads(mlgate_report(cp, "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["atlas"]) for r in as_json["results"]] == [
        ("legacy", ["AML.T0010", "AML.T0010.004"])
    ]
    other_rule = mlgate_report(cp, "-n", namespace, "--rule", "models.approval")
    assert other_rule.returncode == 0 and other_rule.stdout == "no violations\n"
    sarif = json.loads(mlgate_report(cp, "-n", namespace, "-o", "sarif").stdout)
    assert [r["ruleId"] for r in sarif["runs"][0]["results"]] == ["images.digest"]

    # Fixed: the result goes. Deleted: the report goes with the last judged workload.
    apply(cp, workload("Deployment", "legacy", namespace, GOOD)).check_returncode()
    results_become(cp, namespace, [])
    apply(cp, workload("Deployment", "legacy", namespace, BAD)).check_returncode()
    results_become(cp, namespace, [("Deployment/legacy", policy_name, "images.digest", "fail")])
    cp.kubectl("-n", namespace, "delete", "deployment", "legacy", "clean", check=True)
    eventually(lambda: True if report(cp, namespace) is None else None, "the report deleted")


def inference_service(name: str, namespace: str, uri: str) -> dict[str, Any]:
    """A custom predictor whose model KServe's storage initializer downloads from STORAGE_URI
    (one naming a model format would need a ServingRuntime)."""
    body = workload("InferenceService", name, namespace, GOOD)
    body["spec"]["predictor"]["containers"][0]["env"] = [{"name": "STORAGE_URI", "value": uri}]
    return body


def approved_model(name: str, uri: str, revoked: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ApprovedModel",
        "metadata": {"name": name},
        "spec": {"model": "fraud", "version": "3", "uris": [uri], "revoked": revoked},
    }


def test_revoking_an_approval_turns_its_inference_service_into_a_failure(
    control_plane: Cluster, monitor: MlgateProcess, namespace: str, policy_name: str
) -> None:
    cp = control_plane
    uri = f"s3://models/{namespace}/fraud/v3"
    approval = f"fraud-{uuid.uuid4().hex[:8]}"
    apply(cp, approved_model(approval, uri)).check_returncode()
    try:
        apply(cp, policy_doc(policy_name, namespace, models={"requireApproved": True}))
        wait_policy(cp, policy_name)
        apply(cp, inference_service("fraud", namespace, uri)).check_returncode()
        eventually(
            lambda: True if (report(cp, namespace) or {}).get("summary", {}).get("pass") else None,
            "the InferenceService counted as passing",
        )
        assert results(cp, namespace) == []
        apply(cp, approved_model(approval, uri, revoked=True)).check_returncode()
        results_become(
            cp, namespace, [("InferenceService/fraud", policy_name, "models.approval", "fail")]
        )
    finally:
        cp.kubectl("delete", "approvedmodel", approval, "--ignore-not-found")


def test_the_report_never_grows_past_its_bound(
    control_plane: Cluster, monitor: MlgateProcess, namespace: str, policy_name: str
) -> None:
    cp = control_plane
    count = MAX_RESULTS + 3
    apply(cp, *(workload("Pod", f"bad-{i}", namespace, BAD) for i in range(count)))
    apply(cp, policy_doc(policy_name, namespace, images={"requireDigest": True}))
    wait_policy(cp, policy_name)

    def full() -> dict[str, Any] | None:
        found = report(cp, namespace)
        return found if found and found["summary"]["fail"] == count else None

    found = eventually(full, f"{count} failures summarised")
    assert len(found["results"]) == MAX_RESULTS
    assert found["metadata"]["annotations"]["mlgate.io/results-omitted"] == str(count - MAX_RESULTS)


def test_kinds_the_cluster_does_not_serve_are_skipped_then_picked_up(
    control_plane: Cluster, monitor: MlgateProcess, namespace: str, policy_name: str
) -> None:
    """The audit survives 404s from groups the apiserver does not serve (plain-text bodies),
    and judges their kinds once the CRDs are installed (every pass lists them)."""
    cp = control_plane
    assert f"mlgate_audit_kinds_unserved {len(_crds(ABSENT_GROUP))}.0" in monitor.metrics()
    apply(cp, workload("Deployment", "legacy", namespace, BAD)).check_returncode()
    apply(cp, policy_doc(policy_name, namespace, "Audit", images={"requireDigest": True}))
    wait_policy(cp, policy_name)
    results_become(cp, namespace, [("Deployment/legacy", policy_name, "images.digest", "fail")])

    _install(cp, _crds(ABSENT_GROUP))
    eventually(
        lambda: (
            True
            if apply(cp, workload("RayCluster", "ray", namespace, BAD)).returncode == 0
            else None
        ),
        "the RayCluster CRD served",
    )
    results_become(
        cp,
        namespace,
        [
            ("Deployment/legacy", policy_name, "images.digest", "fail"),
            ("RayCluster/ray", policy_name, "images.digest", "fail"),
        ],
    )
    assert "mlgate_audit_kinds_unserved 0.0" in monitor.metrics()
