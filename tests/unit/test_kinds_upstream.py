"""The kinds real ML platforms use, judged on their projects' own samples.

Each sample follows the upstream document named above it (trimmed to what mlgate reads; values
kept). The expectations are what the operator runs: images, GPUs per workload, model references
and pod counts.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from mlgate.api.compile import name_globs
from mlgate.engine.decisions import Mode
from mlgate.engine.evaluate import evaluate
from mlgate.engine.gpu import workload_demand
from mlgate.engine.kindspec import UNBOUNDED
from mlgate.engine.policy import CompiledPolicy, Facts, GpuRules
from mlgate.engine.policy import Match as PolicyMatch
from mlgate.engine.workloads import Unsupported, WorkloadView, view

GPUS = GpuRules(resources=name_globs(["nvidia.com/gpu", "amd.com/gpu"]))

# https://github.com/argoproj/argo-workflows/blob/main/examples/steps.yaml and
# examples/sidecar.yaml, examples/scripts-python.yaml, examples/container-set-template/
# workspace-workflow.yaml (one of each template type in one Workflow)
ARGO_WORKFLOW = """
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: steps-
  namespace: ml
spec:
  entrypoint: hello-hello-hello
  parallelism: 3
  templates:
  - name: hello-hello-hello
    steps:
    - - name: hello1
        template: whalesay
        arguments: {parameters: [{name: message, value: hello1}]}
  - name: whalesay
    inputs: {parameters: [{name: message}]}
    container:
      image: docker/whalesay
      command: [cowsay]
      args: ["{{inputs.parameters.message}}"]
      resources: {limits: {nvidia.com/gpu: 1}}
  - name: gen-random-int
    script:
      image: python:alpine3.6
      command: [python]
      source: |
        import random
        print(random.randint(1, 100))
  - name: sidecar-nginx-example
    metadata:
      annotations: {mlgate.io/model: "fraud@3"}
    container:
      image: alpine:latest
      command: [sh, -c]
      args: ["apk update && apk add curl && until curl -XPOST 'http://127.0.0.1'; do sleep 1; done"]
    sidecars:
    - name: nginx
      image: nginx:1.13
    initContainers:
    - name: hello
      image: alpine:3.19
  - name: main
    containerSet:
      containers:
      - name: a
        image: argoproj/argosay:v2
      - name: b
        image: argoproj/argosay:v2
"""

# https://github.com/argoproj/argo-workflows/blob/main/examples/cron-workflow.yaml
ARGO_CRON_WORKFLOW = """
apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata:
  name: hello-world
spec:
  schedule: "* * * * *"
  concurrencyPolicy: "Replace"
  workflowSpec:
    entrypoint: whalesay
    templates:
    - name: whalesay
      container:
        image: docker/whalesay:latest
        command: [cowsay]
        args: ["🕓 hello world"]
"""

# https://github.com/argoproj/argo-workflows/blob/main/examples/cluster-workflow-template/
# clustertemplates.yaml
ARGO_CLUSTER_TEMPLATE = """
apiVersion: argoproj.io/v1alpha1
kind: ClusterWorkflowTemplate
metadata:
  name: cluster-workflow-template-whalesay-template
spec:
  templateDefaults:
    container:
      image: docker/whalesay
  templates:
  - name: whalesay-template
    inputs: {parameters: [{name: message}]}
    container:
      image: docker/whalesay
      command: [cowsay]
      args: ["{{inputs.parameters.message}}"]
"""

# https://knative.dev/docs/serving/autoscaling/scale-bounds/ (max-scale on the revision template)
KNATIVE_SERVICE = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: helloworld-go
  namespace: default
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/max-scale: "3"
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
          env:
            - name: TARGET
              value: "Go Sample v1"
          resources: {limits: {nvidia.com/gpu: 1}}
"""

# https://github.com/volcano-sh/volcano/blob/master/example/job.yaml
VOLCANO_JOB = """
apiVersion: batch.volcano.sh/v1alpha1
kind: Job
metadata:
  name: test-job
spec:
  minAvailable: 3
  schedulerName: volcano
  policies:
    - event: PodEvicted
      action: RestartJob
  maxRetry: 5
  queue: default
  tasks:
    - replicas: 6
      name: "default-nginx"
      template:
        metadata:
          name: web
        spec:
          containers:
            - image: nginx
              imagePullPolicy: IfNotPresent
              name: nginx
              resources:
                requests:
                  cpu: "1"
                limits:
                  nvidia.com/gpu: 1
          restartPolicy: OnFailure
    - replicas: 2
      name: ps
      template:
        spec:
          containers:
            - image: volcanosh/dist-mnist-tf-example:0.0.1
              name: tensorflow
"""

