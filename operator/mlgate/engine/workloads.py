"""Every supported workload kind, reduced to the pod templates it will create.

A workload is judged through its views: each pod template with its field path, how many pods it
yields for the whole workload, and every container (app, init, sidecar, ephemeral, and the
container-shaped fields ML operators add, such as KServe's framework specs).

Views reference the submitted dicts instead of copying them: this runs on every admission request
and over files of thousands of documents. Input is untrusted, so every read is type-checked and
a malformed field yields fewer views or a conservative count, never an exception.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class ContainerKind(StrEnum):
    APP = "container"
    INIT = "initContainer"
    SIDECAR = "sidecar"  # an init container with restartPolicy: Always: it runs alongside the app
    EPHEMERAL = "ephemeralContainer"
    # Not a container, but an image all the same (engine.images.oci_models): an `oci://` model
    # reference, which KServe runs as a modelcar.
    MODEL = "ociModel"


@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str
    value: str | None  # None when the value comes from valueFrom and cannot be known here
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


@dataclass(frozen=True, slots=True)
class PodView:
    path: str  # of the pod spec, e.g. spec.template.spec
    spec: Mapping[str, Any]
    containers: tuple[ContainerView, ...]
    count: int  # pods this template yields for the whole workload
    role: str  # e.g. "predictor", "Worker", "head"; "" when the kind has one template
    annotations: Mapping[str, str]  # of the pod template's metadata


@dataclass(frozen=True, slots=True)
class ModelRef:
    value: str
    path: str


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


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A document mlgate does not know how to judge: reported, never silently passed."""

    api_version: str
    kind: str
    name: str
    namespace: str
    reason: str


# ---------------------------------------------------------------------------------------------
# Field paths

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def field(path: str, key: str) -> str:
    """The path of `key` under `path`: dotted when plain, bracket-quoted otherwise.

    Quoting keeps paths unambiguous (`metadata.annotations["mlgate.io/model"]`) and stops a
    crafted key (a role named `Worker.template`, a newline) from forging or garbling a path
    shown to users.
    """
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


# ---------------------------------------------------------------------------------------------
# Defensive reads of untrusted documents

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_NO_STRINGS: Mapping[str, str] = MappingProxyType({})


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dig(obj: Mapping[str, Any], keys: Sequence[str]) -> Any:
    value: Any = obj
    for key in keys:
        value = _map(value).get(key)
    return value


def _strings(value: Any) -> Mapping[str, str]:
    """Labels or annotations, without the entries that are not string to string.

    The common, valid case returns the original mapping: validating is cheaper than copying.
    """
    if not isinstance(value, Mapping):
        return _NO_STRINGS
    if all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _amount(value: Any) -> int | None:
    """A replica-like number, or None when the field is absent.

    The apiserver rejects `replicas: "100"` for built-in kinds, but a CRD without a validating
    schema lets it through and its operator may still parse it, so an attacker could hope the
    string dodges the per-workload GPU limit. Numeric strings and floats therefore count as the
    number they spell (rounded up); anything else present but unreadable (negative, boolean, NaN,
    a list) counts as 1, so garbage never crashes and never zeroes a count.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = _number(value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return value if value >= 0 else 1
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return math.ceil(value)
    return 1


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _count(value: Any) -> int:
    """A replica-like number that defaults to 1 when absent, as every supported kind does."""
    amount = _amount(value)
    return 1 if amount is None else amount


def _most(*values: Any) -> int | None:
    """The largest of the numbers that are present: an upper bound when several may apply."""
    amounts = [a for a in map(_amount, values) if a is not None]
    return max(amounts) if amounts else None


def _enabled(value: Any) -> bool:
    """A boolean switch read conservatively: only an explicit false-ish value turns it off."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0")
    return value is not None and value is not False and value != 0


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


def _env_value(entry: Mapping[str, Any]) -> str | None:
    value = entry.get("value")
    if isinstance(value, str):
        return value
    if value is None and "valueFrom" not in entry:
        return ""  # Kubernetes' meaning of an env var without value or valueFrom
    return None


def _env(value: Any, path: str) -> tuple[EnvVar, ...]:
    return tuple(
        EnvVar(entry["name"], _env_value(entry), f"{path}[{i}]")
        for i, entry in enumerate(_list(value))
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str)
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
    )


