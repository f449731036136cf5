"""The built-in kinds that the declarative form describes: plain data, read by `kindspec`.

Each layout says what its operator does with the object; the comment on each names the upstream
API it follows. Kinds whose operators compute pods in ways a layout cannot say (KServe's framework
detection and runtimes, Ray's autoscaler, TrainJob's runtime patches, CronJob's concurrency) keep
code hooks in `hooks`.
"""

from __future__ import annotations

from types import MappingProxyType

from mlgate.engine.kindspec import (
    ContainerField,
    ContainerRole,
    Count,
    Layout,
    Location,
    ModelField,
    Shape,
    parse_path,
)

P = parse_path


def count(*paths: str, default: int | None = 1) -> Count:
    """The largest number at `paths`, else `default` (None: unbounded)."""
    return Count(tuple(map(P, paths)), default)


def template(path: str, *replicas: Count, role: str = "", role_path: str = "") -> Location:
    return Location(
        Shape.POD_TEMPLATE, P(path), replicas, role, P(role_path) if role_path else None
    )


# --- Kubernetes ------------------------------------------------------------------------------

POD = Layout((Location(Shape.POD_SPEC, P("spec"), annotations=P("metadata.annotations")),))
REPLICATED = Layout((template("spec.template", count("spec.replicas")),))
PER_NODE = Layout((template("spec.template"),))  # DaemonSet: only per-pod limits apply
JOB = Layout((template("spec.template", count("spec.parallelism")),))


# --- Kubeflow training-operator: spec.<x>ReplicaSpecs.<Role> {replicas, template} -------------


def replica_specs(key: str, elastic_role: str | None = None) -> Layout:
    """An elastic PyTorchJob's HPA scales `elastic_role` up to `elasticPolicy.maxReplicas` through
    the scale subresource, which admission does not see again: count the ceiling now."""
    base = f"spec.{key}"
    roles = template(f"{base}.*.template", count(f"{base}.*.replicas"))
    if elastic_role is None:
        return Layout((roles,))
    others = Location(roles.shape, roles.path, roles.replicas, exclude=(elastic_role,))
    elastic = template(
        f"{base}.{elastic_role}.template",
        count(f"{base}.{elastic_role}.replicas", "spec.elasticPolicy.maxReplicas"),
        role=elastic_role,
    )
    return Layout((others, elastic))


# --- JobSet, LeaderWorkerSet, DisaggregatedSet -------------------------------------------------

JOBSET = Layout(
    (
        template(
            "spec.replicatedJobs[*].template.spec.template",
            count("spec.replicatedJobs[*].replicas"),
            count("spec.replicatedJobs[*].template.spec.parallelism"),
            role_path="spec.replicatedJobs[*].name",
        ),
    )
)


def leader_worker_set(spec: str, *groups: Count, role_path: str = "") -> tuple[Location, ...]:
    """A LeaderWorkerSet spec at `spec`: `replicas` groups of `size` pods. The leader template,
    when given, takes one pod of each group; without it the worker template makes them all."""
    lwt = f"{spec}.leaderWorkerTemplate"
    replicas = (count(f"{spec}.replicas"), *groups)
    workers = Count((P(f"{lwt}.size"),), less_one_with=P(f"{lwt}.leaderTemplate"))
    leader_role, worker_role = ("", "") if role_path else ("leader", "worker")
    return (
        template(f"{lwt}.leaderTemplate", *replicas, role=leader_role, role_path=role_path),
        template(
            f"{lwt}.workerTemplate", *replicas, workers, role=worker_role, role_path=role_path
        ),
    )


LEADER_WORKER_SET = Layout(leader_worker_set("spec"))
# lws/config/samples/disaggregatedset_v1_*.yaml: roles[] each an LWS spec, repeated per slice.
DISAGGREGATED_SET = Layout(
    leader_worker_set("spec.roles[*].spec", count("spec.slices"), role_path="spec.roles[*].name")
)


