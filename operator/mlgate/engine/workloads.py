"""Every supported workload kind, reduced to the pod templates it will create.

A workload is judged through its views: each pod template with its field path, how many pods it
yields for the whole workload, and every container (app, init, sidecar, ephemeral, and the
container-shaped fields ML operators add, such as KServe's framework specs).

Views reference the submitted dicts instead of copying them: this runs on every admission request
and over files of thousands of documents. Input is untrusted, so every read is type-checked and
a malformed field yields fewer views or a conservative count, never an exception.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from dataclasses import field as dc_field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from mlgate.engine import kindspec, layouts
from mlgate.engine.kindspec import UNBOUNDED, Layout, field
from mlgate.engine.kindspec import amount as _amount
from mlgate.engine.kindspec import enabled as _enabled
from mlgate.engine.modelrefs import ModelRef, kserve_storage_refs
from mlgate.engine.reads import as_list as _list
from mlgate.engine.reads import as_map as _map
from mlgate.engine.reads import as_str as _str
from mlgate.engine.reads import is_map
from mlgate.engine.servers import ray_serve_refs


class ContainerKind(StrEnum):
    APP = "container"
    INIT = "initContainer"
    SIDECAR = "sidecar"  # an init container with restartPolicy: Always: it runs alongside the app
    EPHEMERAL = "ephemeralContainer"
    # An OCI image volume (`volumes[].image.reference`): an image like any other, never run, so
    # it carries no resources or env and is judged only by the image rules.
    IMAGE_VOLUME = "imageVolume"
    # Not a container, but an image all the same (engine.images.oci_models): an `oci://` model
    # reference, which KServe runs as a modelcar.
    MODEL = "ociModel"


@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str
    value: str | None  # None when the value comes from valueFrom and cannot be known here
    path: str


@dataclass(frozen=True, slots=True)
class EnvSource:
    """An `envFrom` entry: every key of a ConfigMap or Secret, unknown at admission, becomes an
    env var named `prefix` + key."""

    prefix: str
    path: str


@dataclass(frozen=True, slots=True)
class ContainerView:
    path: str  # of the container object, e.g. spec.template.spec.containers[1]
    name: str
    kind: ContainerKind
    image: str | None
    image_path: str
    resources: Mapping[str, Any]
    resources_path: str
    env: tuple[EnvVar, ...]
    env_from: tuple[EnvSource, ...] = ()
    security_context: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # The container as submitted: command, args and volumeMounts, where LLM servers name models.
    spec: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PodView:
    path: str  # of the pod spec, e.g. spec.template.spec
    spec: Mapping[str, Any]
    containers: tuple[ContainerView, ...]
    count: int  # pods this template yields for the whole workload
    role: str  # e.g. "predictor", "Worker", "head"; "" when the kind has one template
    annotations: Mapping[str, str]  # of the pod template's metadata


def metadata_path(pod: PodView) -> str:
    """Where a pod's annotations are: a bare Pod's or a PodTemplateSpec's metadata, else the
    component itself (KServe's `spec.predictor.annotations`)."""
    if pod.path == "spec":
        return "metadata"
    if pod.path.endswith(".spec"):
        return pod.path[: -len(".spec")] + ".metadata"
    return pod.path


@dataclass(frozen=True, slots=True)
class Unresolved:
    path: str  # of the reference that could not be followed, e.g. spec.runtimeRef
    message: str


@dataclass(frozen=True, slots=True)
class WorkloadView:
    api_version: str
    kind: str
    name: str
    namespace: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    pods: tuple[PodView, ...]
    model_refs: tuple[ModelRef, ...]  # from kind-specific fields (storageUri, model.uri, ...)
    per_node: bool = False  # DaemonSet: pod count depends on nodes, so only per-pod limits apply
    # What the operator would merge in but could not be found (a missing runtime, say): a reason
    # each, judged as a finding so the workload is never passed on half its picture.
    unresolved: tuple[Unresolved, ...] = ()
    # False for runtimes and configs: they only shape the pods of the workloads that name them,
    # so their per-pod content is judged but they count no GPUs and need no model of their own.
    runs_pods: bool = True


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A document mlgate does not know how to judge: reported, never silently passed."""

    api_version: str
    kind: str
    name: str
    namespace: str
    reason: str


# ---------------------------------------------------------------------------------------------
# Defensive reads of untrusted documents

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_NO_STRINGS: Mapping[str, str] = MappingProxyType({})


def _dig(obj: Mapping[str, Any], keys: Sequence[str]) -> Any:
    value: Any = obj
    for key in keys:
        value = _map(value).get(key)
    return value


def _strings(value: Any) -> Mapping[str, str]:
    """Labels or annotations, without the entries that are not string to string.

    The common, valid case returns the original mapping: validating is cheaper than copying.
    """
    if not is_map(value):
        return _NO_STRINGS
    if all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _count(value: Any) -> int:
    """A replica-like number that defaults to 1 when absent, as every supported kind does."""
    amount = _amount(value)
    return 1 if amount is None else amount


def _most(*values: Any) -> int | None:
    """The largest of the numbers that are present: an upper bound when several may apply."""
    amounts = [a for a in map(_amount, values) if a is not None]
    return max(amounts) if amounts else None


def _group_counts(replicas: int, size: int, has_leader: bool) -> tuple[int, int]:
    """Leader and worker pods of `replicas` LeaderWorkerSet groups of `size` pods each.

    Without a leader template the leader is built from the worker template, so that template
    then yields every pod of the group.
    """
    size = max(1, size)
    return replicas, replicas * (size - 1 if has_leader else size)


# ---------------------------------------------------------------------------------------------
# Containers and pods

_CONTAINER_LISTS = (
    ("containers", ContainerKind.APP),
    ("initContainers", ContainerKind.INIT),
    ("ephemeralContainers", ContainerKind.EPHEMERAL),
)


def _env(value: Any, path: str) -> tuple[EnvVar, ...]:
    # A plain loop: containers carry dozens of env vars and this runs on every admission.
    found = []
    for i, entry in enumerate(_list(value)):
        if not is_map(entry):
            continue
        name = entry.get("name")
        if not isinstance(name, str):
            continue
        text = entry.get("value")
        if not isinstance(text, str):
            # Without value or valueFrom Kubernetes sets it empty; valueFrom is unknown here.
            text = "" if text is None and "valueFrom" not in entry else None
        found.append(EnvVar(name, text, f"{path}[{i}]"))
    return tuple(found)


def _env_from(value: Any, path: str) -> tuple[EnvSource, ...]:
    # A prefix that is not a string (an unvalidated CRD) counts as none: the widest reading.
    if not value:
        return ()
    return tuple(
        EnvSource(_str(_map(entry).get("prefix")), f"{path}[{i}]")
        for i, entry in enumerate(_list(value))
    )


def _container(
    c: Mapping[str, Any],
    path: str,
    kind: ContainerKind,
    default_name: str = "",
    resources_key: str = "resources",
) -> ContainerView:
    name = c.get("name")
    image = c.get("image")
    return ContainerView(
        path=path,
        name=name if isinstance(name, str) else default_name,
        kind=kind,
        image=image if isinstance(image, str) else None,
        image_path=f"{path}.image",
        resources=_map(c.get(resources_key)),
        resources_path=f"{path}.{resources_key}",
        env=_env(c.get("env"), f"{path}.env"),
        env_from=_env_from(c.get("envFrom"), f"{path}.envFrom"),
        security_context=_map(c.get("securityContext")),
        spec=c,
    )


def _pod_containers(spec: Mapping[str, Any], path: str) -> Iterator[ContainerView]:
    for key, kind in _CONTAINER_LISTS:
        for i, c in enumerate(_list(spec.get(key))):
            if not is_map(c):
                continue
            if kind is ContainerKind.INIT and c.get("restartPolicy") == "Always":
                yield _container(c, f"{path}.{key}[{i}]", ContainerKind.SIDECAR)
            else:
                yield _container(c, f"{path}.{key}[{i}]", kind)


def _image_volumes(spec: Mapping[str, Any], path: str) -> Iterator[ContainerView]:
    if not spec.get("volumes"):
        return
    for i, volume in enumerate(_list(spec.get("volumes"))):
        source = _map(volume).get("image")
        if not is_map(source):
            continue
        reference = source.get("reference")
        volume_path = f"{path}.volumes[{i}]"
        yield ContainerView(
            path=volume_path,
            name=_str(_map(volume).get("name")),
            kind=ContainerKind.IMAGE_VOLUME,
            image=reference if isinstance(reference, str) else None,
            image_path=f"{volume_path}.image.reference",
            resources=_EMPTY,
            resources_path=f"{volume_path}.image",
            env=(),
        )


def _pod(
    spec: Any,
    path: str,
    count: int,
    role: str,
    annotations: Any = None,
    *,
    extra: Callable[[Mapping[str, Any], str], Iterator[ContainerView]] | None = None,
) -> Iterator[PodView]:
    """The view of the pod spec `spec` at `path`, if it is one; `extra` adds operator fields."""
    if not is_map(spec):
        return
    containers = tuple(_pod_containers(spec, path)) + tuple(_image_volumes(spec, path))
    if extra is not None:
        containers += tuple(extra(spec, path))
    yield PodView(path, spec, containers, count, role, _strings(annotations))


def _template(template: Any, path: str, count: int, role: str = "") -> Iterator[PodView]:
    """The view of a PodTemplateSpec at `path`: its pod spec and its metadata's annotations."""
    t = _map(template)
    annotations = _map(t.get("metadata")).get("annotations")
    yield from _pod(t.get("spec"), f"{path}.spec", count, role, annotations)


# ---------------------------------------------------------------------------------------------
# Layouts: where each kind keeps its pod specs, and how many pods each yields

PodLayout = Callable[[Mapping[str, Any]], Iterator[PodView]]
ModelLayout = Callable[[Mapping[str, Any]], Iterator[ModelRef]]


def _no_models(obj: Mapping[str, Any]) -> Iterator[ModelRef]:
    return iter(())


def _templated(template: tuple[str, ...], count: tuple[str, ...] | None) -> PodLayout:
    """One PodTemplateSpec at `template`, yielding `count` pods (1 when `count` is None)."""
    path = ".".join(template)

    def pods(obj: Mapping[str, Any]) -> Iterator[PodView]:
        yield from _template(
            _dig(obj, template), path, 1 if count is None else _count(_dig(obj, count))
        )

    return pods


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


def _ray(cluster: tuple[str, ...], submitter: tuple[str, ...] | None = None) -> PodLayout:
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


def _inference_service(obj: Mapping[str, Any]) -> Iterator[PodView]:
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


def _inference_service_models(obj: Mapping[str, Any]) -> Iterator[ModelRef]:
    spec = _map(obj.get("spec"))
    for name in _KSERVE_COMPONENTS:
        component = _map(spec.get(name))
        path = f"spec.{name}"
        yield from _storage_refs(component, path)
        for key, container in _kserve_container_fields(component):
            yield from _storage_refs(container, field(path, key))
            yield from kserve_storage_refs(container, field(path, key))


# --- KServe LLMInferenceService --------------------------------------------------------------


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


def _llm_inference_service(obj: Mapping[str, Any]) -> Iterator[PodView]:
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


def _llm_inference_service_models(obj: Mapping[str, Any]) -> Iterator[ModelRef]:
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


def _train_job(obj: Mapping[str, Any]) -> Iterator[PodView]:
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


def _train_job_models(obj: Mapping[str, Any]) -> Iterator[ModelRef]:
    model = _dig(obj, ("spec", "initializer", "model"))
    yield from _storage_refs(_map(model), "spec.initializer.model")


# --- Runtimes and configs: judged on their own as one pod each (mlgate.engine.effective merges
# them into the workloads that use them) ---------------------------------------------------------


def _serving_runtime(obj: Mapping[str, Any]) -> Iterator[PodView]:
    """A ServingRuntime's spec is a pod spec; `spec.workerSpec` is the multi-node worker's."""
    spec = _map(obj.get("spec"))
    yield from _pod(spec, "spec", 1, "runtime", spec.get("annotations"))
    yield from _pod(spec.get("workerSpec"), "spec.workerSpec", 1, "worker")


def _storage_container(obj: Mapping[str, Any]) -> Iterator[PodView]:
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


def _training_runtime(obj: Mapping[str, Any]) -> Iterator[PodView]:
    spec = _map(obj.get("spec"))
    nodes = _map(spec.get("mlPolicy")).get("numNodes")
    yield from replicated_jobs(_dig(spec, ("template", "spec")), "spec.template.spec", nodes)


def _device_claim(reference: str) -> PodLayout:
    """A ResourceClaim or ResourceClaimTemplate is judged as the devices one pod gets from it
    (per-pod limits and products apply). Nothing runs from it (count 0): the pods that name it
    are charged for its devices, once."""

    def pods(obj: Mapping[str, Any]) -> Iterator[PodView]:
        name = _str(_map(obj.get("metadata")).get("name"))
        claims = [{"name": "claim", reference: name}]
        yield PodView("spec", {"resourceClaims": claims}, (), 0, "", {})

    return pods


# ---------------------------------------------------------------------------------------------
# Declared layouts (engine.kindspec): what the interpreter places, as views

# AppWrappers may wrap AppWrappers; past this depth the object is not judged but refused.
_MAX_NESTING = 4


class _Unjudgeable(Exception):
    """An embedded object that cannot be judged: the whole workload is then unsupported."""


def _declared_container(
    obj: Mapping[str, Any], where: kindspec.Found, spec: kindspec.ContainerField
) -> ContainerView | None:
    node = where.value
    if not is_map(node):
        return None
    view_ = _container(node, where.path, ContainerKind(spec.role), spec.name, spec.resources)
    image, image_path = kindspec.image_text(node.get("image")), view_.image_path
    if image is None and spec.image_default is not None:
        # Judged where it is written: that is where it must be changed.
        for found in kindspec.resolve(obj, spec.image_default, "", where.bound):
            image, image_path = kindspec.image_text(found.value), found.path
    resources = view_.resources
    if (gpus := spec.gpu_request(obj, node, where.bound)) is not None:
        resources = {**resources, "limits": {**_map(resources.get("limits")), gpus[0]: gpus[1]}}
    return replace(view_, image=image, image_path=image_path, resources=resources)


def _declared_containers(
    obj: Mapping[str, Any], placed: kindspec.Placed
) -> Callable[[Mapping[str, Any], str], Iterator[ContainerView]]:
    def extra(spec: Mapping[str, Any], path: str) -> Iterator[ContainerView]:
        for field_ in placed.location.containers:
            for found in kindspec.resolve(spec, field_.path, path):
                where = kindspec.Found(found.path, found.value, placed.bound)
                container = _declared_container(obj, where, field_)
                if container is not None:
                    yield container

    return extra


def _prefixed(item: Any, prefix: str) -> Any:
    """A view of an embedded object with every path made a path of the embedding object."""
    changes: dict[str, Any] = {}
    for f in fields(item):
        value = getattr(item, f.name)
        if f.name == "path" or f.name.endswith("_path"):
            changes[f.name] = f"{prefix}.{value}"
        elif isinstance(value, tuple) and value and is_dataclass(value[0]):
            changes[f.name] = tuple(_prefixed(v, prefix) for v in value)
    return replace(item, **changes)


def _embedded(placed: kindspec.Placed, kinds: Kinds, depth: int) -> WorkloadView | None:
    """The view of an embedded object; None when it runs nothing (a Service, a ConfigMap)."""
    if depth >= _MAX_NESTING:
        raise _Unjudgeable(f"{placed.path}: objects nested more than {_MAX_NESTING} deep")
    inner = _view(placed.node, kinds, depth + 1)
    if isinstance(inner, Unsupported):
        if not kindspec.may_run(placed.node):
            return None
        raise _Unjudgeable(f"{placed.path}: {inner.reason}")
    pods = tuple(
        replace(_prefixed(p, placed.path), count=min(UNBOUNDED, p.count * placed.count))
        for p in inner.pods
    )
    models = tuple(_prefixed(m, placed.path) for m in inner.model_refs)
    return replace(inner, pods=pods, model_refs=models)


def _declared_pods(
    layout: Layout, obj: Mapping[str, Any], kinds: Kinds, depth: int
) -> Iterator[PodView | ModelRef]:
    for placed in kindspec.place(obj, layout):
        location = placed.location
        if location.shape is kindspec.Shape.OBJECT:
            inner = _embedded(placed, kinds, depth)
            if inner is not None:
                yield from inner.pods
                yield from inner.model_refs
            continue
        spec, path, annotations = placed.node, placed.path, None
        if location.shape is kindspec.Shape.POD_TEMPLATE:
            template = _map(placed.node)
            spec, path = template.get("spec"), f"{path}.spec"
            annotations = _map(template.get("metadata")).get("annotations")
        elif location.annotations is not None:
            annotations = kindspec.first(obj, location.annotations, placed.bound)
        extra = _declared_containers(obj, placed) if location.containers else None
        for pod in _pod(spec, path, placed.count, placed.role, annotations, extra=extra):
            yield _patched(pod, obj, placed)


def _patched(pod: PodView, obj: Mapping[str, Any], placed: kindspec.Placed) -> PodView:
    """The pod after its text patches: a patched container runs the patch's image and resources
    (judged where the patch is written), a new one is added, other fields are replaced."""
    for where in placed.location.patches:
        for found in kindspec.resolve(obj, where, "", placed.bound):
            patch = kindspec.pod_patch(found.value)
            if patch is None:
                raise _Unjudgeable(f"{found.path}: a pod patch mlgate cannot read as a mapping")
            containers = list(pod.containers)
            for key, kind in _CONTAINER_LISTS:
                for entry in _list(patch.get(key)):
                    if is_map(entry):
                        _patch_container(containers, entry, found.path, kind)
            rest = {k: v for k, v in patch.items() if k not in dict(_CONTAINER_LISTS)}
            pod = replace(pod, spec={**pod.spec, **rest}, containers=tuple(containers))
    return pod


def _patch_container(
    containers: list[ContainerView], entry: Mapping[str, Any], path: str, kind: ContainerKind
) -> None:
    name = entry.get("name")
    for i, current in enumerate(containers):
        if name is not None and current.name == name:
            changes: dict[str, Any] = {}
            if "image" in entry:
                changes.update(image=kindspec.image_text(entry["image"]), image_path=path)
            if "resources" in entry:
                resources = {**current.resources, **_map(entry["resources"])}
                changes.update(resources=resources, resources_path=path)
            containers[i] = replace(current, **changes)
            return
    containers.append(_container(entry, path, kind))


def _declared_models(layout: Layout, obj: Mapping[str, Any]) -> Iterator[ModelRef]:
    for value, path in kindspec.models(obj, layout):
        yield ModelRef(value, path)


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True, slots=True)
class KindSpec:
    """A supported kind: how the apiserver names it, and where its pods and models are.

    `pods` is a declarative `Layout` where the form can say what the operator does, else a code
    hook (with `models` its model references).
    """

    group: str  # "" for the core group
    kind: str
    plural: str  # the resource name webhook rules and RBAC use
    versions: tuple[str, ...]
    pods: PodLayout | Layout
    models: ModelLayout = _no_models
    per_node: bool = False
    subresources: tuple[str, ...] = ()  # also admitted, e.g. pods/ephemeralcontainers
    cluster_scoped: bool = False  # e.g. ClusterServingRuntime, Argo's ClusterWorkflowTemplate
    runs_pods: bool = True  # False for runtimes and configs (see WorkloadView.runs_pods)
    # Where /scale writes the replica count (the CRD's scale specpath).
    scale_path: tuple[str, ...] = ("spec", "replicas")

    @property
    def api_versions(self) -> tuple[str, ...]:
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)

    @property
    def scope(self) -> str:
        return "Cluster" if self.cluster_scoped else "Namespaced"


