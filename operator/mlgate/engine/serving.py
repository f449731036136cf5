"""KServe's effective workloads: an InferenceService with the ServingRuntime KServe selects for it
(and the storage initializer of a matching ClusterStorageContainer), an LLMInferenceService with
its LLMInferenceServiceConfigs, merged as KServe's controllers merge them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from mlgate.engine import multinode
from mlgate.engine.provenance import (
    attribute,
    own_view,
    relabel,
    unresolved,
)
from mlgate.engine.reads import as_list, as_map, as_str
from mlgate.engine.runtimes import Key, RuntimeCatalog, label, merge
from mlgate.engine.workloads import WorkloadView

# What KServe's defaulting turns into `model` with that model format, in the order it looks.
_FRAMEWORK_ORDER = (
    "sklearn", "tensorflow", "xgboost", "pytorch", "triton", "onnx", "huggingface", "pmml",
    "lightgbm", "paddle",
)  # fmt: skip
_FRAMEWORKS = frozenset(_FRAMEWORK_ORDER)
# Formats whose protocol KServe defaults to v2 (framework fields, then `model` formats).
_V2_FRAMEWORKS = frozenset({"triton", "onnx", "huggingface"})
_V2_FORMATS = frozenset({"triton", "vLLM"})
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
    for framework in _FRAMEWORK_ORDER:
        spec = predictor.get(framework)
        if isinstance(spec, Mapping):
            model = {**spec, "modelFormat": {"name": framework}}
            if framework in _V2_FRAMEWORKS and "protocolVersion" not in model:
                model["protocolVersion"] = "v2"
            return framework, model
    declared = predictor.get("model")
    return ("model", _v2_default(declared)) if isinstance(declared, Mapping) else None


def _v2_default(model: Mapping[str, Any]) -> Mapping[str, Any]:
    """KServe's defaulting: Triton and vLLM models speak v2 unless they say otherwise."""
    name = as_map(model.get("modelFormat")).get("name")
    if name in _V2_FORMATS and "protocolVersion" not in model:
        return {**model, "protocolVersion": "v2"}
    return model


def _protocol_rank(spec: Mapping[str, Any]) -> int:
    ranks = [
        _PROTOCOL_RANK.get(str(p), _UNKNOWN_PROTOCOL) for p in as_list(spec.get("protocolVersions"))
    ]
    return min(ranks, default=_UNKNOWN_PROTOCOL)


def _formats(spec: Mapping[str, Any], explicit: bool) -> set[str]:
    """KServe's label set: `mt:<name>` and `mt:<name>:<version>` of each supported format; a
    runtime not named explicitly offers only its autoSelect formats."""
    labels = set()
    for entry in as_list(spec.get("supportedModelFormats")):
        fmt = as_map(entry)
        if explicit or fmt.get("autoSelect") is True:
            labels.add(f"mt:{as_str(fmt.get('name'))}")
            if isinstance(fmt.get("version"), str):
                labels.add(f"mt:{fmt.get('name')}:{fmt['version']}")
    return labels


def _wanted_format(model: Mapping[str, Any]) -> str:
    fmt = as_map(model.get("modelFormat"))
    version = fmt.get("version")
    return f"mt:{as_str(fmt.get('name'))}" + (f":{version}" if isinstance(version, str) else "")


def _supports(spec: Mapping[str, Any], model: Mapping[str, Any], explicit: bool) -> str | None:
    """Why KServe would refuse this runtime for the model, or None when it fits."""
    if spec.get("disabled") is True:
        return "is disabled"
    protocol = as_str(model.get("protocolVersion")) or "v1"
    protocols = [str(p) for p in as_list(spec.get("protocolVersions"))]
    if protocols and protocol not in protocols:
        return f"does not support protocol {protocol}"
    if _wanted_format(model) not in _formats(spec, explicit):
        return f"does not support model format {_wanted_format(model)[3:]}"
    return None


def _priority(spec: Mapping[str, Any], name: str) -> int | None:
    for fmt in as_list(spec.get("supportedModelFormats")):
        if as_map(fmt).get("name") == name:
            value = as_map(fmt).get("priority")
            return value if isinstance(value, int) and not isinstance(value, bool) else None
    return None


def _ranked(
    runtimes: Iterable[tuple[Key, Mapping[str, Any]]], model: Mapping[str, Any], multi_node: bool
) -> list[tuple[Key, Mapping[str, Any]]]:
    """KServe's order: by protocol, newest, name; the fitting ones by format priority (stable)."""
    found = sorted(runtimes, key=lambda r: r[0][2])
    found.sort(
        key=lambda r: as_str(as_map(r[1].get("metadata")).get("creationTimestamp")), reverse=True
    )
    found.sort(key=lambda r: _protocol_rank(as_map(r[1].get("spec"))))
    fitting = [
        (key, obj)
        for key, obj in found
        if (spec := as_map(obj.get("spec"))).get("multiModel") is not True
        and ("workerSpec" in spec) == multi_node
        and _supports(spec, model, explicit=False) is None
    ]
    name = as_str(as_map(model.get("modelFormat")).get("name"))

    def rank(runtime: tuple[Key, Mapping[str, Any]]) -> tuple[int, int]:
        priority = _priority(as_map(runtime[1].get("spec")), name)
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
                f"runtime {name!r} is neither a ServingRuntime in namespace "
                f"{namespace or '(unset)'} nor a ClusterServingRuntime known to mlgate; create "
                "it first (mlgate check: pass its manifest too)"
            )
        why = _supports(as_map(found[1].get("spec")), model, explicit=True)
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