# https://github.com/kubeflow/spark-operator/blob/master/examples/spark-pi.yaml and the GPU
# example in docs/user-guide (driver/executor gpu {name, quantity})
SPARK_APPLICATION = """
apiVersion: sparkoperator.k8s.io/v1beta2
kind: SparkApplication
metadata:
  name: spark-pi
  namespace: default
spec:
  type: Scala
  mode: cluster
  image: spark:3.5.3
  imagePullPolicy: IfNotPresent
  mainClass: org.apache.spark.examples.SparkPi
  mainApplicationFile: local:///opt/spark/examples/jars/spark-examples.jar
  sparkVersion: 3.5.3
  driver:
    cores: 1
    memory: 512m
    serviceAccount: spark-operator-spark
  executor:
    instances: 2
    cores: 1
    memory: 512m
    image: registry.example.com/spark-gpu:3.5.3
    gpu:
      name: "amd.com/gpu"
      quantity: 1
    sidecars:
    - name: fluentd
      image: fluent/fluentd:v1.16
    template:  # spark-operator v2: merged into every executor pod
      spec:
        containers:
        - name: log-shipper
          image: docker.io/library/busybox:1.36
"""

# https://github.com/kubeflow/spark-operator/blob/master/examples/spark-pi-dynamic-allocation.yaml
SPARK_DYNAMIC = """
apiVersion: sparkoperator.k8s.io/v1beta2
kind: SparkApplication
metadata:
  name: spark-pi-dynamic-allocation
spec:
  type: Scala
  mode: cluster
  image: spark:3.5.3
  mainApplicationFile: local:///opt/spark/examples/jars/spark-examples.jar
  driver: {cores: 1, memory: 512m}
  executor:
    instances: 1
    gpu: {name: nvidia.com/gpu, quantity: 1}
  dynamicAllocation:
    enabled: true
    initialExecutors: 2
    maxExecutors: 5
    minExecutors: 1
"""

# https://github.com/kubeflow/kubeflow/blob/master/components/notebook-controller/config/
# samples/_v1_notebook.yaml
NOTEBOOK = """
apiVersion: kubeflow.org/v1
kind: Notebook
metadata:
  name: my-notebook
spec:
  template:
    spec:
      containers:
        - name: my-notebook
          image: kubeflownotebookswg/jupyter:master
          args:
            [
              "start.sh",
              "lab",
              "--LabApp.token=''",
            ]
          resources: {limits: {nvidia.com/gpu: 2}}
"""

# https://github.com/kaito-project/kaito/blob/main/examples/inference/
# kaito_workspace_falcon_7b.yaml, and kaito_workspace_custom_template (inference.template)
KAITO_PRESET = """
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: workspace-falcon-7b
resource:
  instanceType: "Standard_NC12s_v3"
  labelSelector:
    matchLabels:
      apps: falcon-7b
inference:
  preset:
    name: "falcon-7b"
"""

KAITO_TEMPLATE = """
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: workspace-custom-llm
resource:
  count: 2
  instanceType: "Standard_NC12s_v3"
  labelSelector:
    matchLabels:
      apps: custom-llm-inference
inference:
  template:
    spec:
      containers:
      - name: custom-llm-container
        image: ghcr.io/huggingface/text-generation-inference:1.4.1
        command: ["text-generation-launcher"]
        args: ["--model-id", "tiiuae/falcon-7b", "--num-shard", "1"]
        resources:
          limits:
            nvidia.com/gpu: 1
"""

# https://github.com/kaito-project/kaito/blob/main/api/v1alpha1/inferenceset_types.go
KAITO_INFERENCE_SET = """
apiVersion: kaito.sh/v1alpha1
kind: InferenceSet
metadata:
  name: phi-4
spec:
  replicas: 3
  labelSelector:
    matchLabels:
      apps: phi-4
  template:
    resource:
      instanceType: Standard_NC24ads_A100_v4
    inference:
      preset:
        name: phi-4-mini-instruct
        presetOptions:
          image: myregistry.azurecr.io/kaito/phi-4:0.1.0
"""

