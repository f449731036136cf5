"""Model references held in kind-specific fields, as operators read them.

Kept apart from `workloads` (which imports it for the kind table) so that recognisers of model
fields can be plugged into any kind's layout without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlgate.engine.reads import as_map as _map


@dataclass(frozen=True, slots=True)
class ModelRef:
    value: str
    path: str
    hf_ids: bool = False  # the reader takes a bare `org/name` as a Hugging Face repository


ModelFields = Callable[[Mapping[str, Any]], Iterator[ModelRef]]

# KServe's StorageSpec names an entry of the namespace's storage secret and a path in the bucket
# that entry configures. The bucket is not in the workload, so the reference is this pseudo-URI,
# which an ApprovedModel lists to approve "path P through storage entry K" (see README).
KSERVE_STORAGE_SCHEME = "kserve-storage"
_DEFAULT_STORAGE_KEY = "default"  # KServe's key when `storage.key` is unset


def _dig(obj: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        obj = _map(obj).get(key)
    return obj


def field_refs(*keys: str, hf_ids: bool = False) -> ModelFields:
    """The string at `keys` as a model reference (`hf_ids`: its reader takes a bare `org/name` as
    a Hugging Face repository, as production-stack's VLLMRuntime `spec.model.modelURL` does).
    Plug into a kind's model layout, or build one from a declared field path."""
    path = ".".join(keys)

    def refs(obj: Mapping[str, Any]) -> Iterator[ModelRef]:
        value = _dig(obj, keys)
        if isinstance(value, str):
            yield ModelRef(value, path, hf_ids)

    return refs


def storage_uri_refs(*keys: str) -> ModelFields:
    """The `storageUri` string under `keys` (`spec.model` for KServe TrainedModel, `spec` for
    Seldon Model)."""
    return field_refs(*keys, "storageUri")


def kserve_storage_refs(holder: Mapping[str, Any], path: str) -> Iterator[ModelRef]:
    """KServe `storage: {key, path, parameters}` of a predictor model or framework spec.

    With `parameters.type` and `parameters.bucket` set, the storage initializer downloads
    `<type>://<bucket>/<path>` whatever the secret says, so that URI is the reference. Otherwise
    the reference is `kserve-storage://<key>/<path>`: the bucket comes from the secret entry.
    """
    storage = holder.get("storage")
    if not isinstance(storage, Mapping):
        return
    where = f"{path}.storage"
    sub = storage.get("path")
    sub = sub.strip("/") if isinstance(sub, str) else ""
    params = _map(storage.get("parameters"))
    kind, bucket = params.get("type"), params.get("bucket")
    if isinstance(kind, str) and kind and isinstance(bucket, str) and bucket:
        yield ModelRef(f"{kind}://{bucket}/{sub}", f"{where}.path")
        return
    key = storage.get("key")
    key = key if isinstance(key, str) and key else _DEFAULT_STORAGE_KEY
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items(), key=lambda kv: str(kv[0])))
    uri = f"{KSERVE_STORAGE_SCHEME}://{key}/{sub}" + (f"?{query}" if query else "")
    yield ModelRef(uri, f"{where}.path")