def _container_named(containers: Sequence[Any], name: str) -> Mapping[str, Any] | None:
    for c in containers:
        if as_map(c).get("name") == name:
            return as_map(c)
    return None


def _pod_fields(spec: Mapping[str, Any], drop: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in drop}


def _predictor_pod(
    runtime: Mapping[str, Any], predictor: Mapping[str, Any], model: Mapping[str, Any]
) -> dict[str, Any]:
    """KServe's buildPodSpec: the runtime's model container merged with the user's, the merged
    transformer, then the runtime's other containers and the user's."""
    pod = merge(_pod_fields(runtime, _RUNTIME_ONLY), _pod_fields(predictor, _COMPONENT_ONLY))
    ours, theirs = as_list(runtime.get("containers")), as_list(predictor.get("containers"))
    base = _container_named(ours, MODEL_CONTAINER) or {}
    containers = [merge(base, {**_pod_fields(model, _MODEL_ONLY), "name": MODEL_CONTAINER})]
    runtime_transformer = _container_named(ours, TRANSFORMER_CONTAINER)
    user_transformer = _container_named(theirs, TRANSFORMER_CONTAINER)
    if runtime_transformer is not None or user_transformer is not None:
        containers.append(merge(runtime_transformer or {}, user_transformer or {}))
    special = {MODEL_CONTAINER, TRANSFORMER_CONTAINER}
    containers += [c for c in ours if as_map(c).get("name") not in special]
    containers += [c for c in theirs if as_map(c).get("name") != TRANSFORMER_CONTAINER]
    return {**pod, "containers": containers}


def _worker_pod(runtime: Mapping[str, Any], worker: Mapping[str, Any]) -> dict[str, Any]:
    ours = as_map(runtime.get("workerSpec"))
    pod = merge(_pod_fields(ours, _RUNTIME_ONLY), _pod_fields(worker, _COMPONENT_ONLY))
    base = _container_named(as_list(ours.get("containers")), WORKER_CONTAINER)
    user = as_list(worker.get("containers"))
    merged = merge(base or {}, as_map(user[0]) if user else {})
    return {**pod, "containers": [merged]}


def inference_service(
    obj: Mapping[str, Any], item: WorkloadView, catalog: RuntimeCatalog
) -> WorkloadView:
    spec = as_map(obj.get("spec"))
    predictor = as_map(spec.get("predictor"))
    found = _model_spec(predictor)
    if found is None:  # custom containers: nothing to merge
        return item
    field, model = found
    worker = predictor.get("workerSpec")
    selected = select_runtime(model, item.namespace, isinstance(worker, Mapping), catalog)
    if isinstance(selected, str):
        return unresolved(item, f"spec.predictor.{field}", selected)
    key, runtime_obj = selected
    runtime = as_map(runtime_obj.get("spec"))
    if isinstance(worker, Mapping) and not isinstance(runtime.get("workerSpec"), Mapping):
        message = (
            f"{label(key)} has no workerSpec, so KServe will not run this multi-node predictor"
        )
        return unresolved(item, "spec.predictor.workerSpec", message)
    component = {k: v for k, v in predictor.items() if k in _COMPONENT_ONLY - {"model"}}
    merged = {**component, **_predictor_pod(runtime, predictor, model)}
    for framework in _FRAMEWORKS | {"model"}:
        merged.pop(framework, None)
    if isinstance(worker, Mapping):
        worker_pod, merged = multinode.sized(runtime, worker, merged, _worker_pod(runtime, worker))
        merged["workerSpec"] = worker_pod
    effective = {**obj, "spec": {**spec, "predictor": merged}}
    out = attribute(own_view(effective), (item, relabel(own_view(runtime_obj), key)))
    annotations = as_map(as_map(runtime_obj.get("metadata")).get("annotations"))
    retagged = _retagged(as_map(merged["containers"][0]), model, key[2], annotations)
    if retagged is not None:
        out = _with_image(out, retagged, f"spec.predictor.{field}", model)
    out = replace(out, model_refs=item.model_refs)
    return _with_storage_initializer(out, item, catalog)


# KServe's UpdateImageTag: the server types whose GPU build is the same image with a -gpu tag
# suffix, and the runtime names that imply a server type when no annotation says it.
_GPU_SUFFIXED = frozenset({"tensorflow-serving", "torchserve", "huggingfaceserver"})
_SERVER_TYPES = {
    "kserve-mlserver": "mlserver",
    "kserve-torchserve": "torchserve",
    "kserve-tritonserver": "tritonserver",
    "kserve-tensorflow-serving": "tensorflow-serving",
    "kserve-huggingfaceserver": "huggingfaceserver",
    "kserve-vllmserver": "vllmserver",
}
_TAG = re.compile(r":[\w.\-]*$")


