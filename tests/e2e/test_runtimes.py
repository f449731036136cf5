"""Runtimes behind the real kube-apiserver: the webhook resolves the ServingRuntime an
InferenceService will run from its watch cache, and editing the runtime makes the background
audit judge the InferenceService again with it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mlgate.devcluster import Cluster
from mlgate.devrun import MlgateProcess
from tests.e2e.test_admission import GOOD, apply, policy_doc, running_mlgate, wait_policy


@pytest.fixture(scope="module")
def mlgate(
    control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlgateProcess]:
    # An audit interval far beyond the test: only a runtime change can start the second pass.
    yield from running_mlgate(
        control_plane, tmp_path_factory, "mlgate-e2e-runtimes", "--audit-interval", "3600"
    )


def runtime(name: str, gpus: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "kserve-container", "image": GOOD}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": name},
        "spec": {
            "supportedModelFormats": [{"name": f"fmt-{name}", "autoSelect": True}],
            "containers": [container],
        },
    }


def inference_service(name: str, namespace: str, model_format: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "predictor": {
                "maxReplicas": 3,
                "model": {"modelFormat": {"name": model_format}},
            }
        },
    }


def eventually_admitted(cp: Cluster, doc: dict[str, Any], timeout: float = 20.0) -> None:
    """Until the webhook's watch cache has the runtime the workload needs."""
    deadline = time.monotonic() + timeout
    while True:
        out = apply(cp, doc)
        if out.returncode == 0:
            return
        assert time.monotonic() < deadline, out.stderr
        time.sleep(0.3)


def violations(cp: Cluster, policy: str) -> str:
    out = cp.kubectl("get", "clustermlpolicy", policy, "-o", "jsonpath={.status.violations}")
    return out.stdout.strip()


def test_webhook_resolves_runtimes_and_audit_rejudges_when_one_changes(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str
) -> None:
    name = f"rt-{uuid.uuid4().hex[:8]}"
    policy = policy_doc(
        name,
        namespace,
        images={"allowedRegistries": ["registry.example.com/ml/*"], "requireDigest": True},
        gpu={"maxPerPod": 4, "maxPerWorkload": 4},
    )
    apply(control_plane, policy).check_returncode()
    wait_policy(control_plane, name)
    try:
        # No runtime serves this format: the webhook names what is missing.
        out = apply(control_plane, inference_service("orphan", namespace, "nothing-serves-it"))
        assert out.returncode != 0
        assert "workload.runtime" in out.stderr and "nothing-serves-it" in out.stderr

        # A cluster-scoped runtime is judged itself (scope Cluster), then resolved from the cache.
        bad = runtime(name)
        bad["spec"]["containers"][0]["image"] = "docker.io/evil/server:1"
        out = apply(control_plane, bad)
        assert out.returncode != 0 and "images.registry" in out.stderr
        apply(control_plane, runtime(name)).check_returncode()
        eventually_admitted(control_plane, inference_service("served", namespace, f"fmt-{name}"))

        # Two GPUs per pod suit the runtime (it runs no pod itself) but make the admitted
        # InferenceService 3 x 2 = 6 GPUs, above 4: the audit, woken by the edit, says so.
        assert violations(control_plane, name) in ("", "0")
        apply(control_plane, runtime(name, gpus=2)).check_returncode()
        deadline = time.monotonic() + 30
        while violations(control_plane, name) != "1":
            assert time.monotonic() < deadline, (
                f"status.violations is {violations(control_plane, name)!r}; "
                f"mlgate log:\n{mlgate.log_tail()}"
            )
            time.sleep(0.5)
        # ... and a new InferenceService of that format is now denied at admission.
        out = apply(control_plane, inference_service("second", namespace, f"fmt-{name}"))
        assert out.returncode != 0 and "gpu.maxPerWorkload" in out.stderr
        assert "6 GPUs" in out.stderr
    finally:
        control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")
        control_plane.kubectl("delete", "clusterservingruntime", name, "--ignore-not-found")
