"""Every supported kind reduced to pod views: paths, counts, containers, images, model references.

Manifests are written as they appear in real clusters; the evasive ones hide images or scale where a
naive reader would not look.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.engine import hooks, views, workloads
from mlgate.engine.workloads import (
    SUPPORTED,
    UNBOUNDED,
    ContainerKind,
    ContainerView,
    EnvVar,
    ModelRef,
    PodView,
    Unsupported,
    WorkloadView,
    field,
    group_of,
    lookup,
    view,
)
from tests.unit.test_kinds_upstream import UPSTREAM_KINDS

DATA = Path(__file__).resolve().parents[1] / "data"

# ---------------------------------------------------------------------------------------------
# Helpers


def load(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def workload(obj: Any) -> WorkloadView:
    result = view(obj)
    assert isinstance(result, WorkloadView), result
    return result


def summary(w: WorkloadView) -> list[tuple[str, str, int]]:
    """(path, role, count) of every pod view, in order."""
    return [(p.path, p.role, p.count) for p in w.pods]


def containers(w: WorkloadView) -> list[tuple[str, ContainerKind, str | None]]:
    return [(c.path, c.kind, c.image) for p in w.pods for c in p.containers]


def pod(w: WorkloadView, path: str) -> PodView:
    matches = [p for p in w.pods if p.path == path]
    assert len(matches) == 1, summary(w)
    return matches[0]


def container(w: WorkloadView, path: str) -> ContainerView:
    matches = [c for p in w.pods for c in p.containers if c.path == path]
    assert len(matches) == 1, containers(w)
    return matches[0]


# ---------------------------------------------------------------------------------------------
# Manifests

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: debug-me
  namespace: team-a
  labels: {app: notebook}
  annotations:
    mlgate.io/model: fraud-detector@3
spec:
  initContainers:
  - name: fetch-weights
    image: registry.example.com/ml/fetcher:1.2
    env:
    - {name: MODEL_URI, value: "s3://models/fraud/v3"}
  - name: log-shipper
    image: docker.io/fluent/fluent-bit:3.0
    restartPolicy: Always
  containers:
  - name: notebook
    image: ghcr.io/acme/nb@sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0
    resources:
      limits: {nvidia.com/gpu: "1", memory: 16Gi}
    env:
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef: {name: hf, key: token}
    - name: EMPTY
    - name: WORKERS
      value: "4"
  ephemeralContainers:
  - name: debugger-xk2p
    image: docker.io/library/busybox:latest
    targetContainerName: notebook
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: embeddings
  namespace: search
  labels: {app.kubernetes.io/name: embeddings}
  annotations: {deployment.kubernetes.io/revision: "7"}
spec:
  replicas: 3
  selector:
    matchLabels: {app: embeddings}
  template:
    metadata:
      labels: {app: embeddings}
      annotations:
        mlgate.io/model-uri: hf://acme/embedder
        prometheus.io/scrape: "true"
    spec:
      containers:
      - name: server
        image: registry.example.com/ml/embedder:2.4.1
        ports: [{containerPort: 8080}]
        resources:
          requests: {cpu: "2", memory: 8Gi}
          limits: {nvidia.com/gpu: 1}
      - name: envoy
        image: envoyproxy/envoy:v1.30.1
"""

DAEMONSET = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: dcgm-exporter, namespace: gpu-monitoring}
spec:
  selector:
    matchLabels: {app: dcgm-exporter}
  template:
    metadata:
      labels: {app: dcgm-exporter}
    spec:
      containers:
      - name: exporter
        image: nvcr.io/nvidia/k8s/dcgm-exporter:3.3.5-3.4.0-ubuntu22.04
"""

JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: batch-scoring, namespace: risk}
spec:
  parallelism: 4
  completions: 16
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: score
        image: registry.example.com/ml/scorer:5.0
        resources:
          limits: {nvidia.com/gpu: 2}
"""

CRONJOB = """
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly-retrain, namespace: risk}
spec:
  schedule: "0 2 * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      parallelism: 2
      template:
        metadata:
          annotations: {mlgate.io/model: fraud-detector@4}
        spec:
          restartPolicy: OnFailure
          initContainers:
          - name: pull-data
            image: registry.example.com/ml/pull:1.0
          containers:
          - name: train
            image: registry.example.com/ml/train:1.0
"""

INFERENCE_SERVICE = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: fraud-detector
  namespace: risk
  annotations: {serving.kserve.io/deploymentMode: RawDeployment}
spec:
  predictor:
    minReplicas: 1
    maxReplicas: 3
    annotations: {sidecar.istio.io/inject: "false"}
    serviceAccountName: sa-models
    nodeSelector: {nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}
    model:
      modelFormat: {name: sklearn}
      runtime: kserve-sklearnserver
      storageUri: s3://models/fraud-detector/v3
      resources:
        limits: {cpu: "1", memory: 2Gi}
    initContainers:
    - name: warmup
      image: registry.example.com/ml/warmup:0.3
  transformer:
    containers:
    - name: kserve-container
      image: registry.example.com/ml/feast-transformer:0.9
      args: ["--feast_serving_url", "feast:6566"]
  explainer:
    minReplicas: 2
    art:
      type: SquareAttack
      image: docker.io/kserve/art-explainer:v0.11.0
      storageUri: gs://kfserving-examples/models/art/mnist
"""

INFERENCE_SERVICE_EVASIVE = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: llama, namespace: genai}
spec:
  predictor:
    minReplicas: 0
    nodeSelector: {image: not-a-container}
    labels: {image: not-a-container-either}
    pytorch:
      image: docker.io/evil/torchserve:latest
      storageUri: pvc://weights/llama
      resources:
        limits: {nvidia.com/gpu: "8"}
    vllm:
      image: ghcr.io/evil/vllm:latest
      storageUri: hf://evil/llama-backdoored
    storageUris:
    - uri: oci://registry.example.com/models/llama:3
      mountPath: /mnt/models/base
    - uri: s3://models/llama-lora
      mountPath: /mnt/models/lora
"""

INFERENCE_SERVICE_MULTINODE = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: llama-405b
  namespace: genai
  annotations: {serving.kserve.io/deploymentMode: RawDeployment}