def _pod_containers(spec: Mapping[str, Any], path: str) -> Iterator[ContainerView]:
    for key, kind in _CONTAINER_LISTS:
        for i, c in enumerate(_list(spec.get(key))):
            if not isinstance(c, Mapping):
                continue
            if kind is ContainerKind.INIT and c.get("restartPolicy") == "Always":
                yield _container(c, f"{path}.{key}[{i}]", ContainerKind.SIDECAR)
            else:
                yield _container(c, f"{path}.{key}[{i}]", kind)


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
    if not isinstance(spec, Mapping):
        return
    containers = tuple(_pod_containers(spec, path))
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


def _bare_pod(obj: Mapping[str, Any]) -> Iterator[PodView]:
    annotations = _map(obj.get("metadata")).get("annotations")
    yield from _pod(obj.get("spec"), "spec", 1, "", annotations)


def _templated(template: tuple[str, ...], count: tuple[str, ...] | None) -> PodLayout:
    """One PodTemplateSpec at `template`, yielding `count` pods (1 when `count` is None)."""
    path = ".".join(template)

    def pods(obj: Mapping[str, Any]) -> Iterator[PodView]:
        yield from _template(
            _dig(obj, template), path, 1 if count is None else _count(_dig(obj, count))
        )

    return pods


def _replica_specs(key: str, elastic_role: str | None = None) -> PodLayout:
    """Kubeflow training jobs: `spec.<key>.<Role>` with `replicas` and a PodTemplateSpec.

    An elastic PyTorchJob's HPA scales `elastic_role` up to `elasticPolicy.maxReplicas` through
    the scale subresource, which admission does not see again: count the ceiling now.
    """
    base = f"spec.{key}"

    def pods(obj: Mapping[str, Any]) -> Iterator[PodView]:
        spec = _map(obj.get("spec"))
        elastic = _amount(_map(spec.get("elasticPolicy")).get("maxReplicas")) or 0
        for key_, replica_spec in _map(spec.get(key)).items():
            if not isinstance(replica_spec, Mapping):
                continue
            role = str(key_)  # YAML may key a role by a number; the apiserver stringifies it
            count = _count(replica_spec.get("replicas"))
            if role == elastic_role:
                count = max(count, elastic)
            path = f"{field(base, role)}.template"
            yield from _template(replica_spec.get("template"), path, count, role)

    return pods


# KubeRay's CRD defaults maxReplicas to MaxInt32, so an autoscaled group without an explicit
# ceiling is unbounded in the cluster; offline manifests must be judged the same way.
# KubeRay's default maxReplicas: an autoscaled group with no ceiling.
UNBOUNDED = 2**31 - 1


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


def _ray_cluster(value: Any, path: str) -> Iterator[PodView]:
    cluster = _map(value)
    autoscaling = _enabled(cluster.get("enableInTreeAutoscaling"))
    head = _map(cluster.get("headGroupSpec")).get("template")
    yield from _template(head, f"{path}.headGroupSpec.template", 1, "head")
    for i, group in enumerate(_list(cluster.get("workerGroupSpecs"))):
        if isinstance(group, Mapping):
            role = _str(group.get("groupName")) or "worker"
            count = _ray_workers(group, autoscaling)
            template_path = f"{path}.workerGroupSpecs[{i}].template"
            yield from _template(group.get("template"), template_path, count, role)


def _ray(cluster: tuple[str, ...], submitter: str | None = None) -> PodLayout:
    """A RayCluster spec at `cluster`; for RayJob also the PodTemplateSpec at spec.`submitter`."""
    path = ".".join(cluster)

    def pods(obj: Mapping[str, Any]) -> Iterator[PodView]:
        yield from _ray_cluster(_dig(obj, cluster), path)
        if submitter is not None:
            template = _map(obj.get("spec")).get(submitter)
            yield from _template(template, f"spec.{submitter}", 1, "submitter")

    return pods


def _jobset(obj: Mapping[str, Any]) -> Iterator[PodView]:
    for i, rjob in enumerate(_list(_map(obj.get("spec")).get("replicatedJobs"))):
        if not isinstance(rjob, Mapping):
            continue
        job = _map(_map(rjob.get("template")).get("spec"))
        count = _count(rjob.get("replicas")) * _count(job.get("parallelism"))
        path = f"spec.replicatedJobs[{i}].template.spec.template"
        yield from _template(job.get("template"), path, count, _str(rjob.get("name")))


