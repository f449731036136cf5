"""Every supported workload kind, reduced to the pod templates it will create.

A workload is judged through its views (engine.views): each pod template with its field path, how
many pods it yields for the whole workload, and every container. This module places them: the
table of supported kinds, each described by a declarative layout (engine.layouts, read by
engine.kindspec) or a code hook (engine.hooks), and the kinds WorkloadKinds declare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from dataclasses import field as dc_field
from types import MappingProxyType
from typing import Any

from mlgate.engine import hooks, kindspec, layouts
from mlgate.engine.hooks import (
    DEPLOYMENT_MODE,
    ModelLayout,
    PodLayout,
    kserve_serverless,
    replicated_jobs,
)
from mlgate.engine.kindspec import UNBOUNDED, Layout, field
from mlgate.engine.modelrefs import ModelRef
from mlgate.engine.reads import as_list as _list
from mlgate.engine.reads import as_map as _map
from mlgate.engine.reads import as_str as _str
from mlgate.engine.reads import is_map
from mlgate.engine.servers import ray_serve_refs
from mlgate.engine.views import CONTAINER_LISTS as _CONTAINER_LISTS
from mlgate.engine.views import (
    ContainerKind,
    ContainerView,
    EnvSource,
    EnvVar,
    PodView,
    Unresolved,
    Unsupported,
    WorkloadView,
    metadata_path,
)
from mlgate.engine.views import container_view as _container
from mlgate.engine.views import pod_views as _pod
from mlgate.engine.views import strings as _strings

# The view types and helpers other modules import from here, where they were first defined.
__all__ = [
    "BUILT_IN",
    "BUILT_IN_ONLY",
    "DEPLOYMENT_MODE",
    "SUPPORTED",
    "UNBOUNDED",
    "ContainerKind",
    "ContainerView",
    "EnvSource",
    "EnvVar",
    "KindSpec",
    "Kinds",
    "ModelRef",
    "PodView",
    "Unresolved",
    "Unsupported",
    "WorkloadView",
    "field",
    "group_of",
    "kserve_serverless",
    "lookup",
    "metadata_path",
    "replicated_jobs",
    "view",
]

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
    models: ModelLayout = hooks.no_models
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
    KindSpec("batch", "CronJob", "cronjobs", ("v1",), hooks.cron_job),
    KindSpec(
        _DRA, "ResourceClaim", "resourceclaims", _DRA_VERSIONS,
        hooks.device_claim("resourceClaimName"),
    ),
    KindSpec(
        _DRA, "ResourceClaimTemplate", "resourceclaimtemplates", _DRA_VERSIONS,
        hooks.device_claim("resourceClaimTemplateName"),
    ),
    KindSpec(
        _KSERVE, "InferenceService", "inferenceservices", ("v1beta1",),
        hooks.inference_service, hooks.inference_service_models,
    ),
    KindSpec(
        _KSERVE, "LLMInferenceService", "llminferenceservices", ("v1alpha1", "v1alpha2"),
        hooks.llm_inference_service, hooks.llm_inference_service_models,
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
        hooks.train_job, hooks.train_job_models,
    ),
    KindSpec(_RAY, "RayCluster", "rayclusters", _RAY_VERSIONS, hooks.ray(("spec",))),
    KindSpec(
        _RAY, "RayJob", "rayjobs", _RAY_VERSIONS,
        hooks.ray(("spec", "rayClusterSpec"), ("spec", "submitterPodTemplate")),
    ),
    KindSpec(
        _RAY, "RayService", "rayservices", _RAY_VERSIONS, hooks.ray(("spec", "rayClusterConfig")),
        ray_serve_refs,
    ),
    KindSpec(
        _RAY, "RayCronJob", "raycronjobs", ("v1",),
        hooks.ray(
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
        _KSERVE, "ServingRuntime", "servingruntimes", ("v1alpha1",), hooks.serving_runtime,
        runs_pods=False,
    ),
    KindSpec(
        _KSERVE, "ClusterServingRuntime", "clusterservingruntimes", ("v1alpha1",),
        hooks.serving_runtime, cluster_scoped=True, runs_pods=False,
    ),
    KindSpec(
        _KSERVE, "ClusterStorageContainer", "clusterstoragecontainers", ("v1alpha1",),
        hooks.storage_container, cluster_scoped=True, runs_pods=False,
    ),
    KindSpec(
        _KSERVE, "LLMInferenceServiceConfig", "llminferenceserviceconfigs",
        ("v1alpha1", "v1alpha2"), hooks.llm_inference_service, hooks.llm_inference_service_models,
        runs_pods=False,
    ),
    KindSpec(
        _TRAINER, "TrainingRuntime", "trainingruntimes", ("v1alpha1",), hooks.training_runtime,
        runs_pods=False,
    ),
    KindSpec(
        _TRAINER, "ClusterTrainingRuntime", "clustertrainingruntimes", ("v1alpha1",),
        hooks.training_runtime, cluster_scoped=True, runs_pods=False,
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
