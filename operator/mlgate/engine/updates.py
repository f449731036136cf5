"""Which UPDATEs of an existing workload need no judgement.

Operators must always be able to shrink a bad workload or fix its labels, so an update that
only lowers replica counts, or only touches metadata or status, is allowed. Anything that could
change what runs (images, env, resources, the model annotations policies read) is judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Fields that only say how many pods run; scaling them down never adds risk.
_COUNT_KEYS = frozenset(
    {"replicas", "parallelism", "minReplicas", "maxReplicas", "numNodes", "numOfHosts", "size"}
)


def _is_pod_spec(node: Any) -> bool:
    return isinstance(node, Mapping) and "containers" in node


def _is_count(key: str, value: Any) -> bool:
    return key in _COUNT_KEYS and isinstance(value, int) and not isinstance(value, bool)


def _split_counts(node: Any, path: str, counts: dict[str, int]) -> Any:
    """The object without its count fields (collected into `counts` by path), except inside
    pod specs. Works on any shape: no kind-specific layout is assumed, so a scale-down passes
    even when the rest of the object is something mlgate could not judge."""
    if isinstance(node, Mapping):
        rest = {}
        for key, value in node.items():
            if _is_count(key, value):
                counts[f"{path}.{key}"] = value
            elif key == "spec" and _is_pod_spec(value):
                rest[key] = value
            else:
                rest[key] = _split_counts(value, f"{path}.{key}", counts)
        return rest
    if isinstance(node, list):
        return [_split_counts(v, f"{path}[{i}]", counts) for i, v in enumerate(node)]
    return node


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
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    if _split_counts(old.get("spec"), "spec", before) != _split_counts(
        new.get("spec"), "spec", after
    ):
        return None
    if after.keys() == before.keys() and all(after[p] <= before[p] for p in after):
        return "only scales down"
    return None
