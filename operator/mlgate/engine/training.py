"""Kubeflow Trainer's effective workload: a TrainJob with the TrainingRuntime it names, its
`runtimePatches` (and the older `podSpecOverrides`) and its `trainer` merged as the Trainer does."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from mlgate.engine.provenance import (
    NOTHING,
    attribute,
    moved,
    own_view,
    relabel,
    unresolved,
)
from mlgate.engine.reads import as_list, as_map, as_str
from mlgate.engine.runtimes import Key, RuntimeCatalog, label, merge
from mlgate.engine.workloads import (
    ContainerKind,
    ContainerView,
    PodView,
    WorkloadView,
    replicated_jobs,
)

NODE = "node"  # Trainer's name for the trainer job and its container
FLUX_VIEW_IMAGE = "FLUX_VIEW_IMAGE"
FLUX_DEFAULT_IMAGE = "ghcr.io/converged-computing/flux-view-ubuntu:tag-jammy"


def _training_runtime(
    ref: Mapping[str, Any], namespace: str, catalog: RuntimeCatalog
) -> tuple[Key, Mapping[str, Any]] | str:
    name = as_str(ref.get("name"))
    kind = as_str(ref.get("kind")) or "ClusterTrainingRuntime"
    if kind not in ("TrainingRuntime", "ClusterTrainingRuntime"):
        return f"runtimeRef.kind {kind!r} is not a Kubeflow Trainer runtime kind"
    found = catalog.get(kind, namespace, name)
    if found is None:
        return (
            f"{kind} {name!r} is not known to mlgate; create it first (mlgate check: pass its "
            "manifest too)"
        )
    return found


def _patch_jobs(jobset: Any, overrides: Sequence[Any]) -> Any:
    """The older `podSpecOverrides`: pod fields and container env for the jobs they target."""
    for entry in overrides:
        override = as_map(entry)
        targets = [as_str(as_map(t).get("name")) for t in as_list(override.get("targetJobs"))]
        pod = {k: v for k, v in override.items() if k != "targetJobs"}
        patch = {"template": {"spec": {"template": {"spec": pod}}}}
        jobset = merge(jobset, {"replicatedJobs": [{"name": t, **patch} for t in targets]})
    return jobset


def _patches(spec: Mapping[str, Any]) -> Iterator[WorkloadView]:
    """The TrainJob's patches as views, so values they set are found where they are written."""
    for i, patch in enumerate(as_list(spec.get("runtimePatches"))):
        template = as_map(as_map(as_map(patch).get("trainingRuntimeSpec")).get("template"))
        path = f"spec.runtimePatches[{i}].trainingRuntimeSpec.template.spec"
        yield replace(NOTHING, pods=tuple(replicated_jobs(template.get("spec"), path)))
    for i, override in enumerate(as_list(spec.get("podSpecOverrides"))):
        pod = own_view({"apiVersion": "v1", "kind": "Pod", "spec": override})
        yield moved(pod, "spec", f"spec.podSpecOverrides[{i}]")


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
    installer = ContainerView(path, "flux-installer", ContainerKind.INIT, image, path, {}, path, ())
    return tuple(replace(p, containers=(installer, *p.containers)) for p in pods)


def train_job(obj: Mapping[str, Any], item: WorkloadView, catalog: RuntimeCatalog) -> WorkloadView:
    spec = as_map(obj.get("spec"))
    found = _training_runtime(as_map(spec.get("runtimeRef")), item.namespace, catalog)
    if isinstance(found, str):
        return unresolved(item, "spec.runtimeRef", found)
    key, runtime_obj = found
    runtime = as_map(runtime_obj.get("spec"))
    jobset: Any = as_map(as_map(runtime.get("template")).get("spec"))
    for patch in as_list(spec.get("runtimePatches")):
        template = as_map(as_map(as_map(patch).get("trainingRuntimeSpec")).get("template"))
        jobset = merge(jobset, as_map(template.get("spec")))
    jobset = _patch_jobs(jobset, as_list(spec.get("podSpecOverrides")))
    trainer = as_map(spec.get("trainer"))
    jobset = _with_trainer(jobset, trainer)
    policy = as_map(runtime.get("mlPolicy"))
    nodes = trainer.get("numNodes", policy.get("numNodes"))
    prefix = f"{label(key)}:spec.template.spec"
    pods = tuple(replicated_jobs(jobset, prefix, nodes))
    sources = (item, *_patches(spec), relabel(own_view(runtime_obj), key))
    effective = attribute(replace(item, pods=pods), sources)
    if "flux" in policy:  # after attribute: the installer's image is where its env var is
        effective = replace(effective, pods=_flux_installer(effective.pods, key))
    return effective
