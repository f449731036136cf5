"""KServe multi-node InferenceServices: how many nodes and GPUs tensor and pipeline parallelism
ask for, as KServe's predictor reconciler computes them (multiNodeProcess)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mlgate.engine.quantities import InvalidQuantity, parse_quantity

# KServe's DefaultGPUResourceTypeList; nvidia.com/gpu is what it sets when none is declared.
GPU_TYPES = ("nvidia.com/gpu", "amd.com/gpu", "intel.com/gpu", "habana.ai/gaudi")
EXECUTOR_BACKEND = "multinode/executor-backend"


def _size(*values: Any) -> int:
    """The first parallelism size given (the InferenceService's over the runtime's), else 1."""
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 1


def _first(pod: Mapping[str, Any]) -> dict[str, Any]:
    containers = pod.get("containers")
    first = containers[0] if isinstance(containers, list) and containers else {}
    return dict(first) if isinstance(first, Mapping) else {}


def _gpus(container: Mapping[str, Any]) -> tuple[str, int]:
    """The container's GPU resource type and requested amount (0 when it asks for none)."""
    resources = container.get("resources")
    resources = resources if isinstance(resources, Mapping) else {}
    for resource in GPU_TYPES:
        for section in ("limits", "requests"):
            values = resources.get(section)
            raw = values.get(resource) if isinstance(values, Mapping) else None
            if raw is None:
                continue
            try:
                amount = math.ceil(parse_quantity(raw))
            except InvalidQuantity:
                continue
            if amount > 0:
                return resource, amount
    return GPU_TYPES[0], 0


def _ray_nodes(total: int, head: int, worker: int) -> tuple[int, int, int]:
    """computeRayNodeAndGPUs: nodes, GPUs per worker node, GPUs of the head node."""
    if worker > 0:
        nodes = math.ceil(total / worker)
        if head > 0 and math.ceil(total / head) == 1:
            nodes = 1
        elif head == 0:
            head = total - worker * (nodes - 1)
        if nodes == 1:
            return 1, 0, total
        return nodes, worker, head
    if head > 0:
        remaining = total - head
        return (math.ceil(remaining) + 1 if remaining > 0 else 1), 1, head
    return total, 1, 1


def _with_gpus(container: Mapping[str, Any], resource: str, amount: int) -> dict[str, Any]:
    resources = container.get("resources")
    resources = dict(resources) if isinstance(resources, Mapping) else {}
    for section in ("limits", "requests"):
        values = resources.get(section)
        resources[section] = {**(values if isinstance(values, Mapping) else {}), resource: amount}
    return {**container, "resources": resources}


def _replace_first(pod: Mapping[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    containers = pod.get("containers")
    rest = list(containers[1:]) if isinstance(containers, list) else []
    return {**pod, "containers": [container, *rest]}


def sized(
    runtime: Mapping[str, Any],
    worker: Mapping[str, Any],
    head_pod: dict[str, Any],
    worker_pod: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The worker pod and the head (predictor) pod with the GPUs KServe gives them, and the
    worker's `pipelineParallelSize` set to the node count, which the view turns into
    nodes - 1 worker pods per predictor."""
    ours = runtime.get("workerSpec")
    ours = ours if isinstance(ours, Mapping) else {}
    tensor = _size(worker.get("tensorParallelSize"), ours.get("tensorParallelSize"))
    pipeline = _size(worker.get("pipelineParallelSize"), ours.get("pipelineParallelSize"))
    head, worker_container = _first(head_pod), _first(worker_pod)
    resource, head_gpus = _gpus(head)
    worker_resource, worker_gpus = _gpus(worker_container)
    annotations = runtime.get("annotations")
    backend = annotations.get(EXECUTOR_BACKEND) if isinstance(annotations, Mapping) else None
    if backend == "mp":
        nodes, worker_gpus, head_gpus = pipeline, tensor, tensor
    else:
        nodes, worker_gpus, head_gpus = _ray_nodes(tensor * pipeline, head_gpus, worker_gpus)
    sized_worker = _replace_first(
        worker_pod, _with_gpus(worker_container, worker_resource, worker_gpus)
    )
    sized_worker["pipelineParallelSize"] = nodes
    sized_head = _replace_first(head_pod, _with_gpus(head, resource, head_gpus))
    return sized_worker, sized_head
