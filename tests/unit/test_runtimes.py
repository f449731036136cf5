"""Runtimes and configs: judged on their own, and merged into the workloads that name them as
KServe and Kubeflow Trainer merge them. Upstream manifests (tests/data/upstream) where they
exist; variants written here where a case needs one."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.api.compile import compile_policy, parse_resource
from mlgate.api.models import ClusterMLPolicy
from mlgate.engine.decisions import Rule
from mlgate.engine.effective import effective_view
from mlgate.engine.evaluate import evaluate
from mlgate.engine.gpu import workload_demand
from mlgate.engine.policy import CompiledPolicy, Facts
from mlgate.engine.runtimes import RuntimeCatalog, merge
from mlgate.engine.serving import select_runtime
from mlgate.engine.workloads import UNBOUNDED, ContainerKind, WorkloadView, lookup, view
from mlgate.run import LEDGER_GPU_RULES
from tests.unit.factories import policy

REALWORLD = Path(__file__).resolve().parents[1] / "data" / "upstream"
KSERVE = REALWORLD / "kserve+kserve"
TRAINER = REALWORLD / "kubeflow+trainer"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def docs(*paths: Path) -> Iterator[dict[str, Any]]:
    for path in paths:
        files = sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            yield from (d for d in yaml.safe_load_all(file.read_text()) if isinstance(d, dict))


def one(path: Path) -> dict[str, Any]:
    (doc,) = docs(path)
    return doc


UPSTREAM = RuntimeCatalog.of(
    docs(KSERVE / "config" / "runtimes", TRAINER / "manifests" / "base" / "runtimes")
)


def effective(obj: dict[str, Any], catalog: RuntimeCatalog = UPSTREAM) -> WorkloadView:
    item = effective_view(obj, catalog)
    assert isinstance(item, WorkloadView)
    return item


def images(item: WorkloadView) -> list[tuple[str, str | None, str]]:
    return [(p.role, c.image, c.image_path) for p in item.pods for c in p.containers]


def gpus(item: WorkloadView) -> int:
    return workload_demand(LEDGER_GPU_RULES, item)[0]


def compiled(**spec: Any) -> tuple[CompiledPolicy, ...]:
    resource = parse_resource(policy(**spec))
    assert isinstance(resource, ClusterMLPolicy)
    return (compile_policy(resource),)


# ---------------------------------------------------------------------------------------------
# Runtime kinds judged on their own


def test_every_upstream_runtime_is_a_supported_kind_with_its_images() -> None:
    runtimes = list(docs(KSERVE / "config" / "runtimes", TRAINER / "manifests" / "base"))
    runtimes = [r for r in runtimes if r["kind"].endswith(("ServingRuntime", "TrainingRuntime"))]
    assert len(runtimes) >= 20
    for obj in runtimes:
        item = view(obj)
        assert isinstance(item, WorkloadView), obj["metadata"]["name"]
        assert [c.image for p in item.pods for c in p.containers if c.image], obj["metadata"]
        assert not item.runs_pods and gpus(item) == 0


def test_multinode_serving_runtime_has_a_worker_pod() -> None:
    item = view(one(KSERVE / "config/runtimes/kserve-huggingfaceserver-multinode.yaml"))
    assert isinstance(item, WorkloadView)
    assert [(p.path, p.role) for p in item.pods] == [
        ("spec", "runtime"),
        ("spec.workerSpec", "worker"),
    ]


def test_a_runtime_breaks_per_pod_rules_but_never_counts_gpus_or_needs_a_model() -> None:
    runtime = one(TRAINER / "docs/user-guides/jax-tpu.md.block0.yaml")  # 4 TPUs per node
    policies = compiled(
        gpu={
            "maxPerPod": 2,
            "maxPerWorkload": 1,
            "namespaceQuota": 1,
            "resources": ["google.com/tpu"],
        },
        models={"requireReference": True},
        images={"allowedRegistries": ["registry.example.com/ml/*"]},
    )
    rules = {v.rule for v in evaluate(policies, runtime, Facts(now=NOW)).violations}
    assert rules == {Rule.GPU_MAX_PER_POD, Rule.IMAGES_REGISTRY}


def test_cluster_storage_container_is_an_init_container() -> None:
    csc = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": "s3-downloader"},
        "spec": {
            "container": {"name": "storage-initializer", "image": "evil.io/dl:1"},
            "supportedUriFormats": [{"prefix": "s3://"}],
        },
    }
    item = view(csc)
    assert isinstance(item, WorkloadView)
    assert [(c.kind, c.image, c.image_path) for c in item.pods[0].containers] == [
        (ContainerKind.INIT, "evil.io/dl:1", "spec.container.image")
    ]
    spec = lookup("serving.kserve.io/v1alpha1", "ClusterStorageContainer")
    assert spec is not None and spec.cluster_scoped


# ---------------------------------------------------------------------------------------------
# InferenceService + ServingRuntime


def sklearn() -> dict[str, Any]:
    return one(KSERVE / "docs/samples/v1beta1/sklearn/v1/sklearn.yaml")


def test_upstream_inference_service_runs_the_runtime_kserve_selects() -> None:
    item = effective(sklearn())
    runtime = one(KSERVE / "config/runtimes/kserve-sklearnserver.yaml")
    image = runtime["spec"]["containers"][0]["image"]
    assert images(item) == [
        ("predictor", image, "ClusterServingRuntime/kserve-sklearnserver:spec.containers[0].image")
    ]
    assert [r.value for r in item.model_refs] == [
        "gs://kfserving-examples/models/sklearn/1.0/model"
    ]


def test_the_predictors_own_container_fields_override_the_runtime() -> None:
    isvc = sklearn()
    isvc["spec"]["predictor"] = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "model": {
            "modelFormat": {"name": "sklearn"},
            "image": "evil.io/sklearn:1",
            "resources": {"limits": {"nvidia.com/gpu": 2}},
        },
    }
    item = effective(isvc)
    assert images(item) == [("predictor", "evil.io/sklearn:1", "spec.predictor.model.image")]
    assert gpus(item) == 6


def test_runtime_version_retags_the_runtime_image_unless_it_is_pinned() -> None:
    isvc = sklearn()
    isvc["spec"]["predictor"]["sklearn"]["runtimeVersion"] = "latest"
    (container,) = effective(isvc).pods[0].containers
    assert container.image is not None and container.image.endswith("sklearnserver:latest")
    assert container.image_path == "spec.predictor.sklearn.runtimeVersion"
    pinned = copy.deepcopy(dict(UPSTREAM.objects))
    key = ("ClusterServingRuntime", "", "kserve-sklearnserver")
    pinned[key]["spec"]["containers"][0]["image"] = "reg.io/sk@sha256:" + "a" * 64
    (container,) = effective(isvc, RuntimeCatalog(pinned)).pods[0].containers
    assert container.image == "reg.io/sk@sha256:" + "a" * 64


def runtime(
    name: str, namespace: str = "", priority: int | None = None, **spec: Any
) -> dict[str, Any]:
    fmt: dict[str, Any] = {"name": "sklearn", "autoSelect": True}
    if priority is not None:
        fmt["priority"] = priority
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime" if namespace else "ClusterServingRuntime",
        "metadata": {"name": name, "namespace": namespace} if namespace else {"name": name},
        "spec": {
            "supportedModelFormats": [fmt],
            "containers": [{"name": "kserve-container", "image": f"reg.io/{name}:1"}],
            **spec,
        },
    }


def selected(model: dict[str, Any], *runtimes: dict[str, Any]) -> str:
    found = select_runtime(model, "ml", False, RuntimeCatalog.of(runtimes))
    return found if isinstance(found, str) else found[0][2]


SKLEARN = {"modelFormat": {"name": "sklearn"}}


def test_selection_prefers_namespaced_runtimes_then_priority() -> None:
    assert selected(SKLEARN, runtime("cluster", priority=9), runtime("mine", "ml")) == "mine"
    assert selected(SKLEARN, runtime("low", priority=1), runtime("high", priority=5)) == "high"
    assert selected(SKLEARN, runtime("none"), runtime("some", priority=1)) == "some"
    # another namespace's runtime is not a candidate
    assert selected(SKLEARN, runtime("theirs", "other"), runtime("cluster")) == "cluster"


def test_selection_skips_disabled_unselectable_and_wrong_protocol_runtimes() -> None:
    off = runtime("off", priority=9, disabled=True)
    manual = runtime("manual", priority=9)
    manual["spec"]["supportedModelFormats"][0]["autoSelect"] = False
    grpc = runtime("grpc", priority=9, protocolVersions=["grpc-v2"])
    assert selected(SKLEARN, off, manual, grpc, runtime("plain")) == "plain"
    # named explicitly, a runtime without autoSelect is fine; a disabled one is refused
    assert selected({**SKLEARN, "runtime": "manual"}, manual) == "manual"
    assert "is disabled" in selected({**SKLEARN, "runtime": "off"}, off)


def test_a_missing_runtime_is_a_finding_that_names_it() -> None:
    isvc = sklearn()
    isvc["spec"]["predictor"]["model"] = {
        "modelFormat": {"name": "sklearn"},
        "runtime": "kserve-nowhere",
    }
    del isvc["spec"]["predictor"]["sklearn"]
    decision = evaluate(compiled(gpu={"maxPerPod": 8}), isvc, Facts(now=NOW, runtimes=UPSTREAM))
    (violation,) = decision.violations
    assert not decision.allowed
    assert violation.rule is Rule.WORKLOAD_RUNTIME and violation.path == "spec.predictor.model"
    assert "'kserve-nowhere'" in violation.message
    # offline, without any runtime documents, the same
    empty = Facts(now=NOW, runtimes=RuntimeCatalog())
    assert not evaluate(compiled(gpu={"maxPerPod": 8}), sklearn(), empty).allowed


def test_storage_initializer_comes_from_the_matching_cluster_storage_container() -> None:
    csc = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": "gcs"},
        "spec": {
            "container": {"name": "storage-initializer", "image": "evil.io/dl:1"},
            "supportedUriFormats": [{"regex": "^gs://"}],
        },
    }
    catalog = RuntimeCatalog.of([*UPSTREAM.objects.values(), csc])
    item = effective(sklearn(), catalog)
    assert images(item)[0] == (
        "predictor",
        "evil.io/dl:1",
        "ClusterStorageContainer/gcs:spec.container.image",
    )
    csc["spec"]["supportedUriFormats"] = [{"prefix": "s3://"}]
    assert (
        len(images(effective(sklearn(), RuntimeCatalog.of([*UPSTREAM.objects.values(), csc])))) == 1
    )


# --- counting as KServe does ------------------------------------------------------------------


def test_serverless_predictors_without_max_replicas_are_unbounded() -> None:
    isvc = sklearn()
    isvc["spec"]["predictor"]["sklearn"]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    item = effective(isvc)
    assert item.pods[0].count == UNBOUNDED
    decision = evaluate(
        compiled(gpu={"maxPerWorkload": 4}), isvc, Facts(now=NOW, runtimes=UPSTREAM)
    )
    (violation,) = decision.violations
    assert "set maxReplicas" in violation.message
    isvc["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "RawDeployment"}
    assert effective(isvc).pods[0].count == 1
    isvc["metadata"]["annotations"] = {}
    isvc["spec"]["predictor"]["maxReplicas"] = 3
    assert gpus(effective(isvc)) == 3


def multinode(tensor: int, pipeline: int, worker_gpus: int | None = None) -> dict[str, Any]:
    worker: dict[str, Any] = {"tensorParallelSize": tensor, "pipelineParallelSize": pipeline}
    if worker_gpus is not None:
        worker["containers"] = [
            {"name": "worker-container", "resources": {"limits": {"nvidia.com/gpu": worker_gpus}}}
        ]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "llama",
            "namespace": "ml",
            "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
        },
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "huggingface"},
                    "storageUri": "hf://meta-llama/x",
                },
                "workerSpec": worker,
            }
        },
    }


@pytest.mark.parametrize(
    ("tensor", "pipeline", "worker_gpus", "pods", "total"),
    [
        (4, 2, 4, [1, 1], 8),  # head 4 + one 4-GPU worker
        (2, 2, None, [1, 3], 4),  # no GPUs declared: one per node, tensor x pipeline nodes
        (8, 1, 4, [1, 1], 8),
    ],
)
def test_multinode_gpus_come_from_tensor_and_pipeline_parallelism(
    tensor: int, pipeline: int, worker_gpus: int | None, pods: list[int], total: int
) -> None:
    item = effective(multinode(tensor, pipeline, worker_gpus))
    image = "huggingfaceserver-gpu:replace"  # kserve-huggingfaceserver-multinode's
    assert [(p.role, p.count) for p in item.pods] == list(
        zip(["predictor", "worker"], pods, strict=True)
    )
    # KServe tags the head's GPU build of a huggingfaceserver runtime with -gpu
    assert [c.image for p in item.pods for c in p.containers] == [f"{image}-gpu", image]
    assert gpus(item) == total


def test_multinode_predictor_on_a_single_node_runtime_is_unresolved() -> None:
    isvc = multinode(2, 2)
    isvc["spec"]["predictor"]["model"]["runtime"] = "kserve-huggingfaceserver"
    (problem,) = effective(isvc).unresolved
    assert problem.path == "spec.predictor.workerSpec" and "no workerSpec" in problem.message


def test_mp_executor_backend_gives_each_node_tensor_parallel_gpus() -> None:
    catalog = copy.deepcopy(dict(UPSTREAM.objects))
    key = ("ClusterServingRuntime", "", "kserve-huggingfaceserver-multinode")
    catalog[key]["metadata"]["annotations"] = {}
    catalog[key]["spec"]["annotations"] = {"multinode/executor-backend": "mp"}
    item = effective(multinode(2, 3), RuntimeCatalog(catalog))
    assert [(p.role, p.count) for p in item.pods] == [("predictor", 1), ("worker", 2)]
    assert gpus(item) == 6


# ---------------------------------------------------------------------------------------------
# LLMInferenceService + LLMInferenceServiceConfigs


def config(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha2",
        "kind": "LLMInferenceServiceConfig",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


LLM_CONFIGS = [
    config(
        "kserve-config-llm-template",
        "kserve",
        template={
            "containers": [
                {
                    "name": "main",
                    "image": "ghcr.io/llm-d/vllm:0.3",
                    "env": [{"name": "HF_HOME", "value": "/models"}],
                }
            ]
        },
    ),
    config(
        "kserve-config-llm-scheduler",
        "kserve",
        router={
            "scheduler": {
                "template": {"containers": [{"name": "main", "image": "ghcr.io/llm-d/epp:0.3"}]}
            }
        },
    ),
    config(
        "llmisvc-intelligent-inference-scheduling",
        "ml",
        router={
            "scheduler": {"template": {"containers": [{"name": "main", "image": "evil.io/epp:1"}]}}
        },
    ),
]


def gpt_oss() -> dict[str, Any]:
    obj = one(KSERVE / "docs/samples/llmisvc/e2e-gpt-oss/inference_default.yaml")
    obj["metadata"]["namespace"] = "ml"
    return obj


def test_llm_service_takes_its_image_from_kserves_default_config_and_base_refs() -> None:
    item = effective(gpt_oss(), RuntimeCatalog.of(LLM_CONFIGS))
    template = "LLMInferenceServiceConfig/kserve/kserve-config-llm-template"
    ours = "LLMInferenceServiceConfig/ml/llmisvc-intelligent-inference-scheduling"
    assert images(item) == [
        ("main", "ghcr.io/llm-d/vllm:0.3", f"{template}:spec.template.containers[0].image"),
        # the service's own baseRef comes after KServe's default scheduler config and wins
        (
            "scheduler",
            "evil.io/epp:1",
            f"{ours}:spec.router.scheduler.template.containers[0].image",
        ),
    ]
    assert gpus(item) == 2  # 2 replicas x 1 GPU, from the service
    assert [r.value for r in item.model_refs] == ["pvc://gpt-oss-20b-pvc"]
    assert item.unresolved == ()


def test_llm_service_missing_configs_are_named() -> None:
    item = effective(gpt_oss(), RuntimeCatalog.of(LLM_CONFIGS[:1]))
    (problem,) = item.unresolved
    assert "kserve-config-llm-scheduler" in problem.message
    assert "llmisvc-intelligent-inference-scheduling" in problem.message


def test_llm_config_may_supply_the_model() -> None:
    base = config("with-model", "ml", model={"uri": "hf://someone/unvetted"})
    obj = gpt_oss()
    del obj["spec"]["model"]["uri"]
    obj["spec"]["baseRefs"] = [{"name": "with-model"}]
    item = effective(obj, RuntimeCatalog.of([*LLM_CONFIGS, base]))
    assert [(r.value, r.path) for r in item.model_refs] == [
        ("hf://someone/unvetted", "LLMInferenceServiceConfig/ml/with-model:spec.model.uri")
    ]


# ---------------------------------------------------------------------------------------------
# TrainJob + TrainingRuntime


def test_upstream_train_job_runs_its_image_on_the_runtimes_nodes() -> None:
    job = one(TRAINER / "examples/flux/lammps-train-gpus.yaml")
    flux = one(TRAINER / "examples/flux/flux-runtime.yaml")
    item = effective(job, RuntimeCatalog.of([*UPSTREAM.objects.values(), flux]))
    assert [(p.role, p.count) for p in item.pods] == [("node", 2)]
    assert images(item) == [
        # Trainer's Flux plugin injects its installer with the trainer's FLUX_VIEW_IMAGE
        ("node", "ghcr.io/converged-computing/flux-view-ubuntu:tag-jammy", "spec.trainer.env[1]"),
        ("node", "ghcr.io/flux-framework/tutorials:gpu-lammps-hwloc", "spec.trainer.image"),
    ]
    assert gpus(item) == 2


def test_train_job_without_its_own_image_runs_the_runtimes() -> None:
    job = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "t", "namespace": "ml"},
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {"numNodes": 3, "resourcesPerNode": {"limits": {"nvidia.com/gpu": 2}}},
        },
    }
    item = effective(job)
    runtime = UPSTREAM.objects[("ClusterTrainingRuntime", "", "torch-distributed")]
    prefix = "ClusterTrainingRuntime/torch-distributed:spec.template.spec.replicatedJobs[0]"
    (pod,) = item.pods
    (container,) = pod.containers
    assert pod.count == 3 and gpus(item) == 6
    job["spec"]["trainer"]["numNodes"] = "40"  # an unvalidated string still counts as 40
    assert effective(job).pods[0].count == 40
    node = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert container.image == node["spec"]["containers"][0]["image"]
    assert container.image_path == f"{prefix}.template.spec.template.spec.containers[0].image"
    assert container.resources_path == "spec.trainer.resourcesPerNode"


def test_runtime_patches_and_older_pod_spec_overrides_reach_the_pods() -> None:
    job = one(TRAINER / "docs/operator-guides/runtime-patches.md.block0.yaml")
    job["metadata"]["namespace"] = "ml"
    torch = copy.deepcopy(UPSTREAM.objects[("ClusterTrainingRuntime", "", "torch-distributed")])
    torch["metadata"]["name"] = "pytorch-distributed-gpu"
    catalog = RuntimeCatalog.of([torch])
    (pod,) = effective(job, catalog).pods
    assert pod.spec["nodeSelector"] == {"accelerator": "nvidia-tesla-v100"}
    assert pod.containers[0].image == "docker.io/custom-training"
    older = {
        **job,
        "spec": {
            "runtimeRef": job["spec"]["runtimeRef"],
            "podSpecOverrides": [
                {
                    "targetJobs": [{"name": "node"}],
                    "containers": [{"name": "node", "env": [{"name": "MODEL_URI", "value": "s3://x/y"}]}],
                }
            ],
        },
    }  # fmt: skip
    (pod,) = effective(older, catalog).pods
    assert [(e.name, e.value, e.path) for e in pod.containers[0].env] == [
        ("MODEL_URI", "s3://x/y", "spec.podSpecOverrides[0].containers[0].env[0]")
    ]


def test_missing_training_runtime_is_named() -> None:
    job = one(TRAINER / "docs/operator-guides/runtime-patches.md.block0.yaml")
    (problem,) = effective(job).unresolved
    assert problem.path == "spec.runtimeRef" and "'pytorch-distributed-gpu'" in problem.message


# ---------------------------------------------------------------------------------------------
# Strategic merge


def test_merge_patches_named_lists_by_name_and_replaces_others() -> None:
    base = {"containers": [{"name": "a", "image": "x", "args": ["1"]}], "n": {"k": 1}}
    patch = {"containers": [{"name": "a", "args": ["2"]}, {"name": "b"}], "n": {"j": 2}}
    assert merge(base, patch) == {
        "containers": [{"name": "a", "image": "x", "args": ["2"]}, {"name": "b"}],
        "n": {"k": 1, "j": 2},
    }
    assert merge({"a": 1, "b": 2}, {"a": None}) == {"b": 2}


# ---------------------------------------------------------------------------------------------
# Counting as the other operators do


CRON_JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "CronJob",
    "metadata": {"name": "retrain", "namespace": "ml"},
    "spec": {
        "schedule": "*/5 * * * *",
        "jobTemplate": {
            "spec": {
                "parallelism": 2,
                "template": {"spec": {"containers": [{"name": "t", "image": "reg.io/t:1"}]}},
            }
        },
    },
}


@pytest.mark.parametrize(
    ("policy", "pods"), [(None, UNBOUNDED), ("Allow", UNBOUNDED), ("Forbid", 2), ("Replace", 2)]
)
def test_cron_job_runs_overlap_unless_its_concurrency_policy_forbids_them(
    policy: str | None, pods: int
) -> None:
    obj = copy.deepcopy(CRON_JOB)
    if policy is not None:
        obj["spec"]["concurrencyPolicy"] = policy
    item = view(obj)
    assert isinstance(item, WorkloadView)
    assert [p.count for p in item.pods] == [pods]


def test_unbounded_cron_job_is_told_to_forbid_overlaps() -> None:
    obj = copy.deepcopy(CRON_JOB)
    container = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    (violation,) = evaluate(compiled(gpu={"maxPerWorkload": 8}), obj, Facts(now=NOW)).violations
    assert "concurrencyPolicy Forbid or Replace" in violation.message


def test_kuberay_autoscaler_image_is_judged_where_it_is_declared() -> None:
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "r", "namespace": "ml"},
        "spec": {
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {"image": "evil.io/autoscaler:1"},
            "headGroupSpec": {
                "template": {
                    "spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2"}]}
                }
            },
        },
    }
    item = view(cluster)
    assert isinstance(item, WorkloadView)
    assert [(c.image, c.image_path) for c in item.pods[0].containers] == [
        ("rayproject/ray:2", "spec.headGroupSpec.template.spec.containers[0].image"),
        ("evil.io/autoscaler:1", "spec.autoscalerOptions.image"),
    ]
    cluster["spec"]["enableInTreeAutoscaling"] = False  # no autoscaler is injected then
    item = view(cluster)
    assert isinstance(item, WorkloadView)
    assert len(item.pods[0].containers) == 1


def test_upstream_triton_predictor_speaks_v2_and_takes_its_runtime_version() -> None:
    isvc = one(KSERVE / "docs/samples/v1beta1/triton/torchscript/torch_transformer.yaml")
    item = effective(isvc)
    (predictor, transformer) = item.pods
    (server,) = predictor.containers
    assert server.image is not None and server.image.endswith("tritonserver:20.10-py3")
    assert server.image_path == "spec.predictor.triton.runtimeVersion"
    assert [(e.name, e.path) for e in server.env] == [
        ("OMP_NUM_THREADS", "spec.predictor.triton.env[0]")
    ]
    assert [c.image for c in transformer.containers] == ["kserve/image-transformer:latest"]