spec:
  predictor:
    minReplicas: 2
    maxReplicas: 2
    model:
      modelFormat: {name: huggingface}
      storageUri: pvc://llama-405b-pvc/hf/8e3e1f5
      resources:
        limits: {nvidia.com/gpu: "8"}
    workerSpec:
      pipelineParallelSize: 3
      tensorParallelSize: 8
      containers:
      - name: worker-container
        image: registry.example.com/ml/huggingfaceserver:v0.15.0-gpu
        resources:
          limits: {nvidia.com/gpu: "8"}
"""

LLM_INFERENCE_SERVICE = """
apiVersion: serving.kserve.io/v1alpha1
kind: LLMInferenceService
metadata: {name: deepseek-r1, namespace: genai}
spec:
  model:
    uri: hf://deepseek-ai/DeepSeek-R1-0528
    name: deepseek-ai/DeepSeek-R1-0528
    lora:
      adapters:
      - name: finance
        uri: s3://adapters/finance-v2
  replicas: 2
  parallelism:
    tensor: 8
    pipeline: 4
  annotations: {mlgate.io/model: deepseek-r1@0528}
  template:
    containers:
    - name: main
      image: ghcr.io/llm-d/llm-d:v0.2.0
      resources:
        limits: {nvidia.com/gpu: "8"}
  worker:
    containers:
    - name: main
      image: ghcr.io/llm-d/llm-d:v0.2.0
      resources:
        limits: {nvidia.com/gpu: "8"}
  prefill:
    replicas: 4
    template:
      containers:
      - name: main
        image: ghcr.io/llm-d/llm-d:v0.2.0
        resources:
          limits: {nvidia.com/gpu: "1"}
  router:
    route: {}
    gateway: {}
    scheduler:
      template:
        containers:
        - name: main
          image: ghcr.io/llm-d/llm-d-inference-scheduler:v0.2.1
"""

LLM_INFERENCE_SERVICE_AUTOSCALED = """
apiVersion: serving.kserve.io/v1alpha2
kind: LLMInferenceService
metadata: {name: qwen, namespace: genai}
spec:
  model: {uri: "hf://Qwen/Qwen3-8B"}
  scaling:
    minReplicas: 1
    maxReplicas: 5
  template:
    containers:
    - name: main
      image: ghcr.io/llm-d/llm-d:v0.2.0
"""

PYTORCH_JOB = """
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {name: bert-finetune, namespace: research}
spec:
  pytorchReplicaSpecs:
    Master:
      replicas: 1
      restartPolicy: OnFailure
      template:
        metadata:
          annotations: {sidecar.istio.io/inject: "false"}
        spec:
          containers:
          - name: pytorch
            image: registry.example.com/ml/bert-train:1.4
            resources:
              limits: {nvidia.com/gpu: 4}
    Worker:
      replicas: 3
      restartPolicy: OnFailure
      template:
        spec:
          initContainers:
          - name: wait-for-master
            image: docker.io/library/alpine:3.19
          containers:
          - name: pytorch
            image: registry.example.com/ml/bert-train:1.4
            resources:
              limits: {nvidia.com/gpu: 4}
"""

PYTORCH_JOB_ELASTIC = """
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {name: elastic-imagenet, namespace: research}
spec:
  elasticPolicy:
    rdzvBackend: c10d
    minReplicas: 1
    maxReplicas: 16
    maxRestarts: 100
    metrics:
    - type: Resource
      resource:
        name: cpu
        target: {type: Utilization, averageUtilization: 80}
  pytorchReplicaSpecs:
    Worker:
      replicas: 2
      restartPolicy: OnFailure
      template:
        spec:
          containers:
          - name: pytorch
            image: registry.example.com/ml/imagenet:2.0
"""

TF_JOB = """
apiVersion: kubeflow.org/v1
kind: TFJob
metadata: {name: mnist, namespace: research}
spec:
  tfReplicaSpecs:
    Chief:
      replicas: 1
      template:
        spec:
          containers:
          - {name: tensorflow, image: registry.example.com/ml/tf-mnist:2.15}
    PS:
      replicas: 2
      template:
        spec:
          containers:
          - {name: tensorflow, image: registry.example.com/ml/tf-mnist:2.15}
    Worker:
      replicas: 4
      template:
        spec:
          containers:
          - {name: tensorflow, image: registry.example.com/ml/tf-mnist:2.15}
"""

MPI_JOB = """
apiVersion: kubeflow.org/v2beta1
kind: MPIJob
metadata: {name: horovod-resnet, namespace: research}
spec:
  slotsPerWorker: 8
  runPolicy:
    cleanPodPolicy: Running
  mpiReplicaSpecs:
    Launcher:
      replicas: 1
      template:
        spec:
          containers:
          - name: launcher
            image: docker.io/horovod/horovod:0.28.1
            command: [mpirun, -np, "16", python, train.py]
    Worker:
      replicas: 2
      template:
        spec:
          containers:
          - name: worker
            image: docker.io/horovod/horovod:0.28.1
            resources:
              limits: {nvidia.com/gpu: 8}
"""

TRAIN_JOB = """
apiVersion: trainer.kubeflow.org/v1alpha1
kind: TrainJob
metadata: {name: llama-sft, namespace: research}
spec:
  runtimeRef:
    name: torch-distributed
  initializer:
    dataset:
      storageUri: hf://tatsu-lab/alpaca
    model:
      storageUri: hf://meta-llama/Llama-3.2-1B-Instruct
  trainer:
    image: registry.example.com/ml/sft:0.4
    command: [torchrun, train.py]
    numNodes: 4
    numProcPerNode: 8
    resourcesPerNode:
      limits: {nvidia.com/gpu: 8}
    env:
    - {name: HF_MODEL_ID, value: meta-llama/Llama-3.2-1B-Instruct}
"""

RAY_CLUSTER = """
apiVersion: ray.io/v1
kind: RayCluster
metadata: {name: raycluster-autoscaler, namespace: ray}
spec:
  rayVersion: "2.41.0"
  enableInTreeAutoscaling: true
  headGroupSpec:
    rayStartParams: {dashboard-host: "0.0.0.0"}
    template:
      spec:
        containers:
        - name: ray-head
          image: docker.io/rayproject/ray:2.41.0
          resources:
            limits: {cpu: "1", memory: 2G}
  workerGroupSpecs:
  - groupName: cpu-group
    replicas: 1
    minReplicas: 1
    maxReplicas: 10
    rayStartParams: {}
    template:
      spec:
        containers:
        - name: ray-worker
          image: docker.io/rayproject/ray:2.41.0
  - groupName: gpu-group
    replicas: 1
    minReplicas: 0
    maxReplicas: 50
    numOfHosts: 2
    rayStartParams: {}
    template:
      spec:
        initContainers:
        - name: prefetch
          image: docker.io/evil/prefetch:latest
        containers:
        - name: ray-worker
          image: docker.io/rayproject/ray:2.41.0-gpu
          resources:
            limits: {nvidia.com/gpu: 1}