def _leader_worker_set(obj: Mapping[str, Any]) -> Iterator[PodView]:
    spec = _map(obj.get("spec"))
    lwt = _map(spec.get("leaderWorkerTemplate"))
    leader = lwt.get("leaderTemplate")
    leaders, workers = _group_counts(
        _count(spec.get("replicas")), _count(lwt.get("size")), isinstance(leader, Mapping)
    )
    path = "spec.leaderWorkerTemplate"
    yield from _template(leader, f"{path}.leaderTemplate", leaders, "leader")
    yield from _template(lwt.get("workerTemplate"), f"{path}.workerTemplate", workers, "worker")


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
        if not isinstance(value, Mapping) or key in _KSERVE_NOT_CONTAINERS:
            continue
        if key in _KSERVE_FRAMEWORKS or "image" in value or "resources" in value:
            yield str(key), value


def _kserve_framework_containers(
    component: Mapping[str, Any], path: str
) -> Iterator[ContainerView]:
    for key, value in _kserve_container_fields(component):
        yield _container(value, field(path, key), ContainerKind.APP, default_name=key)


def _kserve_replicas(component: Mapping[str, Any]) -> int:
    """Pods of one component: maxReplicas (or minReplicas, if larger or alone), else 1.

    maxReplicas 0 is KServe's "unset". A scale-to-zero component (minReplicas 0) still runs a pod
    as soon as traffic arrives, so it counts as at least one.
    """
    ceiling = _amount(component.get("maxReplicas")) or None
    pods = _most(ceiling, component.get("minReplicas"))
    return max(1, 1 if pods is None else pods)


def _kserve_workers(worker: Mapping[str, Any], predictors: int) -> int:
    """Pods of `spec.predictor.workerSpec`: each predictor pod heads a group of
    pipelineParallelSize nodes, itself one of them; at least one worker when the spec exists."""
    return predictors * max(1, _count(worker.get("pipelineParallelSize")) - 1)


def _inference_service(obj: Mapping[str, Any]) -> Iterator[PodView]:
    spec = _map(obj.get("spec"))
    for name in _KSERVE_COMPONENTS:
        component = spec.get(name)
        if not isinstance(component, Mapping):
            continue
        count = _kserve_replicas(component)
        path = f"spec.{name}"
        annotations = component.get("annotations")
        yield from _pod(
            component, path, count, name, annotations, extra=_kserve_framework_containers
        )
        worker = component.get("workerSpec")
        if name == "predictor" and isinstance(worker, Mapping):
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
    if isinstance(worker, Mapping):
        size = _llm_group_size(workload.get("parallelism"))
        leaders, workers = _group_counts(replicas, size, isinstance(template, Mapping))
    annotations = workload.get("annotations")
    yield from _pod(template, f"{path}.template", leaders, role, annotations)
    yield from _pod(worker, f"{path}.worker", workers, worker_role, annotations)


def _llm_inference_service(obj: Mapping[str, Any]) -> Iterator[PodView]:
    spec = _map(obj.get("spec"))
    yield from _llm_workload(spec, "spec", "main", "worker")
    prefill = spec.get("prefill")
    if isinstance(prefill, Mapping):
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
    if not isinstance(trainer, Mapping):
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


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True, slots=True)
class KindSpec:
    """A supported kind: how the apiserver names it, and where its pods and models are."""

    group: str  # "" for the core group
    kind: str
    plural: str  # the resource name webhook rules and RBAC use
    versions: tuple[str, ...]
    pods: PodLayout
    models: ModelLayout = _no_models
    per_node: bool = False
    subresources: tuple[str, ...] = ()  # also admitted, e.g. pods/ephemeralcontainers

    @property
    def api_versions(self) -> tuple[str, ...]:
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)


# `kubectl scale` and autoscalers change replicas through /scale, which must be judged too.
_SCALE = ("scale",)
_REPLICATED = _templated(("spec", "template"), ("spec", "replicas"))
_PER_NODE = _templated(("spec", "template"), None)
_JOB = _templated(("spec", "template"), ("spec", "parallelism"))
_CRON_JOB = _templated(
    ("spec", "jobTemplate", "spec", "template"), ("spec", "jobTemplate", "spec", "parallelism")
)
_KF = "kubeflow.org"
_KSERVE = "serving.kserve.io"
_RAY, _RAY_VERSIONS = "ray.io", ("v1", "v1alpha1")