# `kubectl scale` and autoscalers change replicas through /scale, which must be judged too.
_SCALE = ("scale",)
_REPLICATED = layouts.REPLICATED


def _cron_job(obj: Mapping[str, Any]) -> Iterator[PodView]:
    """A CronJob's Jobs. Under concurrencyPolicy Allow (the default) a run that outlasts the
    schedule overlaps the next, and nothing bounds how many pile up: unbounded. Forbid and
    Replace keep one Job at a time."""
    spec = _map(obj.get("spec"))
    job = _map(_map(spec.get("jobTemplate")).get("spec"))
    overlapping = spec.get("concurrencyPolicy") not in ("Forbid", "Replace")
    count = UNBOUNDED if overlapping else _count(job.get("parallelism"))
    yield from _template(job.get("template"), "spec.jobTemplate.spec.template", count)


_KF = "kubeflow.org"
_KSERVE = "serving.kserve.io"
_TRAINER = "trainer.kubeflow.org"
_RAY, _RAY_VERSIONS = "ray.io", ("v1", "v1alpha1")
_DRA, _DRA_VERSIONS = "resource.k8s.io", ("v1", "v1beta2", "v1beta1")
_ARGO = "argoproj.io"
_KAITO, _KAITO_VERSIONS = "kaito.sh", ("v1beta1", "v1alpha1")
_SPARK = "sparkoperator.k8s.io"
_SELDON = "mlops.seldon.io"
_NIM = "apps.nvidia.com"