# https://github.com/vllm-project/production-stack/blob/main/operator/config/samples/
# production-stack_v1alpha1_vllmruntime.yaml
VLLM_RUNTIME = """
apiVersion: production-stack.vllm.ai/v1alpha1
kind: VLLMRuntime
metadata:
  name: vllmruntime-sample
spec:
  model:
    modelURL: "meta-llama/Llama-3.1-8B-Instruct"
    enableLoRA: true
    maxModelLen: 4096
  vllmConfig:
    tensorParallelSize: 1
    env:
      - name: HF_HOME
        value: "/data"
  deploymentConfig:
    resources:
      cpu: "5"
      memory: "32Gi"
      gpu: "1"
      gpuType: "nvidia.com/gpu"
    image:
      registry: "docker.io"
      name: "lmcache/vllm-openai:2025-05-27-v1"
      pullPolicy: "IfNotPresent"
    replicas: 2
    sidecarConfig:
      enabled: true
      name: "sidecar"
      image:
        registry: "docker.io"
        name: "lmcache/lmstack-sidecar:latest"
      resources:
        cpu: "0.5"
        memory: "128Mi"
"""

# https://github.com/SeldonIO/seldon-core/blob/v2/samples/models/sklearn-iris-gs.yaml
SELDON_MODEL = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata:
  name: iris
spec:
  storageUri: "gs://seldon-models/scv2/samples/mlserver_1.3.5/iris-sklearn"
  requirements:
  - sklearn
  memory: 100Ki
"""

# https://github.com/SeldonIO/seldon-core/blob/v2/samples/servers/custom-mlserver.yaml
SELDON_SERVER = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Server
metadata:
  name: mlserver-134
spec:
  serverConfig: mlserver
  replicas: 2
  podSpec:
    containers:
    - image: seldonio/mlserver:1.3.4
      name: mlserver
      resources: {limits: {nvidia.com/gpu: 1}}
"""

# https://github.com/kserve/kserve/blob/master/docs/samples/multimodelserving/sklearn/
# trained_model.yaml
TRAINED_MODEL = """
apiVersion: "serving.kserve.io/v1alpha1"
kind: "TrainedModel"
metadata:
  name: "model1-sklearn"
spec:
  inferenceService: "sklearn-iris-example"
  model:
    storageUri: "gs://kfserving-examples/models/sklearn/1.0/model"
    framework: "sklearn"
    memory: "256Mi"
"""

# kserve/docs/samples/graph/sequence.yaml (in ../shared/realworld)
INFERENCE_GRAPH = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: model-chainer
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
        - serviceName: sklearn-iris
        - serviceName: xgboost-iris
          data: $request
"""

# kuberay/ray-operator/config/samples/ray-cronjob.sample.yaml (in ../shared/realworld)
RAY_CRON_JOB = """
apiVersion: ray.io/v1
kind: RayCronJob
metadata:
  name: raycronjob-sample
spec:
  schedule: "* * * * *"
  jobTemplate:
    entrypoint: python /home/ray/samples/sample_code.py
    shutdownAfterJobFinishes: true
    rayClusterSpec:
      rayVersion: '2.46.0'
      headGroupSpec:
        rayStartParams: {}
        template:
          spec:
            containers:
              - name: ray-head
                image: rayproject/ray:2.46.0
      workerGroupSpecs:
        - replicas: 2
          groupName: small-group
          rayStartParams: {}
          template:
            spec:
              containers:
                - name: ray-worker
                  image: rayproject/ray:2.46.0
                  resources: {limits: {nvidia.com/gpu: 1}}
    submitterPodTemplate:
      spec:
        restartPolicy: Never
        containers:
          - name: my-custom-rayjob-submitter
            image: rayproject/ray:2.46.0
"""

# lws/config/samples/disaggregatedset_v1_disaggregatedset.yaml (in ../shared/realworld)
DISAGGREGATED_SET = """
apiVersion: disaggregatedset.x-k8s.io/v1
kind: DisaggregatedSet
metadata:
  name: disaggregatedset-sample
