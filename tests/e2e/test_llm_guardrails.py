"""The llm rules behind the real kube-apiserver: an LLM is refused until its guardrail exists,
then admitted; Services that reach it around the guardrail are refused; other workloads pass."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.devcluster import Cluster
from mlgate.devrun import MlgateProcess
from tests.e2e.test_admission import apply, mlgate, policy_doc, wait_policy
from tests.e2e.test_runtimes import eventually_admitted

__all__ = ["mlgate"]  # the module-scoped fixture, shared with the admission tests

DATA = Path(__file__).resolve().parents[1] / "data" / "llm"


@pytest.fixture
def guarded(control_plane: Cluster, mlgate: MlgateProcess, namespace: str) -> Iterator[str]:
    name = f"llm-{uuid.uuid4().hex[:8]}"
    llm = {"requireGuardrail": {}, "noDirectExposure": True}
    apply(control_plane, policy_doc(name, namespace, llm=llm)).check_returncode()
    wait_policy(control_plane, name)
    yield name
    control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def sample(name: str, namespace: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DATA / name).read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    return docs


def nemo(namespace: str, base_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps.nvidia.com/v1alpha1",
        "kind": "NemoGuardrail",
        "metadata": {"name": "guardrail", "namespace": namespace},
        "spec": {"nimEndpoint": {"baseURL": base_url}, "replicas": 1},
    }


def test_llm_waits_for_its_guardrail_and_is_never_exposed_around_it(
    control_plane: Cluster, guarded: str, namespace: str
) -> None:
    deployment, svc = sample("vllm-deployment.yaml", namespace)
    denied = apply(control_plane, svc, deployment)
    assert denied.returncode != 0
    assert "llm.requireGuardrail" in denied.stderr
    assert "AML.M0020" in denied.stderr and "OWASP LLM01" in denied.stderr
    assert "apply this again" in denied.stderr  # the retryable denial names what is missing

    guard = nemo(namespace, f"http://mistral-7b.{namespace}.svc.cluster.local/v1")
    apply(control_plane, guard).check_returncode()
    apply(control_plane, deployment).check_returncode()

    public = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "mistral-public", "namespace": namespace},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "mistral-7b"},
            "ports": [{"port": 80}],
        },
    }
    exposed = apply(control_plane, public)
    assert exposed.returncode != 0
    assert "llm.noDirectExposure" in exposed.stderr


def test_inference_service_admitted_once_an_orchestrator_guards_it(
    control_plane: Cluster, guarded: str, namespace: str
) -> None:
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "llama", "namespace": namespace},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"},
                                         "args": ["--model_id=meta-llama/Llama-3.1-8B"]}}},
    }  # fmt: skip
    # The runtime KServe would select for the format, as its install provides it.
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "kserve-huggingfaceserver", "namespace": namespace},
        "spec": {
            "supportedModelFormats": [{"name": "huggingface", "version": "1", "autoSelect": True}],
            "protocolVersions": ["v2", "v1"],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "kserve/huggingfaceserver:v0.15.0",
                    "args": ["--model_name={{.Name}}"],
                }
            ],
        },
    }
    apply(control_plane, runtime).check_returncode()
    assert "llm.requireGuardrail" in apply(control_plane, isvc).stderr
    orchestrator = {
        "apiVersion": "trustyai.opendatahub.io/v1alpha1",
        "kind": "GuardrailsOrchestrator",
        "metadata": {"name": "gorch", "namespace": namespace},
        "spec": {"autoConfig": {"inferenceServiceToGuardrail": "llama"}, "replicas": 1},
    }
    apply(control_plane, orchestrator).check_returncode()
    eventually_admitted(control_plane, isvc)  # once the watch caches hold runtime and guardrail


def test_other_workloads_and_their_load_balancers_are_untouched(
    control_plane: Cluster, guarded: str, namespace: str
) -> None:
    web, web_lb, job = sample("not-llm.yaml", namespace)
    apply(control_plane, web, web_lb, job).check_returncode()


def test_kaito_workspace_is_routed_to_its_llm_rules(
    control_plane: Cluster, guarded: str, namespace: str
) -> None:
    (workspace,) = sample("kaito-workspace.yaml", namespace)
    denied = apply(control_plane, workspace)
    assert denied.returncode != 0 and "llm.requireGuardrail" in denied.stderr
    guard = nemo(namespace, f"http://{workspace['metadata']['name']}.{namespace}.svc:80/v1")
    apply(control_plane, guard).check_returncode()
    apply(control_plane, workspace).check_returncode()