SUPPORTED: tuple[KindSpec, ...] = (
    KindSpec("", "Pod", "pods", ("v1",), layouts.POD, subresources=("ephemeralcontainers",)),
    KindSpec("apps", "Deployment", "deployments", ("v1",), _REPLICATED, subresources=_SCALE),
    KindSpec("apps", "ReplicaSet", "replicasets", ("v1",), _REPLICATED, subresources=_SCALE),
    KindSpec("apps", "StatefulSet", "statefulsets", ("v1",), _REPLICATED, subresources=_SCALE),
    KindSpec(
        "", "ReplicationController", "replicationcontrollers", ("v1",), layouts.REPLICATED,
        subresources=_SCALE,
    ),
    KindSpec("apps", "DaemonSet", "daemonsets", ("v1",), layouts.PER_NODE, per_node=True),
    KindSpec("batch", "Job", "jobs", ("v1",), layouts.JOB),
    KindSpec("batch", "CronJob", "cronjobs", ("v1",), _cron_job),
    KindSpec(
        _DRA, "ResourceClaim", "resourceclaims", _DRA_VERSIONS,
        _device_claim("resourceClaimName"),
    ),
    KindSpec(
        _DRA, "ResourceClaimTemplate", "resourceclaimtemplates", _DRA_VERSIONS,
        _device_claim("resourceClaimTemplateName"),
    ),
    KindSpec(
        _KSERVE, "InferenceService", "inferenceservices", ("v1beta1",),
        _inference_service, _inference_service_models,
    ),
    KindSpec(
        _KSERVE, "LLMInferenceService", "llminferenceservices", ("v1alpha1", "v1alpha2"),
        _llm_inference_service, _llm_inference_service_models,
    ),
    KindSpec(_KSERVE, "TrainedModel", "trainedmodels", ("v1alpha1",), layouts.TRAINED_MODEL),
    KindSpec(_KSERVE, "InferenceGraph", "inferencegraphs", ("v1alpha1",), layouts.INFERENCE_GRAPH),
    KindSpec(
        _KF, "PyTorchJob", "pytorchjobs", ("v1",),
        layouts.replica_specs("pytorchReplicaSpecs", "Worker"),
    ),
    KindSpec(_KF, "TFJob", "tfjobs", ("v1",), layouts.replica_specs("tfReplicaSpecs")),
    KindSpec(_KF, "MPIJob", "mpijobs", ("v1", "v2beta1"), layouts.replica_specs("mpiReplicaSpecs")),
    KindSpec(_KF, "XGBoostJob", "xgboostjobs", ("v1",), layouts.replica_specs("xgbReplicaSpecs")),
    KindSpec(_KF, "PaddleJob", "paddlejobs", ("v1",), layouts.replica_specs("paddleReplicaSpecs")),
    KindSpec(_KF, "JAXJob", "jaxjobs", ("v1",), layouts.replica_specs("jaxReplicaSpecs")),
    KindSpec(_KF, "Notebook", "notebooks", ("v1", "v1beta1", "v1alpha1"), layouts.NOTEBOOK),
    KindSpec(
        _TRAINER, "TrainJob", "trainjobs", ("v1alpha1",),
        _train_job, _train_job_models,
    ),
    KindSpec(_RAY, "RayCluster", "rayclusters", _RAY_VERSIONS, _ray(("spec",))),
    KindSpec(
        _RAY, "RayJob", "rayjobs", _RAY_VERSIONS,
        _ray(("spec", "rayClusterSpec"), ("spec", "submitterPodTemplate")),
    ),
    KindSpec(
        _RAY, "RayService", "rayservices", _RAY_VERSIONS, _ray(("spec", "rayClusterConfig")),
        ray_serve_refs,
    ),
    KindSpec(
        _RAY, "RayCronJob", "raycronjobs", ("v1",),
        _ray(
            ("spec", "jobTemplate", "rayClusterSpec"),
            ("spec", "jobTemplate", "submitterPodTemplate"),
        ),
    ),
    KindSpec("jobset.x-k8s.io", "JobSet", "jobsets", ("v1alpha2",), layouts.JOBSET),
    KindSpec(
        "leaderworkerset.x-k8s.io", "LeaderWorkerSet", "leaderworkersets", ("v1",),
        layouts.LEADER_WORKER_SET,
    ),
    KindSpec(
        "disaggregatedset.x-k8s.io", "DisaggregatedSet", "disaggregatedsets", ("v1",),
        layouts.DISAGGREGATED_SET,
    ),
    KindSpec(_ARGO, "Workflow", "workflows", ("v1alpha1",), layouts.ARGO_WORKFLOW),
    KindSpec(_ARGO, "WorkflowTemplate", "workflowtemplates", ("v1alpha1",), layouts.ARGO_WORKFLOW),
    KindSpec(
        _ARGO, "ClusterWorkflowTemplate", "clusterworkflowtemplates", ("v1alpha1",),
        layouts.ARGO_WORKFLOW, cluster_scoped=True,
    ),
    KindSpec(_ARGO, "CronWorkflow", "cronworkflows", ("v1alpha1",), layouts.ARGO_CRON_WORKFLOW),
    KindSpec("serving.knative.dev", "Service", "services", ("v1",), layouts.KNATIVE_SERVICE),
    KindSpec("batch.volcano.sh", "Job", "jobs", ("v1alpha1",), layouts.VOLCANO_JOB),
    KindSpec("batch.volcano.sh", "CronJob", "cronjobs", ("v1alpha1",), layouts.VOLCANO_CRON_JOB),
    KindSpec(
        "flow.volcano.sh", "JobTemplate", "jobtemplates", ("v1alpha1",),
        layouts.VOLCANO_JOB_TEMPLATE,
    ),
    KindSpec(
        _SPARK, "SparkApplication", "sparkapplications", ("v1beta2",), layouts.SPARK_APPLICATION
    ),
    KindSpec(
        _SPARK, "ScheduledSparkApplication", "scheduledsparkapplications", ("v1beta2",),
        layouts.SCHEDULED_SPARK_APPLICATION,
    ),
    KindSpec(_SPARK, "SparkConnect", "sparkconnects", ("v1alpha1",), layouts.SPARK_CONNECT),
    KindSpec(_KAITO, "Workspace", "workspaces", _KAITO_VERSIONS, layouts.KAITO_WORKSPACE),
    KindSpec(
        _KAITO, "InferenceSet", "inferencesets", ("v1alpha1",), layouts.KAITO_INFERENCE_SET,
        subresources=_SCALE,
    ),
    KindSpec(
        "production-stack.vllm.ai", "VLLMRuntime", "vllmruntimes", ("v1alpha1",),
        layouts.VLLM_RUNTIME, subresources=_SCALE,
        scale_path=("spec", "deploymentConfig", "replicas"),
    ),
    KindSpec(_NIM, "NIMService", "nimservices", ("v1alpha1",), layouts.NIM_SERVICE),
    KindSpec(_NIM, "NemoGuardrail", "nemoguardrails", ("v1alpha1",), layouts.NIM_SERVICE),
    KindSpec(_SELDON, "Model", "models", ("v1alpha1",), layouts.SELDON_MODEL),
    KindSpec(
        _SELDON, "Server", "servers", ("v1alpha1",), layouts.SELDON_SERVER, subresources=_SCALE
    ),
    KindSpec(_SELDON, "ServerConfig", "serverconfigs", ("v1alpha1",), layouts.SELDON_SERVER_CONFIG),
    KindSpec(
        "workload.codeflare.dev", "AppWrapper", "appwrappers", ("v1beta2",), layouts.APP_WRAPPER
    ),
    KindSpec(
        _KSERVE, "ServingRuntime", "servingruntimes", ("v1alpha1",), _serving_runtime,
        runs_pods=False,
    ),
    KindSpec(
        _KSERVE, "ClusterServingRuntime", "clusterservingruntimes", ("v1alpha1",),
        _serving_runtime, cluster_scoped=True, runs_pods=False,
    ),
    KindSpec(
        _KSERVE, "ClusterStorageContainer", "clusterstoragecontainers", ("v1alpha1",),
        _storage_container, cluster_scoped=True, runs_pods=False,
    ),
    KindSpec(
        _KSERVE, "LLMInferenceServiceConfig", "llminferenceserviceconfigs",
        ("v1alpha1", "v1alpha2"), _llm_inference_service, _llm_inference_service_models,
        runs_pods=False,
    ),
    KindSpec(
        _TRAINER, "TrainingRuntime", "trainingruntimes", ("v1alpha1",), _training_runtime,
        runs_pods=False,
    ),
    KindSpec(
        _TRAINER, "ClusterTrainingRuntime", "clustertrainingruntimes", ("v1alpha1",),
        _training_runtime, cluster_scoped=True, runs_pods=False,
    ),
)  # fmt: skip

