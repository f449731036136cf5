"""Where each value of a merged workload is declared.

A merged workload's images, env vars and resources come from the workload or from the runtimes
merged into it; findings must name the document and field to change, so each value is pointed
back at its first declaration (the workload itself first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from mlgate.engine.modelrefs import ModelRef
from mlgate.engine.runtimes import Key, label
from mlgate.engine.workloads import ContainerView, Unresolved, WorkloadView, view


def moved(source: WorkloadView, old: str, new: str) -> WorkloadView:
    """`source` with every path that starts with `old` starting with `new` instead."""

    def path(value: str) -> str:
        return new + value[len(old) :] if value.startswith(old) else value

    def container(c: ContainerView) -> ContainerView:
        env = tuple(replace(e, path=path(e.path)) for e in c.env)
        return replace(
            c,
            path=path(c.path),
            image_path=path(c.image_path),
            resources_path=path(c.resources_path),
            env=env,
        )

    pods = tuple(
        replace(p, path=path(p.path), containers=tuple(map(container, p.containers)))
        for p in source.pods
    )
    refs = tuple(replace(r, path=path(r.path)) for r in source.model_refs)
    return replace(source, pods=pods, model_refs=refs)


def relabel(source: WorkloadView, key: Key) -> WorkloadView:
    """`source` (a runtime's own view) with paths that name it: `Kind/name:spec...`."""
    return moved(source, "", f"{label(key)}:")


def _declared(sources: Sequence[WorkloadView]) -> tuple[dict[Any, str], dict[Any, str]]:
    """Where each image (by container name and image, and by image alone) and each env var
    (name, value) is first declared among `sources`."""
    images: dict[Any, str] = {}
    env: dict[Any, str] = {}
    for source in sources:
        for pod in source.pods:
            for c in pod.containers:
                if c.image is not None:
                    images.setdefault((c.name, c.image), c.image_path)
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
        image_path = c.image_path
        if c.image is not None:
            image_path = images.get((c.name, c.image)) or images.get(
                c.image, f"{image_path} (merged)"
            )
        return replace(
            c,
            image_path=image_path,
            resources_path=_resources_path(c, sources) if c.resources else c.resources_path,
            env=tuple(
                replace(e, path=env.get((e.name, e.value), f"{e.path} (merged)")) for e in c.env
            ),
        )

    pods = tuple(replace(p, containers=tuple(map(container, p.containers))) for p in effective.pods)
    declared: dict[str, str] = {}
    for source in sources:
        for ref in source.model_refs:
            declared.setdefault(ref.value, ref.path)
    models = tuple(ModelRef(r.value, declared.get(r.value, r.path)) for r in effective.model_refs)
    return replace(effective, pods=pods, model_refs=models)


def unresolved(item: WorkloadView, path: str, message: str) -> WorkloadView:
    return replace(item, unresolved=(*item.unresolved, Unresolved(path, message)))


NOTHING = WorkloadView("", "", "", "", {}, {}, (), ())


def own_view(obj: Mapping[str, Any]) -> WorkloadView:
    """The view of a runtime or a merged workload (always of a supported kind)."""
    item = view(obj)
    return item if isinstance(item, WorkloadView) else NOTHING
