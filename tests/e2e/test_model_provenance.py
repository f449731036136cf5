"""Model verifiers through the real kube-apiserver: a KServe-shaped pod (storage-initializer as
KServe's pod mutator injects it) is stored with `mlgate verify-model` right after the download,
and nothing in the pod can drop or loosen it."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlgate.cli import main
from mlgate.devcluster import Cluster
from mlgate.devrun import MlgateProcess
from mlgate.provenance.artifacts import digest
from tests.e2e.test_admission import apply, policy_doc, running_mlgate, wait_policy
from tests.unit.test_provenance_files import safetensors

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_CONFIG = "mlgate-provenance-e2e"
VERIFIER_IMAGE = "registry.example.com/mlgate/mlgate@sha256:" + "e" * 64
DIGEST = "sha256:" + "d1" * 32


@pytest.fixture(scope="module")
def mlgate(
    control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlgateProcess]:
    yield from running_mlgate(
        control_plane, tmp_path_factory, WEBHOOK_CONFIG, "--verifier-image", VERIFIER_IMAGE
    )


@pytest.fixture
def verifying(control_plane: Cluster, mlgate: MlgateProcess, namespace: str) -> Iterator[str]:
    """An Enforce policy verifying downloads in this namespace, and an approval with a digest."""
    suffix = uuid.uuid4().hex[:8]
    uri = f"s3://models/fraud-{suffix}/v3"
    approval = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ApprovedModel",
        "metadata": {"name": f"fraud-{suffix}"},
        "spec": {"model": "fraud", "version": "3", "uris": [uri], "digest": DIGEST},
    }
    name = f"verify-{suffix}"
    apply(control_plane, approval).check_returncode()
    apply(
        control_plane, policy_doc(name, namespace, models={"verifyLoaded": {}})
    ).check_returncode()
    wait_policy(control_plane, name)
    yield uri
    control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")
    control_plane.kubectl("delete", "approvedmodel", f"fraud-{suffix}", "--ignore-not-found")


def kserve_pod(name: str, namespace: str, uri: str) -> dict[str, Any]:
    mount = {"name": "kserve-provision-location", "mountPath": "/mnt/models"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "initContainers": [
                {
                    "name": "storage-initializer",
                    "image": "kserve/storage-initializer:v0.15.0",
                    "args": [uri, "/mnt/models"],
                    "volumeMounts": [mount],
                }
            ],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "kserve/sklearnserver:v0.15.0",
                    "volumeMounts": [{**mount, "readOnly": True}],
                }
            ],
            "volumes": [{"name": "kserve-provision-location", "emptyDir": {}}],
        },
    }


def create(cp: Cluster, pod: dict[str, Any], timeout: float = 20.0) -> Any:
    """Create the pod, retrying while the operator has not yet indexed the new approval."""
    deadline = time.monotonic() + timeout
    while True:
        done = cp.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(pod))
        if done.returncode == 0 or "no ApprovedModel" not in done.stderr:
            return done
        if time.monotonic() > deadline:
            return done
        time.sleep(0.3)


def test_stored_pod_runs_the_verifier_right_after_the_download(
    control_plane: Cluster, verifying: str, namespace: str
) -> None:
    done = create(control_plane, kserve_pod("predictor", namespace, verifying))
    assert done.returncode == 0, done.stderr
    stored = json.loads(
        control_plane.kubectl(
            "-n", namespace, "get", "pod", "predictor", "-o", "json", check=True
        ).stdout
    )
    init = stored["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["storage-initializer", "mlgate-verify-model"]
    assert init[1]["image"] == VERIFIER_IMAGE
    assert init[1]["command"] == ["mlgate"]
    assert init[1]["args"] == ["verify-model", f"--digest={DIGEST}", "/mnt/models"]
    assert init[1]["volumeMounts"][0]["readOnly"] is True


def test_a_pod_cannot_bring_its_own_verifier_or_a_writable_model_mount(
    control_plane: Cluster, verifying: str, namespace: str
) -> None:
    pod = kserve_pod("impostor", namespace, verifying)
    pod["spec"]["initContainers"].append(
        {"name": "mlgate-verify-model", "image": "busybox:1", "command": ["true"]}
    )
    done = create(control_plane, pod)
    assert done.returncode == 0, done.stderr
    verifier = json.loads(done.stdout)["spec"]["initContainers"][1]
    assert (verifier["image"], verifier["command"]) == (VERIFIER_IMAGE, ["mlgate"])

    writer = kserve_pod("writer", namespace, verifying)
    writer["spec"]["containers"][0]["volumeMounts"][0]["readOnly"] = False
    denied = create(control_plane, writer)
    assert denied.returncode != 0
    assert "models.verifier" in denied.stderr and "writable" in denied.stderr


def test_a_download_without_an_approval_is_refused(
    control_plane: Cluster, verifying: str, namespace: str
) -> None:
    done = control_plane.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(kserve_pod("unapproved", namespace, "s3://models/unvetted")),
    )
    assert done.returncode != 0 and "no ApprovedModel" in done.stderr


def test_approve_model_applies_its_evidence_and_the_verifier_checks_that_digest(
    control_plane: Cluster,
    verifying: str,
    namespace: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = tmp_path / "sentiment"
    model.mkdir()
    (model / "config.json").write_text('{"labels": ["neg", "pos"]}')
    (model / "model.safetensors").write_bytes(safetensors({"w": [0.25, 0.75]}))
    name = f"sentiment-{uuid.uuid4().hex[:6]}"
    uri = f"s3://models/{name}"
    code = main(
        [
            "approve-model", str(model), "--version=1", f"--name={name}", f"--uri={uri}",
            "--approved-by=security-team", "--apply", f"--kubeconfig={control_plane.kubeconfig}",
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"approvedmodel.mlgate.io/{name} applied" in out
    try:
        table = control_plane.kubectl("get", "approvedmodel", name, "-o", "wide", check=True)
        header, row = table.stdout.splitlines()
        assert header.split() == [
            "NAME", "MODEL", "VERSION", "EXPIRES", "REVOKED", "SCAN", "SIGNER", "DIGEST",
            "SCANNER", "READY", "AGE",
        ]  # fmt: skip
        # Empty cells are blank: read each column where its header starts.
        starts = [m.start() for m in re.finditer(r"\S+", header)]
        ends = [*starts[1:], None]
        cells = {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}
        assert (cells["SCAN"], cells["DIGEST"], cells["SCANNER"], cells["SIGNER"]) == (
            "clean", digest(model), "picklescan", "",
        )  # fmt: skip

        done = create(control_plane, kserve_pod("sentiment", namespace, uri))
        assert done.returncode == 0, done.stderr
        verifier = json.loads(done.stdout)["spec"]["initContainers"][1]
        assert verifier["args"] == ["verify-model", f"--digest={digest(model)}", "/mnt/models"]
    finally:
        control_plane.kubectl("delete", "approvedmodel", name, "--ignore-not-found")


def test_the_verifier_fits_the_restricted_pod_security_standard(
    control_plane: Cluster, verifying: str, namespace: str
) -> None:
    control_plane.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", check=True
    )
    hardened = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod = kserve_pod("restricted", namespace, verifying)
    for container in (*pod["spec"]["initContainers"], *pod["spec"]["containers"]):
        container["securityContext"] = hardened
    done = create(control_plane, pod)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["spec"]["initContainers"][1]["name"] == "mlgate-verify-model"