def _gpu_enabled(container: Mapping[str, Any]) -> bool:
    limits = as_map(as_map(container.get("resources")).get("limits"))
    return any(k == "nvidia.com/gpu" or str(k).startswith("nvidia.com/mig") for k in limits)


def _retagged(
    container: Mapping[str, Any],
    model: Mapping[str, Any],
    name: str,
    annotations: Mapping[str, Any],
) -> str | None:
    """The model container's image after KServe's UpdateImageTag, when it changes it: a
    `runtimeVersion` replaces the tag; GPU builds get `-gpu`, vLLM's CPU build `-cpu`."""
    image = container.get("image")
    if not isinstance(image, str) or "@sha256:" in image:
        return None
    version = model.get("runtimeVersion")
    if isinstance(version, str):
        return _TAG.sub("", image) + ":" + version
    server = as_str(annotations.get("serving.kserve.io/server-type")) or _SERVER_TYPES.get(name, "")
    tag = _TAG.search(image)
    if not server or tag is None:
        return None
    if _gpu_enabled(container):
        suffixed = server in _GPU_SUFFIXED and not image.endswith("-gpu")
        return image + "-gpu" if suffixed else None
    untagged = image[: tag.start()]
    if server == "vllmserver" and not untagged.endswith("-cpu"):
        return f"{untagged}-cpu{tag.group()}"
    return None


def _with_image(
    out: WorkloadView, image: str, model_path: str, model: Mapping[str, Any]
) -> WorkloadView:
    """The model container with KServe's retagged image, found at the runtimeVersion that chose
    the tag or at the runtime image that KServe suffixed."""
    pods = list(out.pods)
    first = pods[0].containers[0]
    if "runtimeVersion" in model:
        path = f"{model_path}.runtimeVersion"
    else:
        path = f"{first.image_path} (as KServe's -gpu/-cpu build)"
    retagged = replace(first, image=image, image_path=path)
    pods[0] = replace(pods[0], containers=(retagged, *pods[0].containers[1:]))
    return replace(out, pods=tuple(pods))


def _uri_supported(spec: Mapping[str, Any], uri: str) -> bool:
    for fmt in as_list(spec.get("supportedUriFormats")):
        prefix, pattern = as_map(fmt).get("prefix"), as_map(fmt).get("regex")
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
        spec = as_map(obj.get("spec"))
        disabled = obj.get("disabled") is True or spec.get("disabled") is True
        workload_type = spec.get("workloadType", "initContainer")
        if disabled or workload_type != "initContainer" or not _uri_supported(spec, uris[0]):
            continue
        injected = relabel(own_view(obj), key).pods[0].containers
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
    parallelism = as_map(workload.get("parallelism"))
    return parallelism.get("data") is not None or parallelism.get("dataLocal") is not None


def _well_known(spec: Mapping[str, Any]) -> list[str]:
    """KServe's default configs for this shape of service (combineBaseRefsConfig), applied
    before the service's own baseRefs."""
    refs = []
    router = as_map(spec.get("router"))
    scheduler = as_map(router.get("scheduler"))
    if "scheduler" in router and not as_map(scheduler.get("pool")).get("ref"):
        refs.append("kserve-config-llm-scheduler")
    if "scheduler" in router and "tokenizer" in scheduler:
        refs.append("kserve-config-llm-tokenizer")
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


def llm_inference_service(
    obj: Mapping[str, Any], item: WorkloadView, catalog: RuntimeCatalog
) -> WorkloadView:
    spec = as_map(obj.get("spec"))
    base_refs = [as_str(as_map(r).get("name")) for r in as_list(spec.get("baseRefs"))]
    resolved = spec
    for name in base_refs:  # what the service is once its own refs apply decides the defaults
        if (found := _config(name, item.namespace, catalog)) is not None:
            resolved = merge(as_map(found[1].get("spec")), resolved)
    configs, missing = [], []
    for name in [*_well_known(resolved), *base_refs]:
        found = _config(name, item.namespace, catalog)
        if found is None:
            missing.append(name)
        else:
            configs.append(found)
    merged: Any = {}
    for _, cfg in configs:
        merged = merge(merged, as_map(cfg.get("spec")))
    effective = {**obj, "spec": merge(merged, spec)}
    sources = [item, *(relabel(own_view(cfg), key) for key, cfg in reversed(configs))]
    out = attribute(own_view(effective), sources)
    if missing:
        where = f"namespace {item.namespace or '(unset)'} or {catalog.system_namespace}"
        out = unresolved(
            out,
            "spec.baseRefs",
            f"LLMInferenceServiceConfig {', '.join(missing)} not found in {where}; KServe "
            "merges it into this service, so it must exist (mlgate check: pass KServe's "
            "LLMInferenceServiceConfig manifests too)",
        )
    return out
