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

from collections.abc import Callable, Mapping
from typing import Any

from mlgate.engine import serving, training
from mlgate.engine.runtimes import RuntimeCatalog
from mlgate.engine.workloads import BUILT_IN_ONLY, Kinds, Unsupported, WorkloadView, lookup, view

Resolver = Callable[[Mapping[str, Any], WorkloadView, RuntimeCatalog], WorkloadView]

_RESOLVERS: Mapping[tuple[str, str], Resolver] = {
    ("serving.kserve.io", "InferenceService"): serving.inference_service,
    ("serving.kserve.io", "LLMInferenceService"): serving.llm_inference_service,
    ("trainer.kubeflow.org", "TrainJob"): training.train_job,
}


def effective_view(
    obj: Mapping[str, Any], catalog: RuntimeCatalog | None, kinds: Kinds = BUILT_IN_ONLY
) -> WorkloadView | Unsupported:
    """The workload as its operator will run it, with the runtimes it names from `catalog`.
    Without a catalog (None) the object is viewed on its own. `kinds` adds the kinds
    WorkloadKinds declare (runtimes only ever apply to built-in kinds)."""
    item = view(obj, kinds)
    if catalog is None or isinstance(item, Unsupported):
        return item
    spec = lookup(item.api_version, item.kind)
    resolve = None if spec is None else _RESOLVERS.get((spec.group, spec.kind))
    return item if resolve is None else resolve(obj, item, catalog)