# --- Argo Workflows: templates[] run container, script, containerSet, init and sidecars -------


def _argo_templates(spec: str) -> tuple[Location, ...]:
    """Each template (and templateDefaults, merged into every one) is a pod. A Workflow may run
    a template many times at once (loops, parallel steps): `parallelism` bounds that, else one.
    `podSpecPatch`, of the workflow and of the template, can change any container's image."""
    containers = (
        ContainerField(P("container"), name="main"),
        ContainerField(P("script"), name="main"),
        ContainerField(P("containerSet.containers[*]")),
        ContainerField(P("sidecars[*]"), ContainerRole.SIDECAR),
    )
    pods = (count(f"{spec}.parallelism"),)
    return tuple(
        Location(
            Shape.POD_SPEC,
            P(path),
            pods,
            role_path=P(f"{path}.name"),
            containers=containers,
            annotations=P(f"{path}.metadata.annotations"),
            patches=(P(f"{spec}.podSpecPatch"), P(f"{path}.podSpecPatch")),
        )
        for path in (f"{spec}.templates[*]", f"{spec}.templateDefaults")
    )


ARGO_WORKFLOW = Layout(_argo_templates("spec"))
ARGO_CRON_WORKFLOW = Layout(_argo_templates("spec.workflowSpec"))


# --- Knative Serving: a Revision template; the autoscaler has no limit unless max-scale says ---

_KNATIVE_MAX = 'spec.template.metadata.annotations["autoscaling.knative.dev/{}"]'
KNATIVE_SERVICE = Layout(
    (
        template(
            "spec.template",
            Count(
                ceiling=(P(_KNATIVE_MAX.format("max-scale")), P(_KNATIVE_MAX.format("maxScale"))),
                zero_unset=True,
            ),
        ),
    )
)


# --- Volcano Job: tasks[] {name, replicas, template} -----------------------------------------


def _volcano_tasks(spec: str, *runs: Count) -> Layout:
    return Layout(
        (
            template(
                f"{spec}.tasks[*].template",
                count(f"{spec}.tasks[*].replicas"),
                *runs,
                role_path=f"{spec}.tasks[*].name",
            ),
        )
    )


VOLCANO_JOB = _volcano_tasks("spec")
# A JobFlow's JobTemplate (flow.volcano.sh) is a Volcano Job spec, instantiated as such.
VOLCANO_JOB_TEMPLATE = VOLCANO_JOB
# Like a Kubernetes CronJob: runs overlap, without bound, unless Forbid or Replace.
VOLCANO_CRON_JOB = _volcano_tasks(
    "spec.jobTemplate.spec",
    Count(unbounded_unless=P("spec.concurrencyPolicy"), bounded_by=("Forbid", "Replace")),
)


# --- Spark operator: driver and executors are container-shaped pod specs ----------------------


def _spark(spec: str) -> Layout:
    """The driver and executor specs carry image (else spec.image), env, gpu {name, quantity},
    initContainers, sidecars and a pod template. Dynamic allocation lets Spark add executors up to
    maxExecutors, which Spark leaves unlimited when unset."""

    def main(name: str) -> ContainerField:
        return ContainerField(
            P(""),
            name=name,
            image_default=P(f"{spec}.image"),
            gpus=P("gpu.quantity"),
            gpu_resource=P("gpu.name"),
        )

    # Spark operator v2 also merges a PodTemplateSpec (`template`) into each pod.
    extra = (
        ContainerField(P("sidecars[*]"), ContainerRole.SIDECAR),
        ContainerField(P("template.spec.containers[*]"), ContainerRole.SIDECAR),
        ContainerField(P("template.spec.initContainers[*]"), ContainerRole.INIT),
    )
    allocation = f"{spec}.dynamicAllocation"
    executors = Count(
        (
            P(f"{spec}.executor.instances"),
            P(f"{allocation}.initialExecutors"),
            P(f"{allocation}.minExecutors"),
        ),
        ceiling=(P(f"{allocation}.maxExecutors"),),
        autoscaled=P(f"{allocation}.enabled"),
    )
    return Layout(
        (
            Location(
                Shape.POD_SPEC,
                P(f"{spec}.driver"),
                role="driver",
                containers=(main("spark-kubernetes-driver"), *extra),
                annotations=P(f"{spec}.driver.annotations"),
            ),
            Location(
                Shape.POD_SPEC,
                P(f"{spec}.executor"),
                (executors,),
                role="executor",
                containers=(main("spark-kubernetes-executor"), *extra),
                annotations=P(f"{spec}.executor.annotations"),
            ),
        )
    )