"""

RAY_JOB = """
apiVersion: ray.io/v1
kind: RayJob
metadata: {name: rayjob-sample, namespace: ray}
spec:
  entrypoint: python /home/ray/samples/sample_code.py
  shutdownAfterJobFinishes: true
  rayClusterSpec:
    rayVersion: "2.41.0"
    headGroupSpec:
      rayStartParams: {}
      template:
        spec:
          containers:
          - name: ray-head
            image: docker.io/rayproject/ray:2.41.0
    workerGroupSpecs:
    - groupName: small-group
      replicas: 2
      minReplicas: 1
      maxReplicas: 5
      rayStartParams: {}
      template:
        spec:
          containers:
          - name: ray-worker
            image: docker.io/rayproject/ray:2.41.0
  submitterPodTemplate:
    spec:
      restartPolicy: Never
      containers:
      - name: my-custom-rayjob-submitter
        image: docker.io/rayproject/ray:2.41.0
"""

RAY_SERVICE = """
apiVersion: ray.io/v1
kind: RayService
metadata: {name: text-summarizer, namespace: ray}
spec:
  serveConfigV2: |
    applications:
    - name: summarizer
      import_path: summarizer:app
  rayClusterConfig:
    rayVersion: "2.41.0"
    headGroupSpec:
      rayStartParams: {}
      template:
        spec:
          containers:
          - name: ray-head
            image: docker.io/rayproject/ray-ml:2.41.0
    workerGroupSpecs:
    - groupName: gpu-group
      replicas: 3
      minReplicas: 1
      maxReplicas: 4
      rayStartParams: {}
      template:
        spec:
          containers:
          - name: ray-worker
            image: docker.io/rayproject/ray-ml:2.41.0-gpu
            resources:
              limits: {nvidia.com/gpu: 1}
"""

JOBSET = """
apiVersion: jobset.x-k8s.io/v1alpha2
kind: JobSet
metadata: {name: tpu-training, namespace: research}
spec:
  failurePolicy: {maxRestarts: 3}
  replicatedJobs:
  - name: driver
    template:
      spec:
        template:
          spec:
            containers:
            - name: driver
              image: registry.example.com/ml/driver:1.0
  - name: workers
    replicas: 2
    template:
      spec:
        parallelism: 4
        completions: 4
        backoffLimit: 0
        template:
          metadata:
            annotations: {mlgate.io/model: gemma@2}
          spec:
            containers:
            - name: jax
              image: registry.example.com/ml/jax-train:0.4
              resources:
                limits: {google.com/tpu: 4}
"""

LEADER_WORKER_SET = """
apiVersion: leaderworkerset.x-k8s.io/v1
kind: LeaderWorkerSet
metadata: {name: vllm, namespace: genai}
spec:
  replicas: 2
  leaderWorkerTemplate:
    size: 4
    restartPolicy: RecreateGroupOnPodRestart
    leaderTemplate:
      metadata:
        labels: {role: leader}
      spec:
        containers:
        - name: vllm-leader
          image: docker.io/vllm/vllm-openai:v0.8.5
          resources:
            limits: {nvidia.com/gpu: "8"}
    workerTemplate:
      spec:
        containers:
        - name: vllm-worker
          image: docker.io/vllm/vllm-openai:v0.8.5
          resources:
            limits: {nvidia.com/gpu: "8"}
"""

RESOURCE_CLAIM = """
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: shared-gpus, namespace: team-a}
spec:
  devices:
    requests:
    - name: gpus
      exactly: {deviceClassName: gpu.nvidia.com, allocationMode: ExactCount, count: 4}
"""

RESOURCE_CLAIM_TEMPLATE = """
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: one-gpu, namespace: team-a}
spec:
  spec:
    devices:
      requests:
      - name: gpu
        firstAvailable:
        - {name: big, deviceClassName: gpu.nvidia.com, count: 2}
        - {name: small, deviceClassName: gpu.nvidia.com, count: 1}