GroupKind = tuple[str, str]
BUILT_IN: Mapping[GroupKind, KindSpec] = MappingProxyType({(s.group, s.kind): s for s in SUPPORTED})


@dataclass(frozen=True, slots=True)
class Kinds:
    """The kinds mlgate judges: the built-in table, then kinds declared by WorkloadKinds.

    A declared kind never replaces a built-in one: a WorkloadKind must not be able to redefine
    where a Deployment keeps its pods.
    """

    declared: Mapping[GroupKind, KindSpec] = dc_field(default_factory=dict)

    def get(self, group: str, kind: str) -> KindSpec | None:
        return BUILT_IN.get((group, kind)) or self.declared.get((group, kind))

    def lookup(self, api_version: str, kind: str) -> KindSpec | None:
        """The kind an object belongs to. The version is ignored: no supported kind changes where
        it keeps its pods between the versions it serves."""
        return self.get(group_of(api_version), kind)


BUILT_IN_ONLY = Kinds()


def group_of(api_version: str) -> str:
    """The API group of an apiVersion: "" for the core group's bare "v1"."""
    return api_version.rpartition("/")[0]


def lookup(api_version: str, kind: str, kinds: Kinds = BUILT_IN_ONLY) -> KindSpec | None:
    return kinds.lookup(api_version, kind)


