"""Which UPDATEs of an existing workload need no judgement.

Operators must always be able to shrink a bad workload or fix its labels, so an update that
only lowers replica counts, or only touches metadata or status, is allowed. Anything that could
change what runs (images, env, resources, the model annotations policies read) is judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mlgate.engine.workloads import Unsupported, WorkloadView, view

# Fields that only say how many pods run; scaling them down never adds risk.
_COUNT_KEYS = frozenset(
    {"replicas", "parallelism", "minReplicas", "maxReplicas", "numNodes", "numOfHosts", "size"}
)


def _is_pod_spec(node: Any) -> bool:
    return isinstance(node, Mapping) and "containers" in node


def _without_counts(node: Any) -> Any:
    """The object with count fields removed everywhere except inside pod specs."""
    if isinstance(node, Mapping):
        return {
            k: (v if k == "spec" and _is_pod_spec(v) else _without_counts(v))
            for k, v in node.items()
            if k not in _COUNT_KEYS
        }
    if isinstance(node, list):
        return [_without_counts(v) for v in node]
    return node


def _counts(item: WorkloadView) -> dict[str, int]:
    return {pod.path: pod.count for pod in item.pods}


def _annotations(obj: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    if not isinstance(annotations, Mapping):
        return {}
    return {k: annotations.get(k) for k in keys}


def benign_update(
    old: Mapping[str, Any], new: Mapping[str, Any], watched_annotations: Iterable[str]
) -> str | None:
    """Why an update needs no judgement, or None when it must be judged like a create."""
    keys = tuple(watched_annotations)
    if _annotations(old, keys) != _annotations(new, keys):
        return None
    if old.get("spec") == new.get("spec"):
        return "only metadata or status changed"
    if _without_counts(old.get("spec")) != _without_counts(new.get("spec")):
        return None
    old_view, new_view = view(old), view(new)
    if isinstance(old_view, Unsupported) or isinstance(new_view, Unsupported):
        return None
    before, after = _counts(old_view), _counts(new_view)
    if after.keys() == before.keys() and all(after[p] <= before[p] for p in after):
        return "only scales down"
    return None