spec:
  slices: 2
  roles:
    - name: prefill
      spec:
        replicas: 2
        leaderWorkerTemplate:
          size: 2
          leaderTemplate:
            spec:
              containers:
                - name: worker
                  image: nginx:latest
                  resources: {limits: {nvidia.com/gpu: 1}}
          workerTemplate:
            spec:
              containers:
                - name: worker
                  image: nginx:latest
                  resources: {limits: {nvidia.com/gpu: 1}}
    - name: decode
      spec:
        replicas: 1
        leaderWorkerTemplate:
          size: 1
          workerTemplate:
            spec:
              containers:
                - name: model
                  image: registry.k8s.io/pause:3.9
"""

# https://project-codeflare.github.io/appwrapper/samples/pytorch/
APP_WRAPPER = """
apiVersion: workload.codeflare.dev/v1beta2
kind: AppWrapper
metadata:
  name: sample-pytorch-job
  annotations:
    kueue.x-k8s.io/queue-name: user-queue
spec:
  components:
  - podSets:
    - replicas: 1
      path: template.spec.pytorchReplicaSpecs.Master.template
    - replicas: 1
      path: template.spec.pytorchReplicaSpecs.Worker.template
    template:
      apiVersion: "kubeflow.org/v1"
      kind: PyTorchJob
      metadata:
        name: pytorch-simple
      spec:
        pytorchReplicaSpecs:
          Master:
            replicas: 1
            restartPolicy: OnFailure
            template:
              spec:
                containers:
                - name: pytorch
                  image: docker.io/kubeflowkatib/pytorch-mnist-cpu:v1beta1-fc858d1
                  command: ["python3", "/opt/pytorch-mnist/mnist.py", "--epochs=1"]
          Worker:
            replicas: 3
            restartPolicy: OnFailure
            template:
              spec:
                containers:
                - name: pytorch
                  image: docker.io/kubeflowkatib/pytorch-mnist-cpu:v1beta1-fc858d1
                  resources: {limits: {nvidia.com/gpu: 2}}
  - template:
      apiVersion: v1
      kind: Service
      metadata: {name: sample}
      spec: {ports: [{port: 80}]}
"""

# https://github.com/argoproj/argo-workflows/blob/main/examples/pod-spec-patch.yaml (and its
# YAML form, examples/pod-spec-yaml-patch.yaml): a text patch merged into the pod.
ARGO_POD_SPEC_PATCH = """
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: pod-spec-patch-
spec:
  entrypoint: hello-world
  podSpecPatch: |
    hostNetwork: true
  templates:
  - name: hello-world
    podSpecPatch: '{"containers":[{"name":"main", "image": "docker.io/evil/miner:1",
      "resources":{"limits":{"nvidia.com/gpu": 4}}}]}'
    container:
      image: busybox
      command: [echo]
      args: ["hello world"]
"""


# https://github.com/kubeflow/spark-operator/blob/master/examples/sparkconnect/spark-connect.yaml
SPARK_CONNECT = """
apiVersion: sparkoperator.k8s.io/v1alpha1
kind: SparkConnect
metadata:
  name: spark-connect
  namespace: default
spec:
  sparkVersion: 4.0.4
  image: docker.io/apache/spark:4.0.4
  server:
    template:
      metadata:
        annotations:
          key3: value3
      spec:
        containers:
        - name: spark-kubernetes-driver
          image: docker.io/apache/spark:4.0.4
        serviceAccount: spark-operator-spark
  executor:
    instances: 2
    cores: 1
    memory: 512m
    template:
      spec:
        containers:
        - name: spark-kubernetes-executor
          resources: {limits: {nvidia.com/gpu: 1}}
"""

# https://github.com/volcano-sh/volcano/blob/master/example/cronjob/cronjob.yaml
VOLCANO_CRON_JOB = """
apiVersion: batch.volcano.sh/v1alpha1
kind: CronJob
metadata:
  name: volcano-cronjob-example
spec:
  schedule: "*/5 * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      schedulerName: volcano
      tasks:
        - replicas: 2
          name: "task-1"
          template:
            spec:
              containers:
                - name: busybox-container
                  image: busybox:latest
                  resources: {limits: {nvidia.com/gpu: 1}}
              restartPolicy: OnFailure
      minAvailable: 1
"""

# https://github.com/volcano-sh/volcano/tree/master/example/jobflow (JobTemplate a.yaml)
VOLCANO_JOB_TEMPLATE = """
apiVersion: flow.volcano.sh/v1alpha1
kind: JobTemplate
metadata:
  name: a