def view(obj: Mapping[str, Any], kinds: Kinds = BUILT_IN_ONLY) -> WorkloadView | Unsupported:
    """The pod templates, counts and model references of one Kubernetes object."""
    return _view(obj, kinds, 0)


def _view(obj: Any, kinds: Kinds, depth: int) -> WorkloadView | Unsupported:
    if not is_map(obj):
        return Unsupported("", "", "", "", "not a Kubernetes object: a document must be a mapping")
    meta = _map(obj.get("metadata"))
    api_version, kind = _str(obj.get("apiVersion")), _str(obj.get("kind"))
    name = _str(meta.get("name")) or _str(meta.get("generateName"))
    namespace = _str(meta.get("namespace"))
    if not api_version or not kind:
        reason = "not a Kubernetes object: apiVersion and kind must be non-empty strings"
        return Unsupported(api_version, kind, name, namespace, reason)
    spec = kinds.lookup(api_version, kind)
    if spec is None:
        reason = f"{kind} ({api_version}) is not a workload kind mlgate supports"
        return Unsupported(api_version, kind, name, namespace, reason)
    if isinstance(spec.pods, Layout):
        try:
            found = tuple(_declared_pods(spec.pods, obj, kinds, depth))
        except _Unjudgeable as exc:
            return Unsupported(api_version, kind, name, namespace, str(exc))
        pods = tuple(p for p in found if isinstance(p, PodView))
        embedded = tuple(m for m in found if isinstance(m, ModelRef))
        models = (*_declared_models(spec.pods, obj), *embedded)
    else:
        pods, models = tuple(spec.pods(obj)), tuple(spec.models(obj))
    return WorkloadView(
        api_version=api_version,
        kind=kind,
        name=name,
        namespace=namespace,
        labels=_strings(meta.get("labels")),
        annotations=_strings(meta.get("annotations")),
        pods=pods,
        model_refs=models,
        per_node=spec.per_node,
        runs_pods=spec.runs_pods,
    )
