"""The runtimes and configs that workloads name, held as one fact: the RuntimeCatalog.

KServe runs an InferenceService with the ServingRuntime it selects, an LLMInferenceService with
its LLMInferenceServiceConfigs, Kubeflow Trainer a TrainJob with its TrainingRuntime. The webhook
fills the catalog from the operator's watch cache, `mlgate check` from the documents it is given,
the audit from the same cache; the engine only reads it (mlgate.engine.effective).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mlgate.engine.workloads import group_of

KSERVE = "serving.kserve.io"
TRAINER = "trainer.kubeflow.org"
# Where KServe keeps its well-known LLMInferenceServiceConfigs (its KSERVE_NAMESPACE default).
KSERVE_NAMESPACE = "kserve"

# kind -> (API group, cluster-scoped)
CATALOG_KINDS: Mapping[str, tuple[str, bool]] = MappingProxyType(
    {
        "ServingRuntime": (KSERVE, False),
        "ClusterServingRuntime": (KSERVE, True),
        "ClusterStorageContainer": (KSERVE, True),
        "LLMInferenceServiceConfig": (KSERVE, False),
        "TrainingRuntime": (TRAINER, False),
        "ClusterTrainingRuntime": (TRAINER, True),
    }
)

Key = tuple[str, str, str]  # kind, namespace ("" when cluster-scoped), name


def _meta(obj: Mapping[str, Any], key: str) -> str:
    meta = obj.get("metadata")
    value = meta.get(key) if isinstance(meta, Mapping) else None
    return value if isinstance(value, str) else ""


def catalog_key(obj: Mapping[str, Any]) -> Key | None:
    """The catalog key of a runtime or config object; None for anything else."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return None
    known = CATALOG_KINDS.get(kind)
    name = _meta(obj, "name")
    if known is None or group_of(api_version) != known[0] or not name:
        return None
    return kind, "" if known[1] else _meta(obj, "namespace"), name


def label(key: Key) -> str:
    """How findings name a runtime: `ClusterServingRuntime/kserve-sklearnserver`."""
    kind, namespace, name = key
    return f"{kind}/{namespace + '/' if namespace else ''}{name}"


@dataclass(frozen=True, slots=True)
class RuntimeCatalog:
    objects: Mapping[Key, Mapping[str, Any]] = field(default_factory=dict)
    system_namespace: str = KSERVE_NAMESPACE

    @classmethod
    def of(
        cls, objs: Iterable[Mapping[str, Any]], system_namespace: str = KSERVE_NAMESPACE
    ) -> RuntimeCatalog:
        found = {}
        for obj in objs:
            key = catalog_key(obj)
            if key is not None:
                found[key] = obj
        return cls(MappingProxyType(found), system_namespace)

    def get(self, kind: str, namespace: str, name: str) -> tuple[Key, Mapping[str, Any]] | None:
        key = (kind, "" if CATALOG_KINDS[kind][1] else namespace, name)
        obj = self.objects.get(key)
        return None if obj is None else (key, obj)

    def of_kind(self, kind: str, namespace: str) -> Iterator[tuple[Key, Mapping[str, Any]]]:
        """Every object of `kind` a workload in `namespace` may use."""
        cluster = CATALOG_KINDS[kind][1]
        for key, obj in self.objects.items():
            if key[0] == kind and (cluster or key[1] == namespace):
                yield key, obj


# ---------------------------------------------------------------------------------------------
# Strategic merge, as the operators apply runtimes, configs and patches

_MERGE_KEYS = ("name",)  # containers, env, volumes, replicatedJobs: merged by name


def _keyed(items: list[Any]) -> bool:
    return bool(items) and all(
        isinstance(i, Mapping) and isinstance(i.get("name"), str) for i in items
    )


def _merge_lists(base: list[Any], patch: list[Any]) -> list[Any]:
    """Lists of named objects merge item by item (patched in place, new names appended); any other
    list is replaced, as strategic merge does for args and commands."""
    if not (_keyed(base) and _keyed(patch)):
        return list(patch)
    merged = list(base)
    index = {item["name"]: i for i, item in enumerate(merged)}
    for item in patch:
        at = index.get(item["name"])
        if at is None:
            index[item["name"]] = len(merged)
            merged.append(item)
        else:
            merged[at] = merge(merged[at], item)
    return merged


def merge(base: Any, patch: Any) -> Any:
    """`patch` over `base`: mappings recursively, named lists by name, everything else replaced.
    A null in the patch removes the field, as in a strategic merge patch."""
    if isinstance(base, Mapping) and isinstance(patch, Mapping):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = merge(merged.get(key), value)
        return merged
    if isinstance(base, list) and isinstance(patch, list):
        return _merge_lists(base, patch)
    return base if patch is None else patch