spec:
  minAvailable: 1
  schedulerName: volcano
  tasks:
    - replicas: 1
      name: "default-nginx"
      template:
        spec:
          containers:
            - image: nginx:1.14.2
              name: nginx
"""

SAMPLES = {
    "Workflow": ARGO_WORKFLOW,
    "WorkflowPodSpecPatch": ARGO_POD_SPEC_PATCH,
    "CronWorkflow": ARGO_CRON_WORKFLOW,
    "ClusterWorkflowTemplate": ARGO_CLUSTER_TEMPLATE,
    "KnativeService": KNATIVE_SERVICE,
    "VolcanoJob": VOLCANO_JOB,
    "SparkApplication": SPARK_APPLICATION,
    "SparkDynamic": SPARK_DYNAMIC,
    "Notebook": NOTEBOOK,
    "KaitoPreset": KAITO_PRESET,
    "KaitoTemplate": KAITO_TEMPLATE,
    "InferenceSet": KAITO_INFERENCE_SET,
    "VLLMRuntime": VLLM_RUNTIME,
    "SeldonModel": SELDON_MODEL,
    "SeldonServer": SELDON_SERVER,
    "TrainedModel": TRAINED_MODEL,
    "InferenceGraph": INFERENCE_GRAPH,
    "RayCronJob": RAY_CRON_JOB,
    "DisaggregatedSet": DISAGGREGATED_SET,
    "AppWrapper": APP_WRAPPER,
    "SparkConnect": SPARK_CONNECT,
    "VolcanoCronJob": VOLCANO_CRON_JOB,
    "VolcanoJobTemplate": VOLCANO_JOB_TEMPLATE,
}

# The kinds these samples cover, for the table's own tests.
UPSTREAM_KINDS = frozenset(
    {
        ("argoproj.io", "Workflow"),
        ("argoproj.io", "WorkflowTemplate"),
        ("argoproj.io", "CronWorkflow"),
        ("argoproj.io", "ClusterWorkflowTemplate"),
        ("serving.knative.dev", "Service"),
        ("batch.volcano.sh", "Job"),
        ("batch.volcano.sh", "CronJob"),
        ("flow.volcano.sh", "JobTemplate"),
        ("sparkoperator.k8s.io", "SparkConnect"),
        ("sparkoperator.k8s.io", "SparkApplication"),
        ("sparkoperator.k8s.io", "ScheduledSparkApplication"),
        ("kubeflow.org", "Notebook"),
        ("kaito.sh", "Workspace"),
        ("kaito.sh", "InferenceSet"),
        ("production-stack.vllm.ai", "VLLMRuntime"),
        ("mlops.seldon.io", "Model"),
        ("mlops.seldon.io", "Server"),
        ("mlops.seldon.io", "ServerConfig"),
        ("serving.kserve.io", "TrainedModel"),
        ("serving.kserve.io", "InferenceGraph"),
        ("ray.io", "RayCronJob"),
        ("disaggregatedset.x-k8s.io", "DisaggregatedSet"),
        ("workload.codeflare.dev", "AppWrapper"),
    }
)


def workload(text: str) -> WorkloadView:
    result = view(yaml.safe_load(text))
    assert isinstance(result, WorkloadView), result
    return result


def images(w: WorkloadView) -> list[tuple[str, str | None]]:
    return [(c.image_path, c.image) for p in w.pods for c in p.containers]


def gpus(w: WorkloadView) -> int:
    return workload_demand(GPUS, w)[0]


def test_argo_workflow_runs_every_template_type() -> None:
    w = workload(ARGO_WORKFLOW)
    assert images(w) == [
        ("spec.templates[1].container.image", "docker/whalesay"),
        ("spec.templates[2].script.image", "python:alpine3.6"),
        ("spec.templates[3].initContainers[0].image", "alpine:3.19"),
        ("spec.templates[3].container.image", "alpine:latest"),
        ("spec.templates[3].sidecars[0].image", "nginx:1.13"),
        ("spec.templates[4].containerSet.containers[0].image", "argoproj/argosay:v2"),
        ("spec.templates[4].containerSet.containers[1].image", "argoproj/argosay:v2"),
    ]
    # parallelism bounds how many pods of a template run at once
    assert {p.count for p in w.pods} == {3}
    assert [p.role for p in w.pods][:2] == ["hello-hello-hello", "whalesay"]
    assert gpus(w) == 3
    sidecar = w.pods[3]
    assert [c.kind.value for c in sidecar.containers] == ["initContainer", "container", "sidecar"]
    assert sidecar.annotations == {"mlgate.io/model": "fraud@3"}


def test_argo_cron_workflow_and_cluster_template() -> None:
    cron = workload(ARGO_CRON_WORKFLOW)
    assert images(cron) == [
        ("spec.workflowSpec.templates[0].container.image", "docker/whalesay:latest")
    ]
    cluster = workload(ARGO_CLUSTER_TEMPLATE)
    assert images(cluster) == [
        ("spec.templates[0].container.image", "docker/whalesay"),
        ("spec.templateDefaults.container.image", "docker/whalesay"),
    ]


def test_knative_service_is_bounded_only_by_max_scale() -> None:
    w = workload(KNATIVE_SERVICE)
    assert images(w) == [
        ("spec.template.spec.containers[0].image", "ghcr.io/knative/helloworld-go:latest")
    ]
    assert (w.pods[0].count, gpus(w)) == (3, 3)
    obj = yaml.safe_load(KNATIVE_SERVICE)
    del obj["spec"]["template"]["metadata"]
    unbounded = view(obj)
    assert isinstance(unbounded, WorkloadView) and unbounded.pods[0].count == UNBOUNDED
    obj["spec"]["template"]["metadata"] = {
        "annotations": {"autoscaling.knative.dev/max-scale": "0"}
    }
    zero = view(obj)  # 0 is Knative's "no limit"
    assert isinstance(zero, WorkloadView) and zero.pods[0].count == UNBOUNDED


def test_volcano_job_counts_each_task() -> None:
    w = workload(VOLCANO_JOB)
    assert [(p.role, p.count) for p in w.pods] == [("default-nginx", 6), ("ps", 2)]
    assert images(w)[1] == (
        "spec.tasks[1].template.spec.containers[0].image",
        "volcanosh/dist-mnist-tf-example:0.0.1",
    )
    assert gpus(w) == 6


def test_spark_application_driver_executors_and_gpus() -> None:
    w = workload(SPARK_APPLICATION)
    assert images(w) == [
        ("spec.image", "spark:3.5.3"),  # the application's image: the driver names none
        ("spec.executor.image", "registry.example.com/spark-gpu:3.5.3"),
        ("spec.executor.sidecars[0].image", "fluent/fluentd:v1.16"),
        ("spec.executor.template.spec.containers[0].image", "docker.io/library/busybox:1.36"),
    ]
    assert [(p.role, p.count) for p in w.pods] == [("driver", 1), ("executor", 2)]
    assert gpus(w) == 2  # amd.com/gpu from executor.gpu {name, quantity}
    dynamic = workload(SPARK_DYNAMIC)
    assert dynamic.pods[1].count == 5  # up to maxExecutors
    obj = yaml.safe_load(SPARK_DYNAMIC)
    del obj["spec"]["dynamicAllocation"]["maxExecutors"]
    unbounded = view(obj)
    assert isinstance(unbounded, WorkloadView) and unbounded.pods[1].count == UNBOUNDED
    obj["spec"]["dynamicAllocation"]["enabled"] = False
    static = view(obj)
    assert isinstance(static, WorkloadView) and static.pods[1].count == 2


def test_notebook() -> None:
    w = workload(NOTEBOOK)
    assert images(w) == [
        ("spec.template.spec.containers[0].image", "kubeflownotebookswg/jupyter:master")
    ]
    assert gpus(w) == 2


def test_kaito_workspace_reads_its_top_level_fields() -> None:
    preset = workload(KAITO_PRESET)
    assert gpus(preset) == 2  # a preset takes every GPU of its node: NC12s_v3 has two
    assert [(m.value, m.path) for m in preset.model_refs] == [
        ("kaito://falcon-7b", "inference.preset.name")
    ]
    custom = workload(KAITO_TEMPLATE)
    assert images(custom) == [
        (
            "inference.template.spec.containers[0].image",
            "ghcr.io/huggingface/text-generation-inference:1.4.1",
        )
    ]
    assert gpus(custom) == 2  # resource.count nodes


def test_kaito_inference_set() -> None:
    w = workload(KAITO_INFERENCE_SET)
    assert images(w) == [
        (
            "spec.template.inference.preset.presetOptions.image",
            "myregistry.azurecr.io/kaito/phi-4:0.1.0",
        )
    ]
    assert {p.count for p in w.pods} == {3}
    assert [m.value for m in w.model_refs] == ["kaito://phi-4-mini-instruct"]


def test_vllm_runtime_image_mapping_gpus_and_model() -> None:
    w = workload(VLLM_RUNTIME)
    assert images(w) == [
        ("spec.deploymentConfig.image", "docker.io/lmcache/vllm-openai:2025-05-27-v1"),
        ("spec.deploymentConfig.sidecarConfig.image", "docker.io/lmcache/lmstack-sidecar:latest"),
    ]
    assert gpus(w) == 2
    assert [(m.value, m.path) for m in w.model_refs] == [
        ("hf://meta-llama/Llama-3.1-8B-Instruct", "spec.model.modelURL")
    ]


def test_seldon_model_and_server() -> None:
    model = workload(SELDON_MODEL)
    assert model.pods == ()
    assert [(m.value, m.path) for m in model.model_refs] == [
        ("gs://seldon-models/scv2/samples/mlserver_1.3.5/iris-sklearn", "spec.storageUri")
    ]
    server = workload(SELDON_SERVER)
    assert images(server) == [("spec.podSpec.containers[0].image", "seldonio/mlserver:1.3.4")]
    assert gpus(server) == 2


def test_kserve_trained_model_and_inference_graph() -> None:
    trained = workload(TRAINED_MODEL)
    assert [(m.value, m.path) for m in trained.model_refs] == [
        ("gs://kfserving-examples/models/sklearn/1.0/model", "spec.model.storageUri")
    ]
    graph = workload(INFERENCE_GRAPH)
    assert (graph.pods, graph.model_refs) == ((), ())


def test_ray_cron_job_is_a_ray_job_template() -> None:
    w = workload(RAY_CRON_JOB)
    assert [(p.role, p.count) for p in w.pods] == [
        ("head", 1),
        ("small-group", 2),
        ("submitter", 1),
    ]
    assert w.pods[2].path == "spec.jobTemplate.submitterPodTemplate.spec"
    assert gpus(w) == 2


def test_disaggregated_set_counts_roles_groups_and_slices() -> None:
    w = workload(DISAGGREGATED_SET)
    assert [(p.role, p.count) for p in w.pods] == [
        ("prefill", 4),  # leaders: 2 groups x 2 slices
        ("prefill", 4),  # workers: 2 groups x (size 2 - leader) x 2 slices
        ("decode", 2),  # no leader template: the workers make the whole group
    ]
    assert gpus(w) == 8


def test_app_wrapper_judges_each_component_with_its_own_kind() -> None:
    w = workload(APP_WRAPPER)
    assert [(p.path, p.role, p.count) for p in w.pods] == [
        ("spec.components[0].template.spec.pytorchReplicaSpecs.Master.template.spec", "Master", 1),
        ("spec.components[0].template.spec.pytorchReplicaSpecs.Worker.template.spec", "Worker", 3),
    ]
    assert images(w)[1][0] == (
        "spec.components[0].template.spec.pytorchReplicaSpecs.Worker.template.spec"
        ".containers[0].image"
    )
    assert gpus(w) == 6


def test_app_wrapper_with_an_unknown_component_cannot_be_judged() -> None:
    obj = yaml.safe_load(APP_WRAPPER)
    obj["spec"]["components"][1]["template"] = {
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "spec": {"taskSpec": {"steps": [{"image": "evil/miner"}]}},
    }
    result = view(obj)
    assert isinstance(result, Unsupported)
    assert "spec.components[1].template" in result.reason and "TaskRun" in result.reason


def test_app_wrappers_nested_too_deep_are_refused() -> None:
    obj: dict[str, Any] = yaml.safe_load(APP_WRAPPER)
    for _ in range(6):
        obj = {
            "apiVersion": "workload.codeflare.dev/v1beta2",
            "kind": "AppWrapper",
            "metadata": {"name": "nest"},
            "spec": {"components": [{"template": obj}]},
        }
    result = view(obj)
    assert isinstance(result, Unsupported) and "nested more than" in result.reason


GARBAGE: tuple[Any, ...] = (None, "x", "7", -1, 2.5, True, [], [1, "a"], {}, {"image": 3})


def _locations(node: Any, trail: tuple[Any, ...] = ()) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*trail, key)
            yield from _locations(value, (*trail, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*trail, i)
            yield from _locations(value, (*trail, i))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_any_field_replaced_by_garbage_never_crashes(name: str) -> None:
    original = yaml.safe_load(SAMPLES[name])
    for location in _locations(original):
        if location[0] in ("apiVersion", "kind"):
            continue
        for garbage in GARBAGE:
            obj = copy.deepcopy(original)
            parent = obj
            for step in location[:-1]:
                parent = parent[step]
            parent[location[-1]] = garbage
            result = view(obj)
            if isinstance(result, WorkloadView):
                assert all(p.count >= 0 for p in result.pods)
                assert all(
                    isinstance(c.image, str | None) for p in result.pods for c in p.containers
                )


def test_argo_pod_spec_patches_change_what_runs() -> None:
    w = workload(ARGO_POD_SPEC_PATCH)
    (pod,) = w.pods
    (main,) = pod.containers
    assert (main.name, main.image, main.image_path) == (
        "main",
        "docker.io/evil/miner:1",
        "spec.templates[0].podSpecPatch",
    )
    assert gpus(w) == 4
    assert pod.spec["hostNetwork"] is True  # the workflow-wide patch applies to every template
    obj = yaml.safe_load(ARGO_POD_SPEC_PATCH)
    obj["spec"]["templates"][0]["podSpecPatch"] = ""
    assert isinstance(view(obj), WorkloadView)
    for unreadable in ("[not, a, mapping]", "{{inputs.parameters.patch}}"):
        obj["spec"]["templates"][0]["podSpecPatch"] = unreadable
        result = view(obj)
        assert isinstance(result, Unsupported)
        assert "spec.templates[0].podSpecPatch" in result.reason


def test_spark_connect_server_and_executors() -> None:
    w = workload(SPARK_CONNECT)
    assert images(w) == [
        ("spec.server.template.spec.containers[0].image", "docker.io/apache/spark:4.0.4"),
        ("spec.image", "docker.io/apache/spark:4.0.4"),  # the executor's template names none
    ]
    assert [(p.role, p.count) for p in w.pods] == [("server", 1), ("executor", 2)]
    assert w.pods[0].annotations == {"key3": "value3"}
    assert gpus(w) == 2


def test_volcano_cron_job_overlaps_unless_forbidden() -> None:
    w = workload(VOLCANO_CRON_JOB)
    assert [(p.role, p.count) for p in w.pods] == [("task-1", 2)]
    assert images(w) == [
        ("spec.jobTemplate.spec.tasks[0].template.spec.containers[0].image", "busybox:latest")
    ]
    obj = yaml.safe_load(VOLCANO_CRON_JOB)
    del obj["spec"]["concurrencyPolicy"]  # Allow: runs pile up
    allowed = view(obj)
    assert isinstance(allowed, WorkloadView) and allowed.pods[0].count == UNBOUNDED


def test_volcano_job_template() -> None:
    assert images(workload(VOLCANO_JOB_TEMPLATE)) == [
        ("spec.tasks[0].template.spec.containers[0].image", "nginx:1.14.2")
    ]


def test_kaito_tuning_names_its_preset_model() -> None:
    obj = yaml.safe_load(KAITO_PRESET)
    obj["tuning"] = obj.pop("inference")
    obj["tuning"]["input"] = {"image": "registry.example.com/data/mental-health:1"}
    w = view(obj)
    assert isinstance(w, WorkloadView)
    assert [m.value for m in w.model_refs] == ["kaito://falcon-7b"]
    assert ("tuning.input.image", "registry.example.com/data/mental-health:1") in images(w)


def test_an_unreadable_patch_is_denied_saying_why() -> None:
    obj = yaml.safe_load(ARGO_POD_SPEC_PATCH)
    obj["metadata"] = {"name": "p", "namespace": "ml"}
    obj["spec"]["templates"][0]["podSpecPatch"] = "{{inputs.parameters.patch}}"
    policy = CompiledPolicy(name="p", mode=Mode.ENFORCE, match=PolicyMatch())
    decision = evaluate((policy,), obj, Facts(now=datetime(2026, 1, 1, tzinfo=UTC)))
    (violation,) = decision.violations
    assert not decision.allowed
    assert "spec.templates[0].podSpecPatch" in violation.message
    assert violation.message.endswith("write it so that what will run can be seen")