SPARK_APPLICATION = _spark("spec")
SCHEDULED_SPARK_APPLICATION = _spark("spec.template")


def _spark_connect() -> Layout:
    """sparkoperator.k8s.io/v1alpha1 SparkConnect: a server pod and executors, each from an
    optional pod template; containers without an image run `spec.image`."""
    containers = (
        ContainerField(P("template.spec.containers[*]"), image_default=P("spec.image")),
        ContainerField(P("template.spec.initContainers[*]"), ContainerRole.INIT),
    )
    allocation = "spec.dynamicAllocation"
    executors = Count(
        (
            P("spec.executor.instances"),
            P(f"{allocation}.initialExecutors"),
            P(f"{allocation}.minExecutors"),
        ),
        ceiling=(P(f"{allocation}.maxExecutors"),),
        autoscaled=P(f"{allocation}.enabled"),
    )
    return Layout(
        tuple(
            Location(
                Shape.POD_SPEC,
                P(f"spec.{role}"),
                replicas,
                role=role,
                containers=containers,
                annotations=P(f"spec.{role}.template.metadata.annotations"),
            )
            for role, replicas in (("server", ()), ("executor", (executors,)))
        )
    )


SPARK_CONNECT = _spark_connect()


# --- Kubeflow Notebook -----------------------------------------------------------------------

NOTEBOOK = Layout((template("spec.template"),))


# --- Kaito: Workspace keeps resource, inference and tuning at the top level -------------------


# GPUs per node of the instance types Kaito provisions (its Azure SKU table, pkg/sku); a preset
# pod requests every GPU of its node. An instance type not listed here counts no GPUs.
KAITO_GPUS_PER_INSTANCE = MappingProxyType(
    {
        "Standard_NC6s_v3": 1,
        "Standard_NC12s_v3": 2,
        "Standard_NC24s_v3": 4,
        "Standard_NC4as_T4_v3": 1,
        "Standard_NC8as_T4_v3": 1,
        "Standard_NC16as_T4_v3": 1,
        "Standard_NC64as_T4_v3": 4,
        "Standard_NV36ads_A10_v5": 1,
        "Standard_NV72ads_A10_v5": 2,
        "Standard_NC24ads_A100_v4": 1,
        "Standard_NC48ads_A100_v4": 2,
        "Standard_NC96ads_A100_v4": 4,
        "Standard_ND96asr_A100_v4": 8,
        "Standard_ND96amsr_A100_v4": 8,
        "Standard_NC40ads_H100_v5": 1,
        "Standard_NC80adis_H100_v5": 2,
        "Standard_ND96isr_H100_v5": 8,
        "Standard_NCC40ads_H100_v5": 1,
        "Standard_ND96isr_H200_v5": 8,
        "Standard_NV12s_v3": 1,
        "Standard_NV24s_v3": 2,
        "Standard_NV48s_v3": 4,
    }
)