SUPPORTED: tuple[KindSpec, ...] = (
    KindSpec("", "Pod", "pods", ("v1",), _bare_pod, subresources=("ephemeralcontainers",)),
    KindSpec("apps", "Deployment", "deployments", ("v1",), _REPLICATED, subresources=_SCALE),
    KindSpec("apps", "ReplicaSet", "replicasets", ("v1",), _REPLICATED, subresources=_SCALE),
    KindSpec("apps", "StatefulSet", "statefulsets", ("v1",), _REPLICATED, subresources=_SCALE),
    KindSpec(
        "", "ReplicationController", "replicationcontrollers", ("v1",), _REPLICATED,
        subresources=_SCALE,
    ),
    KindSpec("apps", "DaemonSet", "daemonsets", ("v1",), _PER_NODE, per_node=True),
    KindSpec("batch", "Job", "jobs", ("v1",), _JOB),
    KindSpec("batch", "CronJob", "cronjobs", ("v1",), _CRON_JOB),
    KindSpec(
        _KSERVE, "InferenceService", "inferenceservices", ("v1beta1",),
        _inference_service, _inference_service_models,
    ),
    KindSpec(
        _KSERVE, "LLMInferenceService", "llminferenceservices", ("v1alpha1", "v1alpha2"),
        _llm_inference_service, _llm_inference_service_models,
    ),
    KindSpec(
        _KF, "PyTorchJob", "pytorchjobs", ("v1",), _replica_specs("pytorchReplicaSpecs", "Worker")
    ),
    KindSpec(_KF, "TFJob", "tfjobs", ("v1",), _replica_specs("tfReplicaSpecs")),
    KindSpec(_KF, "MPIJob", "mpijobs", ("v1", "v2beta1"), _replica_specs("mpiReplicaSpecs")),
    KindSpec(_KF, "XGBoostJob", "xgboostjobs", ("v1",), _replica_specs("xgbReplicaSpecs")),
    KindSpec(_KF, "PaddleJob", "paddlejobs", ("v1",), _replica_specs("paddleReplicaSpecs")),
    KindSpec(_KF, "JAXJob", "jaxjobs", ("v1",), _replica_specs("jaxReplicaSpecs")),
    KindSpec(
        "trainer.kubeflow.org", "TrainJob", "trainjobs", ("v1alpha1",),
        _train_job, _train_job_models,
    ),
    KindSpec(_RAY, "RayCluster", "rayclusters", _RAY_VERSIONS, _ray(("spec",))),
    KindSpec(
        _RAY, "RayJob", "rayjobs", _RAY_VERSIONS,
        _ray(("spec", "rayClusterSpec"), "submitterPodTemplate"),
    ),
    KindSpec(_RAY, "RayService", "rayservices", _RAY_VERSIONS, _ray(("spec", "rayClusterConfig"))),
    KindSpec("jobset.x-k8s.io", "JobSet", "jobsets", ("v1alpha2",), _jobset),
    KindSpec(
        "leaderworkerset.x-k8s.io", "LeaderWorkerSet", "leaderworkersets", ("v1",),
        _leader_worker_set,
    ),
)  # fmt: skip

_BY_GROUP_KIND: Mapping[tuple[str, str], KindSpec] = MappingProxyType(
    {(s.group, s.kind): s for s in SUPPORTED}
)


def group_of(api_version: str) -> str:
    """The API group of an apiVersion: "" for the core group's bare "v1"."""
    return api_version.rpartition("/")[0]


def lookup(api_version: str, kind: str) -> KindSpec | None:
    """The supported kind an object belongs to. The version is ignored: no supported kind changes
    where it keeps its pods between the versions it serves."""
    return _BY_GROUP_KIND.get((group_of(api_version), kind))


def view(obj: Mapping[str, Any]) -> WorkloadView | Unsupported:
    """The pod templates, counts and model references of one Kubernetes object."""
    if not isinstance(obj, Mapping):
        return Unsupported("", "", "", "", "not a Kubernetes object: a document must be a mapping")
    meta = _map(obj.get("metadata"))
    api_version, kind = _str(obj.get("apiVersion")), _str(obj.get("kind"))
    name = _str(meta.get("name")) or _str(meta.get("generateName"))
    namespace = _str(meta.get("namespace"))
    if not api_version or not kind:
        reason = "not a Kubernetes object: apiVersion and kind must be non-empty strings"
        return Unsupported(api_version, kind, name, namespace, reason)
    spec = lookup(api_version, kind)
    if spec is None:
        reason = f"{kind} ({api_version}) is not a workload kind mlgate supports"
        return Unsupported(api_version, kind, name, namespace, reason)
    return WorkloadView(
        api_version=api_version,
        kind=kind,
        name=name,
        namespace=namespace,
        labels=_strings(meta.get("labels")),
        annotations=_strings(meta.get("annotations")),
        pods=tuple(spec.pods(obj)),
        model_refs=tuple(spec.models(obj)),
        per_node=spec.per_node,
    )
