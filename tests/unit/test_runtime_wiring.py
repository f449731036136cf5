"""Runtimes reach the engine from every shell: `mlgate check` (documents), the webhook (the
operator's watch cache), the audit (the same cache, woken on change); and the webhook routes the
cluster-scoped runtime kinds."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.controller.audit import Auditor
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.runtimes import RuntimeCache
from mlgate.controller.state import PolicyState
from mlgate.devrun import stand_in_crds
from mlgate.engine.gpu import workload_amounts
from mlgate.engine.workloads import WorkloadView, view
from mlgate.run import LEDGER_GPU_RULES
from mlgate.webhook.admission import Admission, Config, Outcome
from mlgate.webhook.config import workload_rules
from mlgate.webhook.review import parse_review
from tests.unit.factories import GOOD_IMAGE, policy, review
from tests.unit.test_check import run_cli

GOVERNED = {"mlgate.io/governed": "true"}
IMAGES = {"allowedRegistries": ["registry.example.com/ml/*"], "requireDigest": True}
CLUSTER_KINDS = {"clusterservingruntimes", "clusterstoragecontainers", "clustertrainingruntimes"}


def serving_runtime(image: str = GOOD_IMAGE, name: str = "sklearn-rt") -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": name},
        "spec": {
            "supportedModelFormats": [{"name": "sklearn", "autoSelect": True}],
            "containers": [{"name": "kserve-container", "image": image}],
        },
    }


def inference_service(namespace: str = "ml-prod") -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "fraud", "namespace": namespace},
        "spec": {"predictor": {"maxReplicas": 2, "model": {"modelFormat": {"name": "sklearn"}}}},
    }


# ---------------------------------------------------------------------------------------------
# Routing


def test_cluster_scoped_runtimes_get_cluster_scoped_rules_and_stand_ins() -> None:
    scopes = {r: rule["scope"] for rule in workload_rules() for r in rule["resources"]}
    cluster_wide = {r for r, scope in scopes.items() if scope == "Cluster"}
    assert cluster_wide == CLUSTER_KINDS | {"clusterworkflowtemplates"}
    assert scopes["servingruntimes"] == scopes["trainingruntimes"] == "Namespaced"
    assert scopes["llminferenceserviceconfigs"] == "Namespaced"
    crds = {c["spec"]["names"]["plural"]: c["spec"]["scope"] for c in stand_in_crds()}
    # Stand-ins also cover what the llm rules read, cluster-wide guardrail policies among them.
    assert {p for p, scope in crds.items() if scope == "Cluster"} == cluster_wide | {
        "clusterguardrailpolicies"
    }


# ---------------------------------------------------------------------------------------------
# mlgate check


def write(tmp_path: Path, name: str, *objs: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(objs))
    return path


def test_check_names_the_missing_runtime_and_merges_the_one_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policies = write(tmp_path, "p.yaml", policy(images=IMAGES))
    isvc = write(tmp_path, "isvc.yaml", inference_service())
    run = run_cli(capsys, "check", "-p", policies, isvc)
    assert run.code == 1
    assert "workload.runtime at spec.predictor.model" in run.out
    assert "model format sklearn" in run.out
    # given with --runtimes, the runtime is merged in but not itself a result
    runtimes = write(tmp_path, "rt.yaml", serving_runtime("docker.io/evil/server:1"))
    run = run_cli(capsys, "check", "-p", policies, "--runtimes", runtimes, "-o", "json", isvc)
    (result,) = run.json["results"]
    paths = {v["path"] for v in result["violations"]}
    assert paths == {"ClusterServingRuntime/sklearn-rt:spec.containers[0].image"}
    # among the manifests, after the workload, it counts too and is judged itself
    both = write(tmp_path, "both.yaml", inference_service(), serving_runtime())
    run = run_cli(capsys, "check", "-p", policies, "-o", "json", both)
    assert [r["status"] for r in run.json["results"]] == ["compliant", "compliant"]


def test_check_refuses_other_documents_as_runtimes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    runtimes = write(tmp_path, "rt.yaml", inference_service())
    run = run_cli(capsys, "check", "--runtimes", runtimes, runtimes)
    assert run.code == 2
    assert "InferenceService ml-prod/fraud is not a runtime or config kind" in run.err


# ---------------------------------------------------------------------------------------------
# The webhook


def admission(cache: RuntimeCache) -> Admission:
    state = PolicyState()
    assert state.upsert(policy(images=IMAGES)).ok
    state.set_namespace("ml-prod", GOVERNED)
    config = Config(own_namespace="mlgate-system", gpu_rules=LEDGER_GPU_RULES)
    return Admission(state, GpuLedger(), config, runtimes=cache.catalog)


def judge(gate: Admission, obj: dict[str, Any], resource: str) -> Outcome:
    return asyncio.run(gate.review(parse_review(review(obj, resource=resource))))


def test_webhook_resolves_runtimes_from_the_watch_cache() -> None:
    cache = RuntimeCache()
    gate = admission(cache)
    denied = judge(gate, inference_service(), "inferenceservices")
    assert not denied.allowed and "workload.runtime" in denied.message
    cache.apply("ADDED", serving_runtime())
    assert judge(gate, inference_service(), "inferenceservices").allowed
    cache.apply("MODIFIED", serving_runtime("docker.io/evil/server:1"))
    assert "ClusterServingRuntime/sklearn-rt" in judge(gate, inference_service(), "x").message
    cache.apply("DELETED", serving_runtime())
    assert not judge(gate, inference_service(), "inferenceservices").allowed


def test_webhook_judges_a_cluster_scoped_runtime_as_in_a_governed_namespace() -> None:
    gate = admission(RuntimeCache())
    outcome = judge(gate, serving_runtime("docker.io/evil/server:1"), "clusterservingruntimes")
    assert not outcome.allowed
    assert "images.registry at spec.containers[0].image" in outcome.message
    assert judge(gate, serving_runtime(), "clusterservingruntimes").allowed


# ---------------------------------------------------------------------------------------------
# The audit


def test_a_changed_runtime_wakes_the_audit_which_judges_with_it() -> None:
    cache = RuntimeCache()
    auditor = Auditor(None, PolicyState(), "mlgate-system", lambda: True, 3600.0, runtimes=cache)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    assert auditor._facts_for(now)("ml-prod").runtimes == cache.catalog()

    async def woken() -> bool:
        pause = asyncio.create_task(auditor._pause(auditor._rules(), 3600.0))
        await asyncio.sleep(0)
        cache.apply("ADDED", serving_runtime())
        await asyncio.wait_for(pause, 5)
        return True

    assert asyncio.run(woken())
    assert auditor._facts_for(now)("ml-prod").runtimes == cache.catalog()
    assert len(cache.catalog().objects) == 1


def test_a_runtime_with_gpus_is_judged_per_pod_but_never_charged_to_a_namespace() -> None:
    """A ClusterServingRuntime runs no pod and belongs to no namespace: its GPUs count against
    per-pod limits, never as a reservation (the InferenceServices that name it are charged)."""
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": "gpu-server"},
        "spec": {
            "supportedModelFormats": [{"name": "fmt", "autoSelect": True}],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": GOOD_IMAGE,
                    "resources": {"limits": {"nvidia.com/gpu": 2}},
                }
            ],
        },
    }
    item = view(runtime)
    assert isinstance(item, WorkloadView) and not item.runs_pods
    assert workload_amounts(item) == {}
    state = PolicyState()
    assert state.upsert(policy(gpu={"maxPerPod": 1, "namespaceQuota": 1})).ok
    admission = Admission(state, GpuLedger(), Config(gpu_rules=LEDGER_GPU_RULES))
    without = copy.deepcopy(runtime)
    del without["spec"]["containers"][0]["resources"]
    update = review(runtime, "UPDATE", old=without, resource="clusterservingruntimes")
    outcome = asyncio.run(admission.review(parse_review(update)))
    assert not outcome.allowed and "gpu.maxPerPod" in outcome.message
    assert "gpu.namespaceQuota" not in outcome.message
    # Within the per-pod limit it is admitted, and nothing is reserved anywhere.
    state.upsert(policy(gpu={"maxPerPod": 2, "namespaceQuota": 1}))
    assert asyncio.run(admission.review(parse_review(update))).allowed
    assert asyncio.run(admission.budgets.all()) == []
