"""Code hooks: the kinds whose pods a declarative layout (engine.layouts) cannot describe.

KServe's framework detection and runtimes, Ray's autoscaler, TrainJob's runtime patches,
CronJob's concurrency and the DRA claim kinds: each hook yields the kind's pod views (and, where
the kind names models in its own fields, its model references) for the `workloads` table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mlgate.engine.kindspec import UNBOUNDED, field
from mlgate.engine.kindspec import amount as _amount
from mlgate.engine.kindspec import enabled as _enabled
from mlgate.engine.modelrefs import ModelRef, kserve_storage_refs
from mlgate.engine.reads import as_list as _list
from mlgate.engine.reads import as_map as _map
from mlgate.engine.reads import as_str as _str
from mlgate.engine.reads import is_map
from mlgate.engine.views import EMPTY as _EMPTY
from mlgate.engine.views import NO_STRINGS as _NO_STRINGS
from mlgate.engine.views import ContainerKind, ContainerView, PodView
from mlgate.engine.views import container_view as _container
from mlgate.engine.views import count_of as _count
from mlgate.engine.views import dig as _dig
from mlgate.engine.views import most as _most
from mlgate.engine.views import pod_views as _pod
from mlgate.engine.views import strings as _strings
from mlgate.engine.views import template_views as _template

# What a hook is: the pod views of an object, and the model references of its own fields.
PodLayout = Callable[[Mapping[str, Any]], Iterator[PodView]]
ModelLayout = Callable[[Mapping[str, Any]], Iterator[ModelRef]]


def no_models(obj: Mapping[str, Any]) -> Iterator[ModelRef]:
    return iter(())


def _ray_workers(group: Mapping[str, Any], autoscaling: bool) -> int:
    """Pods of one Ray worker group.

    With in-tree autoscaling the autoscaler may grow the group to maxReplicas by itself. Without
    it KubeRay keeps `replicas` (at least minReplicas), and raising it is an update that is judged
    again, so maxReplicas (which the CRD always defaults) is not a bound worth denying for.
    """
    replicas, low, high = (group.get(k) for k in ("replicas", "minReplicas", "maxReplicas"))
    if autoscaling:
        pods = _most(UNBOUNDED if high is None else high, replicas, low)
    else:
        pods = _most(replicas, low)
    hosts = max(1, _count(group.get("numOfHosts")))
    return (1 if pods is None else pods) * hosts


def _ray_autoscaler(
    options: Mapping[str, Any], path: str
) -> Callable[..., Iterator[ContainerView]]:
    """KubeRay injects the autoscaler into the head pod with `autoscalerOptions.image` (else the
    head's own Ray image, judged already) and `autoscalerOptions.resources`."""

    def extra(_: Mapping[str, Any], __: str) -> Iterator[ContainerView]:
        if isinstance(options.get("image"), str):
            yield _container(options, path, ContainerKind.APP, "autoscaler")

    return extra


def _ray_cluster(value: Any, path: str) -> Iterator[PodView]:
    cluster = _map(value)
    autoscaling = _enabled(cluster.get("enableInTreeAutoscaling"))
    head = _map(_map(cluster.get("headGroupSpec")).get("template"))
    options = _map(cluster.get("autoscalerOptions"))
    yield from _pod(
        head.get("spec"),
        f"{path}.headGroupSpec.template.spec",
        1,
        "head",
        _map(head.get("metadata")).get("annotations"),
        extra=_ray_autoscaler(options, f"{path}.autoscalerOptions") if autoscaling else None,
    )
    for i, group in enumerate(_list(cluster.get("workerGroupSpecs"))):
        if is_map(group):
            role = _str(group.get("groupName")) or "worker"
            count = _ray_workers(group, autoscaling)
            template_path = f"{path}.workerGroupSpecs[{i}].template"
            yield from _template(group.get("template"), template_path, count, role)


def ray(cluster: tuple[str, ...], submitter: tuple[str, ...] | None = None) -> PodLayout:
    """A RayCluster spec at `cluster`; for RayJob also the PodTemplateSpec at `submitter`."""
    path = ".".join(cluster)

    def pods(obj: Mapping[str, Any]) -> Iterator[PodView]:
        yield from _ray_cluster(_dig(obj, cluster), path)
        if submitter is not None:
            template = _dig(obj, submitter)
            yield from _template(template, ".".join(submitter), 1, "submitter")

    return pods


# --- KServe InferenceService -----------------------------------------------------------------

_KSERVE_COMPONENTS = ("predictor", "transformer", "explainer")
# Framework fields are inlined v1.Container objects: KServe runs them as the main container.
_KSERVE_FRAMEWORKS = frozenset(
    {"model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface"}
    | {"pmml", "lightgbm", "paddle", "art", "alibi"}
)
# Mapping-valued component fields whose Go type is not a container: an `image` key in them is
# never run, so they must not be mistaken for the unknown container-shaped fields below.
_KSERVE_NOT_CONTAINERS = frozenset(
    {"workerSpec", "resources", "nodeSelector", "affinity", "securityContext", "dnsConfig"}
    | {"overhead", "os", "labels", "annotations", "logger", "batcher", "autoScaling"}
    | {"deploymentStrategy"}
)


def _kserve_container_fields(
    component: Mapping[str, Any],
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The component's container-shaped fields: known frameworks, and, so that a framework added
    by a newer KServe (or an unvalidated CRD) cannot smuggle an image past us, any other mapping
    that carries an `image` or `resources`."""
    for key, value in component.items():
        if not is_map(value) or key in _KSERVE_NOT_CONTAINERS:
            continue
        if key in _KSERVE_FRAMEWORKS or "image" in value or "resources" in value:
            yield str(key), value


def _kserve_framework_containers(
    component: Mapping[str, Any], path: str
) -> Iterator[ContainerView]:
    for key, value in _kserve_container_fields(component):
        yield _container(value, field(path, key), ContainerKind.APP, default_name=key)


# KServe's deployment modes whose autoscaler is Knative's; an unset mode is the upstream
# configmap's default (Serverless), so it counts as Knative too.
_KNATIVE_MODES = frozenset({"", "Serverless", "Knative"})
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"


def _kserve_replicas(component: Mapping[str, Any], serverless: bool) -> int:
    """Pods of one component: maxReplicas (or minReplicas, if larger or alone), else 1.

    maxReplicas 0 is KServe's "unset". Under Knative that means no ceiling at all (max-scale 0),
    so a Serverless component without maxReplicas is unbounded; a Standard (raw) one keeps
    minReplicas. A scale-to-zero component (minReplicas 0) still runs a pod as soon as traffic
    arrives, so it counts as at least one.
    """
    ceiling = _amount(component.get("maxReplicas")) or None
    if ceiling is None and serverless:
        return UNBOUNDED
    pods = _most(ceiling, component.get("minReplicas"))
    return max(1, 1 if pods is None else pods)


def kserve_serverless(obj: Mapping[str, Any]) -> bool:
    """Whether KServe deploys this InferenceService with Knative (its default mode)."""
    mode = _strings(_map(obj.get("metadata")).get("annotations")).get(DEPLOYMENT_MODE, "")
    return mode in _KNATIVE_MODES


def _kserve_workers(worker: Mapping[str, Any], predictors: int) -> int:
    """Pods of `spec.predictor.workerSpec`: each predictor pod heads a group of
    pipelineParallelSize nodes, itself one of them; at least one worker when the spec exists."""
    return predictors * max(1, _count(worker.get("pipelineParallelSize")) - 1)


def inference_service(obj: Mapping[str, Any]) -> Iterator[PodView]:
    spec = _map(obj.get("spec"))
    serverless = kserve_serverless(obj)
    for name in _KSERVE_COMPONENTS:
        component = spec.get(name)
        if not is_map(component):
            continue
        count = _kserve_replicas(component, serverless)
        path = f"spec.{name}"
        annotations = component.get("annotations")
        yield from _pod(
            component, path, count, name, annotations, extra=_kserve_framework_containers
        )
        worker = component.get("workerSpec")
        if name == "predictor" and is_map(worker):
            yield from _pod(worker, f"{path}.workerSpec", _kserve_workers(worker, count), "worker")


def _storage_refs(holder: Mapping[str, Any], path: str) -> Iterator[ModelRef]:
    uri = holder.get("storageUri")
    if isinstance(uri, str):
        yield ModelRef(uri, f"{path}.storageUri")
    for i, entry in enumerate(_list(holder.get("storageUris"))):
        if isinstance(entry, str):
            yield ModelRef(entry, f"{path}.storageUris[{i}]")
            continue
        uri = _map(entry).get("uri")
        if isinstance(uri, str):
            yield ModelRef(uri, f"{path}.storageUris[{i}].uri")


def inference_service_models(obj: Mapping[str, Any]) -> Iterator[ModelRef]:
    spec = _map(obj.get("spec"))
    for name in _KSERVE_COMPONENTS:
        component = _map(spec.get(name))
        path = f"spec.{name}"
        yield from _storage_refs(component, path)
        for key, container in _kserve_container_fields(component):
            yield from _storage_refs(container, field(path, key))
            yield from kserve_storage_refs(container, field(path, key))


# --- KServe LLMInferenceService --------------------------------------------------------------


def _group_counts(replicas: int, size: int, has_leader: bool) -> tuple[int, int]:
    """Leader and worker pods of `replicas` LeaderWorkerSet groups of `size` pods each.

    Without a leader template the leader is built from the worker template, so that template
    then yields every pod of the group.
    """
    size = max(1, size)
    return replicas, replicas * (size - 1 if has_leader else size)


def _llm_group_size(parallelism: Any) -> int:
    """Pods per multi-node replica, as KServe sizes the LeaderWorkerSet it creates: data / dataLocal
    under data parallelism, else the pipeline size, else 1."""
    p = _map(parallelism)
    data, local, pipeline = (_amount(p.get(k)) for k in ("data", "dataLocal", "pipeline"))
    if data or local:
        return max(1, max(data or 1, 1) // max(local or 1, 1))
    return pipeline or 1


def _llm_workload(
    workload: Mapping[str, Any], path: str, role: str, worker_role: str
) -> Iterator[PodView]:
    """One WorkloadSpec (main or prefill): `template` alone is a Deployment; with `worker` it is a
    LeaderWorkerSet whose leader is `template`. `scaling` lets an autoscaler reach maxReplicas."""
    scaling = _map(workload.get("scaling"))
    replicas = _most(
        workload.get("replicas"), scaling.get("maxReplicas"), scaling.get("minReplicas")
    )
    replicas = 1 if replicas is None else replicas
    template, worker = workload.get("template"), workload.get("worker")
    leaders, workers = replicas, 0
    if is_map(worker):
        size = _llm_group_size(workload.get("parallelism"))
        leaders, workers = _group_counts(replicas, size, is_map(template))
    annotations = workload.get("annotations")
    yield from _pod(template, f"{path}.template", leaders, role, annotations)
    yield from _pod(worker, f"{path}.worker", workers, worker_role, annotations)


def llm_inference_service(obj: Mapping[str, Any]) -> Iterator[PodView]:
    spec = _map(obj.get("spec"))
    yield from _llm_workload(spec, "spec", "main", "worker")
    prefill = spec.get("prefill")
    if is_map(prefill):
        yield from _llm_workload(prefill, "spec.prefill", "prefill", "prefill-worker")
    # The router's endpoint picker and tokenizer are user-supplied pod specs too: images to judge.
    scheduler = _map(_map(spec.get("router")).get("scheduler"))
    path = "spec.router.scheduler"
    replicas = _count(scheduler.get("replicas"))
    annotations = scheduler.get("annotations")
    yield from _pod(
        scheduler.get("template"), f"{path}.template", replicas, "scheduler", annotations
    )
    tokenizer = _map(scheduler.get("tokenizer")).get("template")
    yield from _pod(tokenizer, f"{path}.tokenizer.template", 1, "tokenizer")


def llm_inference_service_models(obj: Mapping[str, Any]) -> Iterator[ModelRef]:
    model = _map(_map(obj.get("spec")).get("model"))
    uri = model.get("uri")
    if isinstance(uri, str):
        yield ModelRef(uri, "spec.model.uri")
    # LoRA adapters are model weights loaded into the server: they need approval like the base.
    for i, adapter in enumerate(_list(_map(model.get("lora")).get("adapters"))):
        uri = _map(adapter).get("uri")
        if isinstance(uri, str):
            yield ModelRef(uri, f"spec.model.lora.adapters[{i}].uri")


# --- Kubeflow TrainJob -----------------------------------------------------------------------


def train_job(obj: Mapping[str, Any]) -> Iterator[PodView]:
    """`spec.trainer` is container-shaped (image, env, resourcesPerNode) rather than a pod spec; the
    rest of the pod comes from the cluster's TrainingRuntime, outside the submitter's control."""
    trainer = _map(obj.get("spec")).get("trainer")
    if not is_map(trainer):
        return
    container = _container(
        trainer, "spec.trainer", ContainerKind.APP, "trainer", "resourcesPerNode"
    )
    path, overrides = _trainer_overrides(_map(obj.get("spec")))
    yield PodView(
        path, overrides, (container,), _count(trainer.get("numNodes")), "trainer", _NO_STRINGS
    )


# The job name Kubeflow's training runtimes give the trainer nodes.
_TRAINER_JOBS = frozenset({"node", "trainer"})


def _trainer_overrides(spec: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The podSpecOverrides entry for the trainer nodes: where nodeSelector and affinity live."""
    for i, override in enumerate(_list(spec.get("podSpecOverrides"))):
        targets = _list(_map(override).get("targetJobs"))
        if any(_map(t).get("name") in _TRAINER_JOBS for t in targets):
            return f"spec.podSpecOverrides[{i}]", _map(override)
    return "spec.trainer", _EMPTY


def train_job_models(obj: Mapping[str, Any]) -> Iterator[ModelRef]:
    model = _dig(obj, ("spec", "initializer", "model"))
    yield from _storage_refs(_map(model), "spec.initializer.model")


# --- Runtimes and configs: judged on their own as one pod each (mlgate.engine.effective merges
# them into the workloads that use them) ---------------------------------------------------------


def serving_runtime(obj: Mapping[str, Any]) -> Iterator[PodView]:
    """A ServingRuntime's spec is a pod spec; `spec.workerSpec` is the multi-node worker's."""
    spec = _map(obj.get("spec"))
    yield from _pod(spec, "spec", 1, "runtime", spec.get("annotations"))
    yield from _pod(spec.get("workerSpec"), "spec.workerSpec", 1, "worker")


def storage_container(obj: Mapping[str, Any]) -> Iterator[PodView]:
    """A ClusterStorageContainer: the model-download init container KServe injects."""
    spec = _map(obj.get("spec"))
    container = spec.get("container")
    if is_map(container):
        view = _container(container, "spec.container", ContainerKind.INIT, "storage-initializer")
        yield PodView("spec", spec, (view,), 1, "storage-initializer", _NO_STRINGS)


def replicated_jobs(jobset_spec: Any, path: str, nodes: Any = None) -> Iterator[PodView]:
    """A JobSet spec's jobs; the trainer's job (`node`) runs `nodes` pods when that is given (a
    TrainJob's or its runtime's numNodes, read like any replica count)."""
    for i, rjob in enumerate(_list(_map(jobset_spec).get("replicatedJobs"))):
        if not is_map(rjob):
            continue
        name = _str(rjob.get("name"))
        job = _map(_map(rjob.get("template")).get("spec"))
        count = _count(rjob.get("replicas")) * _count(job.get("parallelism"))
        if nodes is not None and name in _TRAINER_JOBS:
            count = _count(nodes)
        template_path = f"{path}.replicatedJobs[{i}].template.spec.template"
        yield from _template(job.get("template"), template_path, count, name)


def training_runtime(obj: Mapping[str, Any]) -> Iterator[PodView]:
    spec = _map(obj.get("spec"))
    nodes = _map(spec.get("mlPolicy")).get("numNodes")
    yield from replicated_jobs(_dig(spec, ("template", "spec")), "spec.template.spec", nodes)


def device_claim(reference: str) -> PodLayout:
    """A ResourceClaim or ResourceClaimTemplate is judged as the devices one pod gets from it
    (per-pod limits and products apply). Nothing runs from it (count 0): the pods that name it
    are charged for its devices, once."""

    def pods(obj: Mapping[str, Any]) -> Iterator[PodView]:
        name = _str(_map(obj.get("metadata")).get("name"))
        claims = [{"name": "claim", reference: name}]
        yield PodView("spec", {"resourceClaims": claims}, (), 0, "", {})

    return pods


def cron_job(obj: Mapping[str, Any]) -> Iterator[PodView]:
    """A CronJob's Jobs. Under concurrencyPolicy Allow (the default) a run that outlasts the
    schedule overlaps the next, and nothing bounds how many pile up: unbounded. Forbid and
    Replace keep one Job at a time."""
    spec = _map(obj.get("spec"))
    job = _map(_map(spec.get("jobTemplate")).get("spec"))
    overlapping = spec.get("concurrencyPolicy") not in ("Forbid", "Replace")
    count = UNBOUNDED if overlapping else _count(job.get("parallelism"))
    yield from _template(job.get("template"), "spec.jobTemplate.spec.template", count)