def _kaito(base: str, *groups: Count) -> tuple[Location, ...]:
    """`resource.count` nodes each run the inference (or tuning) pod: a custom
    `inference.template`, or a preset, whose private image is `presetOptions.image` and which
    takes every GPU of its node; LoRA adapters and tuning input data come as images too."""
    nodes = (*groups, count(f"{base}resource.count"))

    return (
        template(f"{base}inference.template", *nodes, role="inference"),
        Location(
            Shape.POD_SPEC,
            P(f"{base}inference"),
            nodes,
            role="inference",
            containers=(
                _kaito_preset(base, "inference"),
                ContainerField(P("adapters[*].source"), ContainerRole.INIT),
            ),
        ),
        Location(
            Shape.POD_SPEC,
            P(f"{base}tuning"),
            nodes,
            role="tuning",
            containers=(
                _kaito_preset(base, "tuning"),
                ContainerField(P("input"), ContainerRole.INIT, name="input"),
            ),
        ),
    )


def _kaito_preset(base: str, section: str) -> ContainerField:
    return ContainerField(
        P("preset"),
        name="preset",
        image_default=P(f"{base}{section}.preset.presetOptions.image"),
        instance_type=P(f"{base}resource.instanceType"),
        gpus_per_instance=KAITO_GPUS_PER_INSTANCE,
    )


def _kaito_models(base: str) -> tuple[ModelField, ...]:
    return tuple(
        ModelField(P(f"{base}{section}.preset.name"), prefix="kaito://")
        for section in ("inference", "tuning")
    )


KAITO_WORKSPACE = Layout(_kaito(""), _kaito_models(""))
KAITO_INFERENCE_SET = Layout(
    _kaito("spec.template.", count("spec.replicas")), _kaito_models("spec.template.")
)


# --- vLLM production-stack VLLMRuntime: image {registry, name}, resources.gpu a count --------

VLLM_RUNTIME = Layout(
    (
        Location(
            Shape.POD_SPEC,
            P("spec.deploymentConfig"),
            (
                Count(
                    (P("spec.deploymentConfig.replicas"),),
                    ceiling=(P("spec.autoscalingConfig.maxReplicas"),),
                    autoscaled=P("spec.autoscalingConfig.enabled"),
                ),
            ),
            containers=(
                ContainerField(
                    P(""),
                    name="vllm",
                    gpus=P("resources.gpu"),
                    gpu_resource=P("resources.gpuType"),
                ),
                ContainerField(P("sidecarConfig"), ContainerRole.SIDECAR, name="sidecar"),
            ),
        ),
    ),
    (ModelField(P("spec.model.modelURL"), prefix="hf://"),),
)


# --- Seldon Core 2 -----------------------------------------------------------------------------

SELDON_MODEL = Layout(models=(ModelField(P("spec.storageUri")),))
SELDON_SERVER = Layout(
    (
        Location(
            Shape.POD_SPEC,
            P("spec.podSpec"),
            (count("spec.replicas", "spec.minReplicas", "spec.maxReplicas"),),
        ),
    )
)
SELDON_SERVER_CONFIG = Layout((Location(Shape.POD_SPEC, P("spec.podSpec")),))


# --- KServe: TrainedModel loads a model into an InferenceService; InferenceGraph routes -------

TRAINED_MODEL = Layout(models=(ModelField(P("spec.model.storageUri")),))
INFERENCE_GRAPH = Layout()  # its router's image is KServe's own; steps name services


# --- CodeFlare AppWrapper: components[] embed whole objects of other kinds ---------------------

APP_WRAPPER = Layout((Location(Shape.OBJECT, P("spec.components[*].template")),))


# --- NVIDIA NIM operator (apps.nvidia.com): NIMService, NemoGuardrail --------------------------
# The operator builds one Deployment from the spec itself: `image` as {repository, tag},
# `resources`, `env`, `replicas`, and `scale` (an HPA up to `scale.hpa.maxReplicas` while
# `scale.enabled`). Guardrail servers run images too, so they are judged like the LLMs.
NIM_SERVICE = Layout(
    (
        Location(
            Shape.POD_SPEC,
            P("spec"),
            (
                Count(
                    (P("spec.replicas"),),
                    ceiling=(P("spec.scale.hpa.maxReplicas"),),
                    autoscaled=P("spec.scale.enabled"),
                ),
            ),
            containers=(ContainerField(P(""), name="nim"),),
        ),
    ),
)