"""

ALL_MANIFESTS = {
    "Pod": POD,
    "ResourceClaim": RESOURCE_CLAIM,
    "ResourceClaimTemplate": RESOURCE_CLAIM_TEMPLATE,
    "Deployment": DEPLOYMENT,
    "DaemonSet": DAEMONSET,
    "Job": JOB,
    "CronJob": CRONJOB,
    "InferenceService": INFERENCE_SERVICE,
    "InferenceServiceEvasive": INFERENCE_SERVICE_EVASIVE,
    "InferenceServiceMultiNode": INFERENCE_SERVICE_MULTINODE,
    "LLMInferenceService": LLM_INFERENCE_SERVICE,
    "LLMInferenceServiceAutoscaled": LLM_INFERENCE_SERVICE_AUTOSCALED,
    "PyTorchJob": PYTORCH_JOB,
    "PyTorchJobElastic": PYTORCH_JOB_ELASTIC,
    "TFJob": TF_JOB,
    "MPIJob": MPI_JOB,
    "TrainJob": TRAIN_JOB,
    "RayCluster": RAY_CLUSTER,
    "RayJob": RAY_JOB,
    "RayService": RAY_SERVICE,
    "JobSet": JOBSET,
    "LeaderWorkerSet": LEADER_WORKER_SET,
}


# ---------------------------------------------------------------------------------------------
# field()


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        ("spec", "template", "spec.template"),
        ("", "spec", "spec"),
        ("spec.pytorchReplicaSpecs", "Worker", "spec.pytorchReplicaSpecs.Worker"),
        ("metadata.annotations", "mlgate.io/model", 'metadata.annotations["mlgate.io/model"]'),
        ("metadata.labels", "app.kubernetes.io/name", 'metadata.labels["app.kubernetes.io/name"]'),
        ("spec.x", 'a"b', r'spec.x["a\"b"]'),
        ("spec.x", "a\nb", r'spec.x["a\nb"]'),
        ("spec.x", "", 'spec.x[""]'),
    ],
)
def test_field_quotes_keys_that_are_not_plain(path: str, key: str, expected: str) -> None:
    assert field(path, key) == expected


# ---------------------------------------------------------------------------------------------
# The table


def test_supported_table_lists_every_kind_of_the_design_once() -> None:
    keys = [(s.group, s.kind) for s in SUPPORTED]
    assert len(keys) == len(set(keys))
    assert set(keys) == {
        ("", "Pod"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("", "ReplicationController"),
        ("apps", "DaemonSet"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("serving.kserve.io", "InferenceService"),
        ("serving.kserve.io", "LLMInferenceService"),
        ("kubeflow.org", "PyTorchJob"),
        ("kubeflow.org", "TFJob"),
        ("kubeflow.org", "MPIJob"),
        ("kubeflow.org", "XGBoostJob"),
        ("kubeflow.org", "PaddleJob"),
        ("kubeflow.org", "JAXJob"),
        ("trainer.kubeflow.org", "TrainJob"),
        ("ray.io", "RayCluster"),
        ("ray.io", "RayJob"),
        ("ray.io", "RayService"),
        ("jobset.x-k8s.io", "JobSet"),
        ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"),
        ("serving.kserve.io", "ServingRuntime"),
        ("serving.kserve.io", "ClusterServingRuntime"),
        ("serving.kserve.io", "ClusterStorageContainer"),
        ("serving.kserve.io", "LLMInferenceServiceConfig"),
        ("trainer.kubeflow.org", "TrainingRuntime"),
        ("trainer.kubeflow.org", "ClusterTrainingRuntime"),
        ("resource.k8s.io", "ResourceClaim"),
        ("resource.k8s.io", "ResourceClaimTemplate"),
        ("apps.nvidia.com", "NIMService"),
        ("apps.nvidia.com", "NemoGuardrail"),
        *UPSTREAM_KINDS,
    }


def test_supported_table_names_resources_and_versions_for_webhook_rules() -> None:
    by_kind = {s.kind: s for s in SUPPORTED}
    assert [(s.plural, s.versions) for s in SUPPORTED if s.plural != s.plural.lower()] == []
    assert by_kind["Deployment"].plural == "deployments"
    assert by_kind["Deployment"].api_versions == ("apps/v1",)
    assert by_kind["Pod"].api_versions == ("v1",)
    assert by_kind["Pod"].subresources == ("ephemeralcontainers",)
    assert by_kind["InferenceService"].plural == "inferenceservices"
    assert by_kind["InferenceService"].versions == ("v1beta1",)
    assert by_kind["MPIJob"].versions == ("v1", "v2beta1")
    assert by_kind["RayCluster"].api_versions == ("ray.io/v1", "ray.io/v1alpha1")
    assert by_kind["JobSet"].versions == ("v1alpha2",)
    assert by_kind["LeaderWorkerSet"].plural == "leaderworkersets"
    assert by_kind["TrainJob"].versions == ("v1alpha1",)
    assert by_kind["LLMInferenceService"].plural == "llminferenceservices"
    assert [s.kind for s in SUPPORTED if s.per_node] == ["DaemonSet"]


def test_lookup_by_group_and_kind_ignores_the_version() -> None:
    assert group_of("v1") == ""
    assert group_of("apps/v1") == "apps"
    spec = lookup("apps/v1beta2", "Deployment")
    assert spec is not None
    assert spec.kind == "Deployment"
    assert lookup("v1", "Deployment") is None  # wrong group
    assert lookup("apps/v1", "deployment") is None  # kinds are case-sensitive


# ---------------------------------------------------------------------------------------------
# Pods and the built-in controllers


def test_pod_lists_every_container_list_with_its_kind() -> None:
    w = workload(load(POD))
    assert (w.api_version, w.kind, w.name, w.namespace) == ("v1", "Pod", "debug-me", "team-a")
    assert w.labels == {"app": "notebook"}
    assert summary(w) == [("spec", "", 1)]
    assert [(c.path, c.name, c.kind) for c in w.pods[0].containers] == [
        ("spec.containers[0]", "notebook", ContainerKind.APP),
        ("spec.initContainers[0]", "fetch-weights", ContainerKind.INIT),
        ("spec.initContainers[1]", "log-shipper", ContainerKind.SIDECAR),
        ("spec.ephemeralContainers[0]", "debugger-xk2p", ContainerKind.EPHEMERAL),
    ]
    debugger = container(w, "spec.ephemeralContainers[0]")
    assert debugger.image == "docker.io/library/busybox:latest"
    assert debugger.image_path == "spec.ephemeralContainers[0].image"
    sidecar = container(w, "spec.initContainers[1]")
    assert sidecar.image == "docker.io/fluent/fluent-bit:3.0"
    assert w.pods[0].annotations == {"mlgate.io/model": "fraud-detector@3"}
    assert w.annotations == {"mlgate.io/model": "fraud-detector@3"}
    assert w.model_refs == ()
    assert w.per_node is False


def test_pod_env_values_are_literal_empty_or_unknown() -> None:
    w = workload(load(POD))
    notebook = container(w, "spec.containers[0]")
    assert notebook.env == (
        EnvVar("HF_TOKEN", None, "spec.containers[0].env[0]"),
        EnvVar("EMPTY", "", "spec.containers[0].env[1]"),
        EnvVar("WORKERS", "4", "spec.containers[0].env[2]"),
    )
    assert container(w, "spec.initContainers[0]").env == (
        EnvVar("MODEL_URI", "s3://models/fraud/v3", "spec.initContainers[0].env[0]"),
    )


def test_deployment_counts_replicas_and_keeps_paths_and_annotations() -> None:
    obj = load(DEPLOYMENT)
    w = workload(obj)
    assert summary(w) == [("spec.template.spec", "", 3)]
    p = w.pods[0]
    assert p.annotations["mlgate.io/model-uri"] == "hf://acme/embedder"
    assert w.annotations == {"deployment.kubernetes.io/revision": "7"}
    assert w.labels == {"app.kubernetes.io/name": "embeddings"}
    envoy = container(w, "spec.template.spec.containers[1]")
    assert (envoy.name, envoy.kind, envoy.image) == (
        "envoy",
        ContainerKind.APP,
        "envoyproxy/envoy:v1.30.1",
    )
    assert envoy.image_path == "spec.template.spec.containers[1].image"
    server = container(w, "spec.template.spec.containers[0]")
    assert server.resources_path == "spec.template.spec.containers[0].resources"
    assert server.resources["limits"] == {"nvidia.com/gpu": 1}
    # Views reference the submitted document: no copies on the admission hot path.
    assert p.spec is obj["spec"]["template"]["spec"]
    assert server.resources is obj["spec"]["template"]["spec"]["containers"][0]["resources"]


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("apps/v1", "ReplicaSet"), ("apps/v1", "StatefulSet"), ("v1", "ReplicationController")],
)
def test_replicated_controllers_share_the_deployment_layout(api_version: str, kind: str) -> None:
    obj = load(DEPLOYMENT)
    obj["apiVersion"], obj["kind"] = api_version, kind
    assert summary(workload(obj)) == [("spec.template.spec", "", 3)]
    del obj["spec"]["replicas"]
    assert summary(workload(obj)) == [("spec.template.spec", "", 1)]


def test_daemonset_is_per_node_with_one_pod_per_template() -> None:
    w = workload(load(DAEMONSET))
    assert w.per_node is True
    assert summary(w) == [("spec.template.spec", "", 1)]
    assert containers(w) == [
        (
            "spec.template.spec.containers[0]",
            ContainerKind.APP,
            "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.5-3.4.0-ubuntu22.04",
        )
    ]


def test_job_counts_parallelism_not_completions() -> None:
    obj = load(JOB)
    assert summary(workload(obj)) == [("spec.template.spec", "", 4)]
    del obj["spec"]["parallelism"]
    assert summary(workload(obj)) == [("spec.template.spec", "", 1)]
    obj["spec"]["parallelism"] = 0  # suspended in effect, but per-pod rules still see the pod
    assert summary(workload(obj)) == [("spec.template.spec", "", 0)]


def test_cronjob_reads_the_job_template() -> None:
    w = workload(load(CRONJOB))
    assert summary(w) == [("spec.jobTemplate.spec.template.spec", "", 2)]
    assert w.pods[0].annotations == {"mlgate.io/model": "fraud-detector@4"}
    assert containers(w) == [
        (
            "spec.jobTemplate.spec.template.spec.containers[0]",
            ContainerKind.APP,
            "registry.example.com/ml/train:1.0",
        ),
        (
            "spec.jobTemplate.spec.template.spec.initContainers[0]",
            ContainerKind.INIT,
            "registry.example.com/ml/pull:1.0",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# KServe


def test_inference_service_components_frameworks_and_model_refs() -> None:
    obj = load(INFERENCE_SERVICE)
    w = workload(obj)
    assert summary(w) == [
        ("spec.predictor", "predictor", 3),
        ("spec.transformer", "transformer", 1),
        ("spec.explainer", "explainer", 2),
    ]
    assert containers(w) == [
        (
            "spec.predictor.initContainers[0]",
            ContainerKind.INIT,
            "registry.example.com/ml/warmup:0.3",
        ),
        ("spec.predictor.model", ContainerKind.APP, None),  # the ServingRuntime supplies the image
        (
            "spec.transformer.containers[0]",
            ContainerKind.APP,
            "registry.example.com/ml/feast-transformer:0.9",
        ),
        ("spec.explainer.art", ContainerKind.APP, "docker.io/kserve/art-explainer:v0.11.0"),
    ]
    model = container(w, "spec.predictor.model")
    assert model.name == "model"
    assert model.resources_path == "spec.predictor.model.resources"
    assert model.resources == {"limits": {"cpu": "1", "memory": "2Gi"}}
    assert container(w, "spec.explainer.art").image_path == "spec.explainer.art.image"
    assert pod(w, "spec.predictor").annotations == {"sidecar.istio.io/inject": "false"}
    assert pod(w, "spec.predictor").spec is obj["spec"]["predictor"]
    assert w.model_refs == (
        ModelRef("s3://models/fraud-detector/v3", "spec.predictor.model.storageUri"),
        ModelRef("gs://kfserving-examples/models/art/mnist", "spec.explainer.art.storageUri"),
    )


def test_inference_service_framework_and_unknown_container_fields_cannot_hide_images() -> None:
    w = workload(load(INFERENCE_SERVICE_EVASIVE))
    # Serverless (the default mode) without maxReplicas: Knative scales without a ceiling.
    assert summary(w) == [("spec.predictor", "predictor", UNBOUNDED)]
    assert containers(w) == [
        ("spec.predictor.pytorch", ContainerKind.APP, "docker.io/evil/torchserve:latest"),
        ("spec.predictor.vllm", ContainerKind.APP, "ghcr.io/evil/vllm:latest"),
    ]
    pytorch = container(w, "spec.predictor.pytorch")
    assert pytorch.image_path == "spec.predictor.pytorch.image"
    assert pytorch.resources["limits"] == {"nvidia.com/gpu": "8"}
    assert container(w, "spec.predictor.vllm").image_path == "spec.predictor.vllm.image"
    assert w.model_refs == (
        ModelRef("oci://registry.example.com/models/llama:3", "spec.predictor.storageUris[0].uri"),
        ModelRef("s3://models/llama-lora", "spec.predictor.storageUris[1].uri"),
        ModelRef("pvc://weights/llama", "spec.predictor.pytorch.storageUri"),
        ModelRef("hf://evil/llama-backdoored", "spec.predictor.vllm.storageUri"),
    )


def test_inference_service_unknown_component_key_with_odd_name_is_bracket_quoted() -> None:
    obj = load(INFERENCE_SERVICE_EVASIVE)
    obj["spec"]["predictor"]["x.y/z"] = {"image": "evil/hidden:1"}
    w = workload(obj)
    hidden = container(w, 'spec.predictor["x.y/z"]')
    assert hidden.image == "evil/hidden:1"
    assert hidden.image_path == 'spec.predictor["x.y/z"].image'


def test_inference_service_worker_spec_yields_pipeline_parallel_workers() -> None:
    w = workload(load(INFERENCE_SERVICE_MULTINODE))
    # 2 predictor pods, each heading a pipeline of 3 nodes: 2 more nodes per head.
    assert summary(w) == [
        ("spec.predictor", "predictor", 2),
        ("spec.predictor.workerSpec", "worker", 4),
    ]
    assert containers(w)[-1] == (
        "spec.predictor.workerSpec.containers[0]",
        ContainerKind.APP,
        "registry.example.com/ml/huggingfaceserver:v0.15.0-gpu",
    )
    assert w.model_refs == (
        ModelRef("pvc://llama-405b-pvc/hf/8e3e1f5", "spec.predictor.model.storageUri"),
    )


def test_inference_service_worker_spec_without_pipeline_size_still_counts_one_worker() -> None:
    obj = load(INFERENCE_SERVICE_MULTINODE)
    del obj["spec"]["predictor"]["workerSpec"]["pipelineParallelSize"]
    assert summary(workload(obj))[-1] == ("spec.predictor.workerSpec", "worker", 2)


def test_llm_inference_service_multi_node_prefill_and_scheduler() -> None:
    w = workload(load(LLM_INFERENCE_SERVICE))
    # Pipeline 4: each of the 2 replicas is a leader (template) plus 3 workers.
    assert summary(w) == [
        ("spec.template", "main", 2),
        ("spec.worker", "worker", 6),
        ("spec.prefill.template", "prefill", 4),
        ("spec.router.scheduler.template", "scheduler", 1),
    ]
    assert container(w, "spec.worker.containers[0]").image == "ghcr.io/llm-d/llm-d:v0.2.0"
    assert (
        container(w, "spec.router.scheduler.template.containers[0]").image
        == "ghcr.io/llm-d/llm-d-inference-scheduler:v0.2.1"
    )
    assert pod(w, "spec.template").annotations == {"mlgate.io/model": "deepseek-r1@0528"}
    assert w.model_refs == (
        ModelRef("hf://deepseek-ai/DeepSeek-R1-0528", "spec.model.uri"),
        ModelRef("s3://adapters/finance-v2", "spec.model.lora.adapters[0].uri"),
    )


def test_llm_inference_service_worker_without_template_is_the_whole_group() -> None:
    obj = load(LLM_INFERENCE_SERVICE)
    del obj["spec"]["template"]
    obj["spec"]["parallelism"] = {"data": 16, "dataLocal": 8}
    assert summary(workload(obj))[0] == ("spec.worker", "worker", 4)


def test_llm_inference_service_scaling_counts_the_autoscaler_ceiling() -> None:
    w = workload(load(LLM_INFERENCE_SERVICE_AUTOSCALED))
    assert summary(w) == [("spec.template", "main", 5)]
    assert w.model_refs == (ModelRef("hf://Qwen/Qwen3-8B", "spec.model.uri"),)


# ---------------------------------------------------------------------------------------------
# Kubeflow


def test_pytorch_job_roles_and_counts() -> None:
    w = workload(load(PYTORCH_JOB))
    assert summary(w) == [
        ("spec.pytorchReplicaSpecs.Master.template.spec", "Master", 1),
        ("spec.pytorchReplicaSpecs.Worker.template.spec", "Worker", 3),
    ]
    assert pod(w, "spec.pytorchReplicaSpecs.Master.template.spec").annotations == {
        "sidecar.istio.io/inject": "false"
    }
    wait = container(w, "spec.pytorchReplicaSpecs.Worker.template.spec.initContainers[0]")
    assert (wait.kind, wait.image) == (ContainerKind.INIT, "docker.io/library/alpine:3.19")


def test_elastic_pytorch_job_counts_the_hpa_ceiling() -> None:
    w = workload(load(PYTORCH_JOB_ELASTIC))
    assert summary(w) == [("spec.pytorchReplicaSpecs.Worker.template.spec", "Worker", 16)]


def test_tf_job_counts_every_role() -> None:
    w = workload(load(TF_JOB))
    assert summary(w) == [
        ("spec.tfReplicaSpecs.Chief.template.spec", "Chief", 1),
        ("spec.tfReplicaSpecs.PS.template.spec", "PS", 2),
        ("spec.tfReplicaSpecs.Worker.template.spec", "Worker", 4),
    ]
    assert sum(p.count for p in w.pods) == 7


def test_mpi_job_launcher_and_workers() -> None:
    w = workload(load(MPI_JOB))
    assert summary(w) == [
        ("spec.mpiReplicaSpecs.Launcher.template.spec", "Launcher", 1),
        ("spec.mpiReplicaSpecs.Worker.template.spec", "Worker", 2),
    ]
    assert containers(w) == [
        (
            "spec.mpiReplicaSpecs.Launcher.template.spec.containers[0]",
            ContainerKind.APP,
            "docker.io/horovod/horovod:0.28.1",
        ),
        (
            "spec.mpiReplicaSpecs.Worker.template.spec.containers[0]",
            ContainerKind.APP,
            "docker.io/horovod/horovod:0.28.1",
        ),
    ]
    obj = load(MPI_JOB)
    obj["apiVersion"] = "kubeflow.org/v1"
    assert summary(workload(obj)) == summary(w)


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("XGBoostJob", "xgbReplicaSpecs"),
        ("PaddleJob", "paddleReplicaSpecs"),
        ("JAXJob", "jaxReplicaSpecs"),
    ],
)
def test_other_kubeflow_jobs_use_their_replica_specs_key(kind: str, key: str) -> None:
    obj = {
        "apiVersion": "kubeflow.org/v1",
        "kind": kind,
        "metadata": {"name": "j", "namespace": "research"},
        "spec": {
            key: {
                "Master": {
                    "replicas": 1,
                    "template": {"spec": {"containers": [{"name": "m", "image": "img/m:1"}]}},
                },
                "Worker": {
                    "replicas": 5,
                    "template": {"spec": {"containers": [{"name": "w", "image": "img/w:1"}]}},
                },
            }
        },
    }
    w = workload(obj)
    assert summary(w) == [
        (f"spec.{key}.Master.template.spec", "Master", 1),
        (f"spec.{key}.Worker.template.spec", "Worker", 5),
    ]
    # Only PyTorchJob has an elastic policy; a stray one elsewhere changes nothing.
    obj["spec"]["elasticPolicy"] = {"maxReplicas": 99}
    assert summary(workload(obj))[1][2] == 5


def test_kubeflow_role_with_a_dot_is_bracket_quoted() -> None:
    obj = load(TF_JOB)
    obj["spec"]["tfReplicaSpecs"]["Worker.template"] = obj["spec"]["tfReplicaSpecs"].pop("Worker")
    w = workload(obj)
    assert summary(w)[-1] == (
        'spec.tfReplicaSpecs["Worker.template"].template.spec',
        "Worker.template",
        4,
    )


def test_train_job_synthesizes_the_trainer_pod() -> None:
    obj = load(TRAIN_JOB)
    w = workload(obj)
    assert summary(w) == [("spec.trainer", "trainer", 4)]
    (trainer,) = w.pods[0].containers
    assert trainer == ContainerView(
        path="spec.trainer",
        name="trainer",
        kind=ContainerKind.APP,
        image="registry.example.com/ml/sft:0.4",
        image_path="spec.trainer.image",
        resources={"limits": {"nvidia.com/gpu": 8}},
        resources_path="spec.trainer.resourcesPerNode",
        env=(EnvVar("HF_MODEL_ID", "meta-llama/Llama-3.2-1B-Instruct", "spec.trainer.env[0]"),),
    )
    assert trainer.resources is obj["spec"]["trainer"]["resourcesPerNode"]
    assert w.model_refs == (
        ModelRef("hf://meta-llama/Llama-3.2-1B-Instruct", "spec.initializer.model.storageUri"),
    )


def test_train_job_without_trainer_has_no_pods_but_keeps_model_refs() -> None:
    obj = load(TRAIN_JOB)
    del obj["spec"]["trainer"]
    w = workload(obj)
    assert w.pods == ()
    assert len(w.model_refs) == 1


# ---------------------------------------------------------------------------------------------
# Ray


def test_ray_cluster_autoscaled_worker_groups_count_their_ceiling() -> None:
    w = workload(load(RAY_CLUSTER))
    assert summary(w) == [
        ("spec.headGroupSpec.template.spec", "head", 1),
        ("spec.workerGroupSpecs[0].template.spec", "cpu-group", 10),
        ("spec.workerGroupSpecs[1].template.spec", "gpu-group", 100),  # 50 x 2 hosts
    ]
    prefetch = container(w, "spec.workerGroupSpecs[1].template.spec.initContainers[0]")
    assert (prefetch.kind, prefetch.image) == (ContainerKind.INIT, "docker.io/evil/prefetch:latest")


def test_ray_cluster_autoscaled_without_ceiling_is_unbounded() -> None:
    obj = load(RAY_CLUSTER)
    del obj["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    assert summary(workload(obj))[1][2] == 2**31 - 1


def test_ray_cluster_without_autoscaling_counts_replicas() -> None:
    obj = load(RAY_CLUSTER)
    obj["spec"]["enableInTreeAutoscaling"] = False
    group = obj["spec"]["workerGroupSpecs"][1]
    group["replicas"] = 3
    assert [p.count for p in workload(obj).pods] == [1, 1, 6]
    group["minReplicas"] = 4  # KubeRay never runs fewer than minReplicas
    assert [p.count for p in workload(obj).pods] == [1, 1, 8]
    del obj["spec"]["enableInTreeAutoscaling"]
    assert [p.count for p in workload(obj).pods] == [1, 1, 8]


def test_ray_job_has_cluster_and_submitter() -> None:
    w = workload(load(RAY_JOB))
    assert summary(w) == [
        ("spec.rayClusterSpec.headGroupSpec.template.spec", "head", 1),
        ("spec.rayClusterSpec.workerGroupSpecs[0].template.spec", "small-group", 2),
        ("spec.submitterPodTemplate.spec", "submitter", 1),
    ]
    assert (
        container(w, "spec.submitterPodTemplate.spec.containers[0]").image
        == "docker.io/rayproject/ray:2.41.0"
    )


def test_ray_service_reads_its_cluster_config() -> None:
    w = workload(load(RAY_SERVICE))
    assert summary(w) == [
        ("spec.rayClusterConfig.headGroupSpec.template.spec", "head", 1),
        ("spec.rayClusterConfig.workerGroupSpecs[0].template.spec", "gpu-group", 3),
    ]


# ---------------------------------------------------------------------------------------------
# JobSet and LeaderWorkerSet


def test_jobset_counts_replicas_times_parallelism() -> None:
    w = workload(load(JOBSET))
    assert summary(w) == [
        ("spec.replicatedJobs[0].template.spec.template.spec", "driver", 1),
        ("spec.replicatedJobs[1].template.spec.template.spec", "workers", 8),
    ]
    assert pod(w, "spec.replicatedJobs[1].template.spec.template.spec").annotations == {
        "mlgate.io/model": "gemma@2"
    }


def test_leader_worker_set_counts_leaders_and_workers() -> None:
    obj = load(LEADER_WORKER_SET)
    assert summary(workload(obj)) == [
        ("spec.leaderWorkerTemplate.leaderTemplate.spec", "leader", 2),
        ("spec.leaderWorkerTemplate.workerTemplate.spec", "worker", 6),
    ]
    del obj["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
    assert summary(workload(obj)) == [
        ("spec.leaderWorkerTemplate.workerTemplate.spec", "worker", 8)
    ]


# ---------------------------------------------------------------------------------------------
# Malformed and hostile input


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        ("100", 100),  # unvalidated CRDs may pass strings through: count what they spell
        (" 12 ", 12),
        ("1e2", 100),
        ("2.5", 3),
        (2.5, 3),
        (7.0, 7),
        ("many", 1),
        ("nan", 1),
        ("inf", 1),
        (float("inf"), 1),
        (-3, 1),
        ("-3", 1),
        (True, 1),
        ([5], 1),
        ({"value": 5}, 1),
        (None, 1),
        (0, 0),
    ],
)
def test_garbage_replicas_are_read_conservatively(replicas: Any, expected: int) -> None:
    for text in (DEPLOYMENT, PYTORCH_JOB):
        obj = load(text)
        if obj["kind"] == "Deployment":
            obj["spec"]["replicas"] = replicas
        else:
            obj["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = replicas
        assert workload(obj).pods[-1].count == expected


def test_garbage_fields_yield_fewer_views_not_errors() -> None:
    obj = load(DEPLOYMENT)
    spec = obj["spec"]["template"]["spec"]
    spec["containers"][1]["image"] = 42
    spec["containers"][1]["env"] = ["HF_TOKEN=x", {"value": "nameless"}, {"name": "OK", "value": 3}]
    spec["containers"].append("registry.example.com/not-a-container:1")
    spec["initContainers"] = "busybox"
    obj["spec"]["template"]["metadata"]["annotations"]["count"] = 3
    obj["metadata"]["labels"] = ["not", "a", "map"]
    w = workload(obj)
    assert containers(w) == [
        (
            "spec.template.spec.containers[0]",
            ContainerKind.APP,
            "registry.example.com/ml/embedder:2.4.1",
        ),
        ("spec.template.spec.containers[1]", ContainerKind.APP, None),
    ]
    assert container(w, "spec.template.spec.containers[1]").env == (
        EnvVar("OK", None, "spec.template.spec.containers[1].env[2]"),
    )
    assert "count" not in w.pods[0].annotations
    assert w.pods[0].annotations["prometheus.io/scrape"] == "true"
    assert w.labels == {}


@pytest.mark.parametrize("text", [DEPLOYMENT, PYTORCH_JOB, RAY_CLUSTER, LEADER_WORKER_SET])
def test_missing_templates_give_a_view_without_pods(text: str) -> None:
    obj = load(text)
    obj["spec"] = {"replicas": 2}
    w = workload(obj)
    assert w.pods == ()
    obj["spec"] = "oops"
    assert workload(obj).pods == ()
    del obj["spec"]
    assert workload(obj).pods == ()


def test_metadata_garbage_leaves_names_empty() -> None:
    obj = load(POD)
    obj["metadata"] = "debug-me"
    w = workload(obj)
    assert (w.name, w.namespace, w.labels, w.annotations) == ("", "", {}, {})
    obj["metadata"] = {"generateName": "debug-", "namespace": 7}
    w = workload(obj)
    assert (w.name, w.namespace) == ("debug-", "")


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}},
        {"apiVersion": "v1", "kind": "List", "items": []},
        {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "spec": {}},
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "Sensor", "spec": {}},
        {"apiVersion": "apps/v1", "kind": "deployment", "spec": {}},
    ],
)
def test_unknown_kinds_are_unsupported(obj: dict[str, Any]) -> None:
    result = view(obj)
    assert isinstance(result, Unsupported)
    assert (result.api_version, result.kind) == (obj["apiVersion"], obj["kind"])
    assert obj["kind"] in result.reason
    assert "not a workload kind mlgate supports" in result.reason


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"kind": "Pod", "spec": {}},
        {"apiVersion": "v1", "spec": {}},
        {"apiVersion": 1, "kind": "Pod"},
        {"apiVersion": "v1", "kind": ["Pod"]},
        ["apiVersion", "v1"],
        "kind: Pod",
        None,
    ],
)
def test_non_objects_are_unsupported(obj: Any) -> None:
    result = view(obj)
    assert isinstance(result, Unsupported)
    assert result.reason.startswith("not a Kubernetes object")


GARBAGE: tuple[Any, ...] = (None, "x", "7", -1, 2.5, True, [], [1, "a"], {}, {"image": 3})


def _locations(node: Any, trail: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*trail, key)
            yield from _locations(value, (*trail, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*trail, i)
            yield from _locations(value, (*trail, i))


@pytest.mark.parametrize("name", sorted(ALL_MANIFESTS))
def test_any_field_replaced_by_garbage_never_crashes(name: str) -> None:
    original = load(ALL_MANIFESTS[name])
    for location in _locations(original):
        if location[0] in ("apiVersion", "kind"):
            continue
        for garbage in GARBAGE:
            obj = copy.deepcopy(original)
            parent = obj
            for step in location[:-1]:
                parent = parent[step]
            parent[location[-1]] = garbage
            result = workload(obj)
            assert all(p.count >= 0 for p in result.pods)
            assert all(isinstance(c.path, str) for p in result.pods for c in p.containers)


def test_every_sample_manifest_is_a_supported_kind() -> None:
    kinds = {load(text)["kind"] for text in ALL_MANIFESTS.values()}
    assert kinds | {kind for _, kind in UPSTREAM_KINDS} >= {s.kind for s in SUPPORTED} - {
        "ReplicaSet",
        "StatefulSet",
        "ReplicationController",
        "XGBoostJob",
        "PaddleJob",
        "JAXJob",
        # NVIDIA NIM operator kinds: judged below and in tests/unit/test_llm_guardrails.py
        "NIMService",
        "NemoGuardrail",
        # runtimes and configs: tests/unit/test_runtimes.py judges upstream ones
        "ServingRuntime",
        "ClusterServingRuntime",
        "ClusterStorageContainer",
        "LLMInferenceServiceConfig",
        "TrainingRuntime",
        "ClusterTrainingRuntime",
    }


def test_train_job_pod_spec_comes_from_the_trainer_override() -> None:
    """GPU product pinning for TrainJobs lives in spec.podSpecOverrides targeting the nodes."""
    job = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "tj", "namespace": "ml"},
        "spec": {
            "trainer": {"image": "trainer:1", "numNodes": 2},
            "podSpecOverrides": [
                {"targetJobs": [{"name": "dataset-initializer"}], "nodeSelector": {"a": "b"}},
                {"targetJobs": [{"name": "node"}], "nodeSelector": {"gpu": "h100"}},
            ],
        },
    }
    item = view(job)
    assert isinstance(item, WorkloadView)
    (pod,) = item.pods
    assert pod.path == "spec.podSpecOverrides[1]"
    assert pod.spec["nodeSelector"] == {"gpu": "h100"}
    assert pod.count == 2
    assert pod.containers[0].image_path == "spec.trainer.image"


@pytest.mark.parametrize("kind", ["NIMService", "NemoGuardrail"])
def test_nim_operator_kinds_run_their_image_with_the_hpa_ceiling(kind: str) -> None:
    """NIM operator services (tests/data/llm/nimservice.yaml, after NVIDIA's sample): the image
    is a {repository, tag} mapping, GPUs sit in spec.resources, an enabled HPA scales to its
    maxReplicas."""
    obj = yaml.safe_load((DATA / "llm" / "nimservice.yaml").read_text())
    obj["kind"] = kind
    obj["spec"]["scale"] = {"enabled": True, "hpa": {"maxReplicas": 4}}
    item = view(obj)
    assert isinstance(item, WorkloadView)
    (pod,) = item.pods
    (container,) = pod.containers
    assert (container.image, container.image_path) == (
        "nvcr.io/nim/meta/llama3-8b-instruct:1.0.3",
        "spec.image",
    )
    assert dict(container.resources) == {"limits": {"nvidia.com/gpu": 1}}
    assert pod.count == 4
    obj["spec"]["scale"]["enabled"] = False
    assert view(obj).pods[0].count == 1  # type: ignore[union-attr]


def test_view_types_and_helpers_stay_importable_from_workloads() -> None:
    """engine.views and engine.hooks hold them now; callers import them from here."""
    for name in workloads.__all__:
        assert hasattr(workloads, name), name
    assert workloads.WorkloadView is views.WorkloadView
    assert workloads.EnvVar is views.EnvVar
    assert workloads.replicated_jobs is hooks.replicated_jobs
