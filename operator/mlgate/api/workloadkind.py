"""Compile a WorkloadKind into the declared kind the engine reads (engine.kindspec)."""

from __future__ import annotations

from typing import Any

from mlgate.api import models as api
from mlgate.api.compile import InvalidResource
from mlgate.engine import kindspec
from mlgate.engine.workloads import BUILT_IN, KindSpec


def _path(text: str, where: str, wildcards: int | None = None) -> kindspec.FieldPath:
    """Parse a field path; `wildcards`, when given, is how many the path may bind."""
    try:
        path = kindspec.parse_path(text)
    except kindspec.InvalidPath as exc:
        raise InvalidResource(f"{where}: {exc}") from None
    if wildcards is not None and path.wildcards > wildcards:
        raise InvalidResource(
            f"{where}: {text!r} has {path.wildcards} wildcards but its location binds only "
            f"{wildcards}: a wildcard here takes the item or key the location matched"
        )
    return path


def _optional(text: str | None, where: str, wildcards: int | None = None) -> Any:
    return None if text is None else _path(text, where, wildcards)


def _count(factor: api.ReplicaFactor, where: str, bound: int) -> kindspec.Count:
    return kindspec.Count(
        paths=tuple(_path(p, f"{where}.paths[{i}]", bound) for i, p in enumerate(factor.paths)),
        default=None if factor.unbounded_by_default else factor.default,
        ceiling=tuple(
            _path(p, f"{where}.ceiling[{i}]", bound) for i, p in enumerate(factor.ceiling)
        ),
        autoscaled=_optional(factor.autoscaled, f"{where}.autoscaled", bound),
        zero_unset=factor.zero_unset,
        less_one_with=_optional(factor.less_one_with, f"{where}.lessOneWith", bound),
        unbounded_unless=_optional(factor.unbounded_unless, f"{where}.unboundedUnless", bound),
        bounded_by=tuple(factor.bounded_by),
    )


def _container_field(
    field: api.ContainerFieldSpec, where: str, bound: int
) -> kindspec.ContainerField:
    return kindspec.ContainerField(
        path=_path(field.path, f"{where}.path"),
        role=kindspec.ContainerRole(field.role.value),
        name=field.name,
        resources=field.resources,
        image_default=_optional(field.image_default, f"{where}.imageDefault", bound),
        gpus=_optional(field.gpus, f"{where}.gpus"),
        gpu_resource=_optional(field.gpu_resource, f"{where}.gpuResource"),
        gpu_resource_default=field.gpu_resource_default,
        instance_type=_optional(field.instance_type, f"{where}.instanceType", bound),
        gpus_per_instance=dict(field.gpus_per_instance),
    )


def _pod_location(location: api.PodLocation, where: str) -> kindspec.Location:
    path = _path(location.path, f"{where}.path")
    bound = path.wildcards
    return kindspec.Location(
        shape=kindspec.Shape(location.shape.value),
        path=path,
        replicas=tuple(
            _count(f, f"{where}.replicas[{i}]", bound) for i, f in enumerate(location.replicas)
        ),
        role=location.role,
        role_path=_optional(location.role_path, f"{where}.rolePath", bound),
        containers=tuple(
            _container_field(c, f"{where}.containers[{i}]", bound)
            for i, c in enumerate(location.containers)
        ),
        annotations=_optional(location.annotations, f"{where}.annotations", bound),
        exclude=tuple(location.exclude),
    )


def compile_workload_kind(resource: api.WorkloadKind) -> KindSpec:
    """The declared kind a WorkloadKind describes; every path parsed, so a bad one is reported
    when the resource is applied, not when a workload arrives."""
    spec = resource.spec
    if spec.group == api.GROUP:
        raise InvalidResource(f"spec.group: {api.GROUP} is mlgate's own group")
    if (spec.group, spec.kind) in BUILT_IN:
        raise InvalidResource(
            f"spec.kind: {spec.kind} ({spec.group}) is built into mlgate; a WorkloadKind "
            "cannot redefine it"
        )
    layout = kindspec.Layout(
        locations=tuple(_pod_location(loc, f"spec.pods[{i}]") for i, loc in enumerate(spec.pods)),
        models=tuple(
            kindspec.ModelField(_path(m.path, f"spec.models[{i}].path"), m.prefix)
            for i, m in enumerate(spec.models)
        ),
    )
    return KindSpec(
        group=spec.group,
        kind=spec.kind,
        plural=spec.plural,
        versions=tuple(spec.versions),
        pods=layout,
        per_node=spec.per_node,
        cluster_scoped=spec.scope is api.WorkloadKindScope.CLUSTER,
    )
