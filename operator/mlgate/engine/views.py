"""What a workload is judged through, and how a pod spec becomes one.

A view is each pod template with its field path, how many pods it yields for the whole workload,
and every container (app, init, sidecar, ephemeral, image volumes and the container-shaped fields
ML operators add). `workloads` places the pods of every supported kind; this module builds the
views of one pod spec or container.

Views reference the submitted dicts instead of copying them: this runs on every admission request
and over files of thousands of documents. Input is untrusted, so every read is type-checked and
a malformed field yields fewer views or a conservative count, never an exception.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from mlgate.engine.kindspec import amount as _amount
from mlgate.engine.modelrefs import ModelRef
from mlgate.engine.reads import as_list as _list
from mlgate.engine.reads import as_map as _map
from mlgate.engine.reads import as_str as _str
from mlgate.engine.reads import is_map


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

EMPTY: Mapping[str, Any] = MappingProxyType({})
NO_STRINGS: Mapping[str, str] = MappingProxyType({})


def dig(obj: Mapping[str, Any], keys: Sequence[str]) -> Any:
    value: Any = obj
    for key in keys:
        value = _map(value).get(key)
    return value


def strings(value: Any) -> Mapping[str, str]:
    """Labels or annotations, without the entries that are not string to string.

    The common, valid case returns the original mapping: validating is cheaper than copying.
    """
    if not is_map(value):
        return NO_STRINGS
    if all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def count_of(value: Any) -> int:
    """A replica-like number that defaults to 1 when absent, as every supported kind does."""
    amount = _amount(value)
    return 1 if amount is None else amount


def most(*values: Any) -> int | None:
    """The largest of the numbers that are present: an upper bound when several may apply."""
    amounts = [a for a in map(_amount, values) if a is not None]
    return max(amounts) if amounts else None


# ---------------------------------------------------------------------------------------------
# Containers and pods

CONTAINER_LISTS = (
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


def container_view(
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
    for key, kind in CONTAINER_LISTS:
        for i, c in enumerate(_list(spec.get(key))):
            if not is_map(c):
                continue
            if kind is ContainerKind.INIT and c.get("restartPolicy") == "Always":
                yield container_view(c, f"{path}.{key}[{i}]", ContainerKind.SIDECAR)
            else:
                yield container_view(c, f"{path}.{key}[{i}]", kind)


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
            resources=EMPTY,
            resources_path=f"{volume_path}.image",
            env=(),
        )


def pod_views(
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
    yield PodView(path, spec, containers, count, role, strings(annotations))


def template_views(template: Any, path: str, count: int, role: str = "") -> Iterator[PodView]:
    """The view of a PodTemplateSpec at `path`: its pod spec and its metadata's annotations."""
    t = _map(template)
    annotations = _map(t.get("metadata")).get("annotations")
    yield from pod_views(t.get("spec"), f"{path}.spec", count, role, annotations)
