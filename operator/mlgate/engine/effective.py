"""The effective workload: what its operator will run once it merges in the runtime or config the
workload names, judged instead of the bare object.

Each resolver builds the merged object as the operator does (KServe's runtime selection and
container merge, LLMInferenceService `baseRefs` over KServe's well-known configs, Trainer's
runtime with `runtimePatches`), views it with the kind's own layout, then points every image,
resource and env var back at the document that declares it (`ClusterServingRuntime/x:spec...`),
so a finding names the field to change. A reference that cannot be followed is `unresolved`:
judged as a finding, never passed on half the picture.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from mlgate.engine import multinode
from mlgate.engine.runtimes import Key, RuntimeCatalog, label, merge
from mlgate.engine.workloads import (
    ContainerKind,
    ContainerView,
    ModelRef,
    PodView,
    Unresolved,
    Unsupported,
    WorkloadView,
    lookup,
    replicated_jobs,
    view,
)

Resolver = Callable[[Mapping[str, Any], WorkloadView, RuntimeCatalog], WorkloadView]


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------------------------------------
# Where each value of the merged workload is declared


def relabel(source: WorkloadView, key: Key) -> WorkloadView:
    """`source` (a runtime's own view) with paths that name it: `Kind/name:spec...`."""
    prefix = f"{label(key)}:"

    def container(c: ContainerView) -> ContainerView:
        env = tuple(replace(e, path=prefix + e.path) for e in c.env)
        return replace(
            c,
            path=prefix + c.path,
            image_path=prefix + c.image_path,
            resources_path=prefix + c.resources_path,
            env=env,
        )

    pods = tuple(replace(p, containers=tuple(map(container, p.containers))) for p in source.pods)
    refs = tuple(replace(r, path=prefix + r.path) for r in source.model_refs)
    return replace(source, pods=pods, model_refs=refs)


def _declared(sources: Sequence[WorkloadView]) -> tuple[dict[str, str], dict[Any, str]]:
    """Where each image and each env var (name, value) is first declared among `sources`."""
    images: dict[str, str] = {}
    env: dict[Any, str] = {}
    for source in sources:
        for pod in source.pods:
            for c in pod.containers:
                if c.image is not None:
                    images.setdefault(c.image, c.image_path)
                for e in c.env:
                    env.setdefault((e.name, e.value), e.path)
    return images, env


def _resources_path(c: ContainerView, sources: Sequence[WorkloadView]) -> str:
    for source in sources:
        for pod in source.pods:
            for s in pod.containers:
                if s.resources and s.resources == c.resources:
                    return s.resources_path
    return f"{c.resources_path} (merged)"


def attribute(effective: WorkloadView, sources: Sequence[WorkloadView]) -> WorkloadView:
    """The merged view with each image, env var and resource block at its declaring document.
    `sources` come in order of precedence: the workload itself first."""
    images, env = _declared(sources)

    def container(c: ContainerView) -> ContainerView:
        image_path = images.get(c.image, f"{c.image_path} (merged)") if c.image else c.image_path
        return replace(
            c,
            image_path=image_path,
            resources_path=_resources_path(c, sources) if c.resources else c.resources_path,
            env=tuple(
                replace(e, path=env.get((e.name, e.value), f"{e.path} (merged)")) for e in c.env
            ),
        )

    pods = tuple(replace(p, containers=tuple(map(container, p.containers))) for p in effective.pods)
    refs = {(r.value, r.path) for s in sources for r in s.model_refs}
    declared = {value: path for value, path in sorted(refs, reverse=True)}
    for s in sources:  # the workload's own path wins
        for r in reversed(s.model_refs):
            declared[r.value] = r.path
    models = tuple(
        ModelRef(r.value, declared.get(r.value, r.path)) for r in effective.model_refs
    )
    return replace(effective, pods=pods, model_refs=models)


def _unresolved(item: WorkloadView, path: str, message: str) -> WorkloadView:
    return replace(item, unresolved=(*item.unresolved, Unresolved(path, message)))


def _own_view(obj: Mapping[str, Any]) -> WorkloadView:
    item = view(obj)
    assert isinstance(item, WorkloadView)  # noqa: S101 - catalog kinds are all supported kinds
    return item


# ---------------------------------------------------------------------------------------------
# KServe InferenceService + ServingRuntime


# What KServe's defaulting turns into `model` with that model format.
_FRAMEWORKS = frozenset(
    {"sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface"}
    | {"pmml", "lightgbm", "paddle"}
)
_PROTOCOL_RANK = {"v1": 1, "v2": 2, "grpc-v1": 3, "grpc-v2": 4}
_UNKNOWN_PROTOCOL = 5
# ServingRuntime fields that configure selection, not the pod.
_RUNTIME_ONLY = frozenset(
    {"supportedModelFormats", "multiModel", "protocolVersions", "disabled", "builtInAdapter"}
    | {"workerSpec", "containers", "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint"}
    | {"replicas", "storageHelper", "annotations", "labels"}
)
# The model field's own settings, not container fields.
_MODEL_ONLY = frozenset(
    {"modelFormat", "runtime", "protocolVersion", "storageUri", "storage", "runtimeVersion"}
)
# PredictorSpec fields that are the component's, not the pod's.
_COMPONENT_ONLY = frozenset(
    {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType"}
    | {"containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher"}
    | {"labels", "annotations", "deploymentStrategy", "autoScaling", "storageUris"}
    | {"workerSpec", "containers", "model"}
    | _FRAMEWORKS
)
MODEL_CONTAINER = "kserve-container"
TRANSFORMER_CONTAINER = "transformer-container"
WORKER_CONTAINER = "worker-container"


def _model_spec(predictor: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """The predictor's model field and its spec: `model`, or an older framework field that
    KServe's defaulting turns into one with that model format."""
    model = predictor.get("model")
    if isinstance(model, Mapping):
        return "model", model
    for framework in sorted(_FRAMEWORKS):
        spec = predictor.get(framework)
        if isinstance(spec, Mapping):
            return framework, {**spec, "modelFormat": {"name": framework}}
    return None


def _protocol_rank(spec: Mapping[str, Any]) -> int:
    ranks = [_PROTOCOL_RANK.get(str(p), _UNKNOWN_PROTOCOL) for p in _list(spec.get("protocolVersions"))]
    return min(ranks, default=_UNKNOWN_PROTOCOL)


def _formats(spec: Mapping[str, Any], explicit: bool) -> set[str]:
    """KServe's label set: `mt:<name>` and `mt:<name>:<version>` of each supported format; a
    runtime not named explicitly offers only its autoSelect formats."""
    labels = set()
    for fmt in _list(spec.get("supportedModelFormats")):
        fmt = _map(fmt)
        if explicit or fmt.get("autoSelect") is True:
            labels.add(f"mt:{_str(fmt.get('name'))}")
            if isinstance(fmt.get("version"), str):
                labels.add(f"mt:{fmt.get('name')}:{fmt['version']}")
    return labels


def _wanted_format(model: Mapping[str, Any]) -> str:
    fmt = _map(model.get("modelFormat"))
    version = fmt.get("version")
    return f"mt:{_str(fmt.get('name'))}" + (f":{version}" if isinstance(version, str) else "")


def _supports(spec: Mapping[str, Any], model: Mapping[str, Any], explicit: bool) -> str | None:
    """Why KServe would refuse this runtime for the model, or None when it fits."""
    if spec.get("disabled") is True:
        return "is disabled"
    protocol = _str(model.get("protocolVersion")) or "v1"
    protocols = [str(p) for p in _list(spec.get("protocolVersions"))]
    if protocols and protocol not in protocols:
        return f"does not support protocol {protocol}"
    if _wanted_format(model) not in _formats(spec, explicit):
        return f"does not support model format {_wanted_format(model)[3:]}"
    return None


def _priority(spec: Mapping[str, Any], name: str) -> int | None:
    for fmt in _list(spec.get("supportedModelFormats")):
        if _map(fmt).get("name") == name:
            value = _map(fmt).get("priority")
            return value if isinstance(value, int) and not isinstance(value, bool) else None
    return None


def _ranked(
    runtimes: Iterable[tuple[Key, Mapping[str, Any]]], model: Mapping[str, Any], multi_node: bool
) -> list[tuple[Key, Mapping[str, Any]]]:
    """KServe's order: by protocol, newest, name; the fitting ones by format priority (stable)."""
    found = sorted(runtimes, key=lambda r: r[0][2])
    found.sort(key=lambda r: _str(_map(r[1].get("metadata")).get("creationTimestamp")), reverse=True)
    found.sort(key=lambda r: _protocol_rank(_map(r[1].get("spec"))))
    fitting = [
        (key, obj)
        for key, obj in found
        if (spec := _map(obj.get("spec"))).get("multiModel") is not True
        and ("workerSpec" in spec) == multi_node
        and _supports(spec, model, explicit=False) is None
    ]
    name = _str(_map(model.get("modelFormat")).get("name"))

    def rank(runtime: tuple[Key, Mapping[str, Any]]) -> tuple[int, int]:
        priority = _priority(_map(runtime[1].get("spec")), name)
        return (1, 0) if priority is None else (0, -priority)

    return sorted(fitting, key=rank)


def select_runtime(
    model: Mapping[str, Any], namespace: str, multi_node: bool, catalog: RuntimeCatalog
) -> tuple[Key, Mapping[str, Any]] | str:
    """The runtime KServe runs the model with, or why there is none."""
    name = model.get("runtime")
    if isinstance(name, str) and name:
        found = catalog.get("ServingRuntime", namespace, name) or catalog.get(
            "ClusterServingRuntime", namespace, name
        )
        if found is None:
            return (
                f"runtime {name!r} is neither a ServingRuntime in namespace {namespace or '(unset)'}"
                " nor a ClusterServingRuntime known to mlgate; create it first (mlgate check: "
                "pass its manifest too)"
            )
        why = _supports(_map(found[1].get("spec")), model, explicit=True)
        return found if why is None else f"{label(found[0])} {why}, so KServe will not run it"
    for kind in ("ServingRuntime", "ClusterServingRuntime"):  # namespaced ones come first
        ranked = _ranked(catalog.of_kind(kind, namespace), model, multi_node)
        if ranked:
            return ranked[0]
    return (
        f"no ServingRuntime or ClusterServingRuntime known to mlgate supports model format "
        f"{_wanted_format(model)[3:] or '(unset)'}; name one in spec.predictor.model.runtime or "
        "create it first (mlgate check: pass the runtime manifests too)"
    )


def _container_named(containers: list[Any], name: str) -> Mapping[str, Any] | None:
    for c in containers:
        if _map(c).get("name") == name:
            return _map(c)
    return None


def _pod_fields(spec: Mapping[str, Any], drop: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in drop}


def _predictor_pod(
    runtime: Mapping[str, Any], predictor: Mapping[str, Any], model: Mapping[str, Any]
) -> dict[str, Any]:
    """KServe's buildPodSpec: the runtime's model container merged with the user's, the merged
    transformer, then the runtime's other containers and the user's."""
    pod = merge(_pod_fields(runtime, _RUNTIME_ONLY), _pod_fields(predictor, _COMPONENT_ONLY))
    ours, theirs = _list(runtime.get("containers")), _list(predictor.get("containers"))
    base = _container_named(ours, MODEL_CONTAINER) or {}
    containers = [merge(base, {**_pod_fields(model, _MODEL_ONLY), "name": MODEL_CONTAINER})]
    runtime_transformer = _container_named(ours, TRANSFORMER_CONTAINER)
    user_transformer = _container_named(theirs, TRANSFORMER_CONTAINER)
    if runtime_transformer is not None or user_transformer is not None:
        containers.append(merge(runtime_transformer or {}, user_transformer or {}))
    special = {MODEL_CONTAINER, TRANSFORMER_CONTAINER}
    containers += [c for c in ours if _map(c).get("name") not in special]
    containers += [c for c in theirs if _map(c).get("name") != TRANSFORMER_CONTAINER]
    return {**pod, "containers": containers}


def _worker_pod(runtime: Mapping[str, Any], worker: Mapping[str, Any]) -> dict[str, Any]:
    ours = _map(runtime.get("workerSpec"))
    pod = merge(_pod_fields(ours, _RUNTIME_ONLY), _pod_fields(worker, _COMPONENT_ONLY))
    base = _container_named(_list(ours.get("containers")), WORKER_CONTAINER)
    user = _list(worker.get("containers"))
    merged = merge(base or {}, _map(user[0]) if user else {})
    return {**pod, "containers": [merged]}


def _inference_service(
    obj: Mapping[str, Any], item: WorkloadView, catalog: RuntimeCatalog
) -> WorkloadView:
    spec = _map(obj.get("spec"))
    predictor = _map(spec.get("predictor"))
    found = _model_spec(predictor)
    if found is None:  # custom containers: nothing to merge
        return item
    field, model = found
    worker = predictor.get("workerSpec")
    selected = select_runtime(model, item.namespace, isinstance(worker, Mapping), catalog)
    if isinstance(selected, str):
        return _unresolved(item, f"spec.predictor.{field}", selected)
    key, runtime_obj = selected
    runtime = _map(runtime_obj.get("spec"))
    component = {k: v for k, v in predictor.items() if k in _COMPONENT_ONLY - {"model"}}
    merged = {**component, **_predictor_pod(runtime, predictor, model)}
    for framework in _FRAMEWORKS | {"model"}:
        merged.pop(framework, None)
    if isinstance(worker, Mapping):
        merged["workerSpec"], merged = multinode.sized(
            runtime, worker, merged, _worker_pod(runtime, worker)
        )
    effective = {**obj, "spec": {**spec, "predictor": merged}}
    out = attribute(_own_view(effective), (item, relabel(_own_view(runtime_obj), key)))
    out = replace(out, model_refs=item.model_refs)
    return _with_storage_initializer(out, item, catalog)


def _uri_supported(spec: Mapping[str, Any], uri: str) -> bool:
    for fmt in _list(spec.get("supportedUriFormats")):
        prefix, pattern = _map(fmt).get("prefix"), _map(fmt).get("regex")
        if isinstance(prefix, str) and prefix and uri.startswith(prefix):
            return True
        if isinstance(pattern, str) and pattern:
            try:
                if re.search(pattern, uri):
                    return True
            except re.error:
                continue
    return False


def _with_storage_initializer(
    out: WorkloadView, item: WorkloadView, catalog: RuntimeCatalog
) -> WorkloadView:
    """The init container KServe injects to download the model: the first enabled
    ClusterStorageContainer whose URI formats match. Without one KServe uses the storage
    initializer its configmap names, which is the cluster admin's and not judged here."""
    uris = [r.value for r in item.model_refs if r.path.startswith("spec.predictor")]
    if not uris:
        return out
    for key, obj in catalog.of_kind("ClusterStorageContainer", item.namespace):
        spec = _map(obj.get("spec"))
        disabled = obj.get("disabled") is True or spec.get("disabled") is True
        workload_type = spec.get("workloadType", "initContainer")
        if disabled or workload_type != "initContainer" or not _uri_supported(spec, uris[0]):
            continue
        injected = relabel(_own_view(obj), key).pods[0].containers
        pods = list(out.pods)
        for i, pod in enumerate(pods):
            if pod.role == "predictor":
                pods[i] = replace(pod, containers=(*injected, *pod.containers))
        return replace(out, pods=tuple(pods))
    return out


# ---------------------------------------------------------------------------------------------
# KServe LLMInferenceService + LLMInferenceServiceConfigs

_LLM_CONFIG = "LLMInferenceServiceConfig"


def _data_parallel(workload: Mapping[str, Any]) -> bool:
    parallelism = _map(workload.get("parallelism"))
    return parallelism.get("data") is not None or parallelism.get("dataLocal") is not None


def _well_known(spec: Mapping[str, Any]) -> list[str]:
    """KServe's default configs for this shape of service (combineBaseRefsConfig), applied
    before the service's own baseRefs."""
    refs = []
    scheduler = _map(_map(spec.get("router")).get("scheduler"))
    if "scheduler" in _map(spec.get("router")) and not _map(scheduler.get("pool")).get("ref"):
        refs.append("kserve-config-llm-scheduler")
    prefill = spec.get("prefill")
    if isinstance(prefill, Mapping):
        refs.append(_shape(prefill, "prefill-"))
        refs.append(_shape(spec, "decode-"))
    else:
        refs.append(_shape(spec, ""))
    return refs


def _shape(workload: Mapping[str, Any], role: str) -> str:
    if "worker" not in workload:
        return f"kserve-config-llm-{role}template"
    if _data_parallel(workload):
        return f"kserve-config-llm-{role}worker-data-parallel"
    return f"kserve-config-llm-{role}worker-pipeline-parallel"


def _config(
    name: str, namespace: str, catalog: RuntimeCatalog
) -> tuple[Key, Mapping[str, Any]] | None:
    return catalog.get(_LLM_CONFIG, namespace, name) or catalog.get(
        _LLM_CONFIG, catalog.system_namespace, name
    )


def _llm_inference_service(
    obj: Mapping[str, Any], item: WorkloadView, catalog: RuntimeCatalog
) -> WorkloadView:
    spec = _map(obj.get("spec"))
    base_refs = [_str(_map(r).get("name")) for r in _list(spec.get("baseRefs"))]
    resolved = spec
    for name in base_refs:  # what the service is once its own refs apply decides the defaults
        if (found := _config(name, item.namespace, catalog)) is not None:
            resolved = merge(_map(found[1].get("spec")), resolved)
    configs, missing = [], []
    for name in [*_well_known(resolved), *base_refs]:
        found = _config(name, item.namespace, catalog)
        if found is None:
            missing.append(name)
        else:
            configs.append(found)
    merged: Any = {}
    for _, cfg in configs:
        merged = merge(merged, _map(cfg.get("spec")))
    effective = {**obj, "spec": merge(merged, spec)}
    sources = [item, *(relabel(_own_view(cfg), key) for key, cfg in reversed(configs))]
    out = attribute(_own_view(effective), sources)
    if missing:
        where = f"namespace {item.namespace or '(unset)'} or {catalog.system_namespace}"
        out = _unresolved(
            out,
            "spec.baseRefs",
            f"LLMInferenceServiceConfig {', '.join(missing)} not found in {where}; KServe "
            "merges it into this service, so it must exist (mlgate check: pass KServe's "
            "LLMInferenceServiceConfig manifests too)",
        )
    return out


# ---------------------------------------------------------------------------------------------
# Kubeflow TrainJob + TrainingRuntime

NODE = "node"  # Trainer's name for the trainer job and its container
FLUX_VIEW_IMAGE = "FLUX_VIEW_IMAGE"
FLUX_DEFAULT_IMAGE = "ghcr.io/converged-computing/flux-view-ubuntu:tag-jammy"


def _training_runtime(
    ref: Mapping[str, Any], namespace: str, catalog: RuntimeCatalog
) -> tuple[Key, Mapping[str, Any]] | str:
    name = _str(ref.get("name"))
    kind = _str(ref.get("kind")) or "ClusterTrainingRuntime"
    if kind not in ("TrainingRuntime", "ClusterTrainingRuntime"):
        return f"runtimeRef.kind {kind!r} is not a Kubeflow Trainer runtime kind"
    found = catalog.get(kind, namespace, name)
    if found is None:
        return (
            f"{kind} {name!r} is not known to mlgate; create it first (mlgate check: pass its "
            "manifest too)"
        )
    return found


def _patch_jobs(jobset: Any, overrides: list[Any]) -> Any:
    """The older `podSpecOverrides`: pod fields and container env for the jobs they target."""
    for override in overrides:
        override = _map(override)
        targets = [_str(_map(t).get("name")) for t in _list(override.get("targetJobs"))]
        pod = {k: v for k, v in override.items() if k != "targetJobs"}
        patch = {"template": {"spec": {"template": {"spec": pod}}}}
        jobset = merge(jobset, {"replicatedJobs": [{"name": t, **patch} for t in targets]})
    return jobset


def _node_patch(container: Mapping[str, Any]) -> dict[str, Any]:
    """A JobSet patch of the trainer job's `node` container."""
    pod = {"containers": [{"name": NODE, **container}]}
    return {"replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {"spec": pod}}}}]}


def _with_trainer(jobset: Any, trainer: Mapping[str, Any]) -> Any:
    """The TrainJob's `trainer` over the runtime's `node` container; `resourcesPerNode` replaces
    the runtime's resources rather than merging with them, as the Trainer does."""
    fields = {k: trainer[k] for k in ("image", "command", "args", "env") if k in trainer}
    jobset = merge(jobset, _node_patch(fields))
    if "resourcesPerNode" in trainer:
        jobset = merge(jobset, _node_patch({"resources": None}))
        jobset = merge(jobset, _node_patch({"resources": trainer["resourcesPerNode"]}))
    return jobset


def _flux_installer(pods: tuple[PodView, ...], key: Key) -> tuple[PodView, ...]:
    """Trainer's Flux plugin adds an init container whose image is the trainer's FLUX_VIEW_IMAGE
    env var (a default otherwise) to every pod: judge it where it is declared."""
    image, path = FLUX_DEFAULT_IMAGE, f"{label(key)}:spec.mlPolicy.flux"
    for pod in pods:
        for c in pod.containers:
            for env in c.env:
                if c.name == NODE and env.name == FLUX_VIEW_IMAGE and env.value:
                    image, path = env.value, env.path
    installer = ContainerView(
        path, "flux-installer", ContainerKind.INIT, image, path, {}, path, ()
    )
    return tuple(replace(p, containers=(installer, *p.containers)) for p in pods)


def _train_job(obj: Mapping[str, Any], item: WorkloadView, catalog: RuntimeCatalog) -> WorkloadView:
    spec = _map(obj.get("spec"))
    found = _training_runtime(_map(spec.get("runtimeRef")), item.namespace, catalog)
    if isinstance(found, str):
        return _unresolved(item, "spec.runtimeRef", found)
    key, runtime_obj = found
    runtime = _map(runtime_obj.get("spec"))
    jobset: Any = _map(_map(runtime.get("template")).get("spec"))
    for patch in _list(spec.get("runtimePatches")):
        template = _map(_map(_map(patch).get("trainingRuntimeSpec")).get("template"))
        jobset = merge(jobset, _map(template.get("spec")))
    jobset = _patch_jobs(jobset, _list(spec.get("podSpecOverrides")))
    trainer = _map(spec.get("trainer"))
    jobset = _with_trainer(jobset, trainer)
    policy = _map(runtime.get("mlPolicy"))
    nodes = trainer.get("numNodes", policy.get("numNodes"))
    prefix = f"{label(key)}:spec.template.spec"
    count = nodes if isinstance(nodes, int) and not isinstance(nodes, bool) and nodes >= 0 else 1
    pods = tuple(replicated_jobs(jobset, prefix, count))
    if "flux" in policy:
        pods = _flux_installer(pods, key)
    effective = replace(item, pods=pods)
    return attribute(effective, (item, relabel(_own_view(runtime_obj), key)))


# ---------------------------------------------------------------------------------------------

_RESOLVERS: Mapping[tuple[str, str], Resolver] = {
    ("serving.kserve.io", "InferenceService"): _inference_service,
    ("serving.kserve.io", "LLMInferenceService"): _llm_inference_service,
    ("trainer.kubeflow.org", "TrainJob"): _train_job,
}


def effective_view(
    obj: Mapping[str, Any], catalog: RuntimeCatalog | None
) -> WorkloadView | Unsupported:
    """The workload as its operator will run it, with the runtimes it names from `catalog`.
    Without a catalog (None) the object is viewed on its own."""
    item = view(obj)
    if catalog is None or isinstance(item, Unsupported):
        return item
    spec = lookup(item.api_version, item.kind)
    resolve = None if spec is None else _RESOLVERS.get((spec.group, spec.kind))
    return item if resolve is None else resolve(obj, item, catalog)

