"""GPU demand per pod, per workload and per namespace, and the GPU products pods may select."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.dra import (
    ClaimRef,
    Claims,
    DeviceRequest,
    PodDevices,
    device_class_of,
    pod_devices,
)
from mlgate.engine.kindspec import UNBOUNDED
from mlgate.engine.policy import GpuLoad, GpuRules, GpuUsage
from mlgate.engine.quantities import InvalidQuantity, parse_quantity
from mlgate.engine.reads import is_map
from mlgate.engine.workloads import (
    ContainerKind,
    ContainerView,
    PodView,
    WorkloadView,
)

PRODUCT_LABEL = "nvidia.com/gpu.product"

# Extended resources that vendors' Kubernetes device plugins advertise for one accelerator (or one
# slice or share of one): the default of a policy's `gpu.resources`. Counters such as Intel's
# `gpu.intel.com/millicores` or `memory.max` are not devices and are left out.
ACCELERATORS: tuple[tuple[str, str], ...] = (
    ("nvidia.com/gpu", "NVIDIA GPU (k8s-device-plugin)"),
    ("nvidia.com/gpu.shared", "NVIDIA GPU share: time-slicing or MPS with renameByDefault"),
    ("nvidia.com/mig-*", "NVIDIA MIG slice, mixed strategy (e.g. nvidia.com/mig-1g.5gb)"),
    ("amd.com/gpu", "AMD GPU (ROCm k8s-device-plugin)"),
    ("gpu.intel.com/i915", "Intel GPU, i915 driver (intel-device-plugins-for-kubernetes)"),
    ("gpu.intel.com/xe", "Intel GPU, xe driver (intel-device-plugins-for-kubernetes)"),
    ("habana.ai/gaudi", "Intel Gaudi / Habana (habanalabs device plugin)"),
    ("google.com/tpu", "Google Cloud TPU chip (GKE)"),
)
DEFAULT_RESOURCES: tuple[str, ...] = tuple(resource for resource, _ in ACCELERATORS)


@dataclass(frozen=True, slots=True)
class PodDemand:
    pod: PodView
    gpus: int  # all GPUs the pod holds
    errors: tuple[Finding, ...] = ()
    extended: int = 0  # of which requested as extended resources (the node selector decides)
    requests: tuple[DeviceRequest, ...] = ()  # DRA requests of classes the policy counts


def is_extended(resource: str) -> bool:
    """Extended resources (`vendor.com/name`) are what accelerators are requested as; cpu,
    memory, hugepages and storage are not, so the ledger keeps everything else and every policy
    picks its own resources from it."""
    return "/" in resource


# The longest quantity parse_quantity reads; a longer one is an error, never a fast count.
_MAX_DIGITS = 64


def _whole(raw: Any) -> int | None:
    """A device count written as a plain non-negative integer (`1`, `8`, 8), the common case,
    without the general quantity parser; None for anything else (`500m`, `1e3`, negatives)."""
    if type(raw) is int:
        return raw if raw >= 0 else None
    if type(raw) is str and len(raw) <= _MAX_DIGITS and raw.isascii() and raw.isdigit():
        return int(raw)
    return None


def _container_amounts(c: ContainerView) -> tuple[dict[str, int], list[tuple[str, Finding]]]:
    """Extended resources a container asks for: the larger of request and limit, per resource."""
    amounts: dict[str, int] = {}
    errors: list[tuple[str, Finding]] = []
    for section in ("limits", "requests"):
        values = c.resources.get(section)
        if not is_map(values):
            continue
        for resource, raw in values.items():
            name = resource if type(resource) is str else str(resource)
            if "/" not in name:  # is_extended, inline: cpu and memory are in every container
                continue
            count = _whole(raw)
            if count is None:
                try:
                    quantity = parse_quantity(raw)
                    problem = f"{raw!r} is negative" if quantity < 0 else None
                except InvalidQuantity as exc:
                    problem = str(exc)
                if problem is not None:  # a negative amount must not offset other GPUs
                    path = f'{c.resources_path}.{section}["{resource}"]'
                    message = f"{problem}; GPU resources must be whole numbers"
                    errors.append((name, Finding(Rule.GPU_MAX_PER_POD, path, message)))
                    continue
                count = math.ceil(quantity)
            amounts[name] = max(amounts.get(name, 0), count)
    return amounts, errors


def pod_amounts(pod: PodView) -> tuple[dict[str, int], list[tuple[str, Finding]]]:
    """Effective extended resources of a pod, per resource, as the scheduler counts them.

    App containers and sidecars run together; plain init containers run one at a time before
    them, each alongside the sidecars declared before it, so the pod needs the larger of the two
    (the scheduler's formula; `pod.containers` keeps init containers in declaration order).
    """
    running: dict[str, int] = {}
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    errors: list[tuple[str, Finding]] = []
    for c in pod.containers:
        amounts, problems = _container_amounts(c)
        if problems:
            errors.extend(problems)
        for resource, n in amounts.items():
            if c.kind is ContainerKind.APP:
                running[resource] = running.get(resource, 0) + n
            elif c.kind is ContainerKind.SIDECAR:
                sidecars[resource] = sidecars.get(resource, 0) + n
                init_peak[resource] = max(init_peak.get(resource, 0), sidecars[resource])
            elif c.kind is ContainerKind.INIT:
                peak = n + sidecars.get(resource, 0)
                init_peak[resource] = max(init_peak.get(resource, 0), peak)
    if not init_peak and not sidecars:
        return {r: n for r, n in running.items() if n}, errors
    names = {*running, *sidecars, *init_peak}
    effective = {r: max(running.get(r, 0) + sidecars.get(r, 0), init_peak.get(r, 0)) for r in names}
    return {r: n for r, n in effective.items() if n}, errors


def _merge(*parts: Mapping[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for resource, n in part.items():
            total[resource] = total.get(resource, 0) + n
    return total


def _sum_pods(measured: Iterable[tuple[PodView, Mapping[str, int], PodDevices]]) -> dict[str, int]:
    """Each pod's own amounts (containers, template claims) times its count, plus each shared
    ResourceClaim once."""
    total: dict[str, int] = {}
    shared: dict[str, dict[str, int]] = {}
    for pod, amounts, devices in measured:
        own = _merge(amounts, devices.per_pod) if devices.per_pod else amounts
        for resource, n in own.items():
            total[resource] = total.get(resource, 0) + n * pod.count
        if pod.count:
            shared.update(devices.shared)
    return _merge(total, *shared.values()) if shared else total


def workload_amounts(view: WorkloadView, claims: Claims | None = None) -> dict[str, int]:
    """Extended resources and DRA devices of the whole workload, per resource: each pod's own
    (containers, template claims) times its count, plus each shared ResourceClaim once. None
    for a runtime or config: it runs no pod itself (the workloads that name it are charged)."""
    if not view.runs_pods:
        return {}
    return _sum_pods(
        (pod, pod_amounts(pod)[0], pod_devices(pod.spec, pod.path, claims)) for pod in view.pods
    )


def counted(rules: GpuRules, amounts: Mapping[str, int]) -> int:
    """The part of `amounts` a policy counts as GPUs."""
    if not amounts:
        return 0
    return sum(n for r, n in amounts.items() if rules.counts(r))


def pod_demand(rules: GpuRules, pod: PodView, claims: Claims | None = None) -> PodDemand:
    """GPUs one pod uses (shared claims included: the pod holds their devices too)."""
    amounts, errors = pod_amounts(pod)
    return _demand(rules, pod, amounts, errors, pod_devices(pod.spec, pod.path, claims))


def _demand(
    rules: GpuRules,
    pod: PodView,
    amounts: dict[str, int],
    errors: list[tuple[str, Finding]],
    devices: PodDevices,
) -> PodDemand:
    mine = [finding for resource, finding in errors if rules.counts(resource)]
    mine += [_unknown_claim(ref) for ref in devices.missing]
    extended = counted(rules, amounts)
    gpus = extended
    if devices.per_pod or devices.shared:  # most pods claim no DRA devices
        gpus = counted(rules, _merge(amounts, devices.per_pod, *devices.shared.values()))
    requests = tuple(r for r in devices.requests if rules.counts(r.resource))
    return PodDemand(pod, gpus, tuple(mine), extended, requests)


def _unknown_claim(ref: ClaimRef) -> Finding:
    return Finding(
        Rule.GPU_MAX_PER_POD,
        ref.path,
        f"the pod uses {ref.kind} {ref.name}, which mlgate cannot find, so its devices cannot "
        f"be counted; create the {ref.kind} first (or pass it to mlgate check)",
    )


def workload_demand(
    rules: GpuRules, view: WorkloadView, claims: Claims | None = None
) -> tuple[int, list[PodDemand]]:
    """GPUs of the whole workload (none for a runtime, which runs no pod itself) and per pod."""
    # Each pod is measured once for both figures.
    measured = [
        (pod, *pod_amounts(pod), pod_devices(pod.spec, pod.path, claims)) for pod in view.pods
    ]
    demands = [_demand(rules, *m) for m in measured]
    if not view.runs_pods:
        return 0, demands
    total = _sum_pods((pod, amounts, devices) for pod, amounts, _, devices in measured)
    return counted(rules, total), demands


# How to bound a workload whose pod count has no ceiling, by kind.
_BOUND_IT = {
    "InferenceService": "set maxReplicas on each component (Serverless scales without limit)",
    "CronJob": "set concurrencyPolicy Forbid or Replace (Allow lets runs overlap)",
}
_BOUND_ANY = "set maxReplicas on every autoscaled group"


def _pods(count: int) -> str:
    return "unbounded (no maximum)" if count >= UNBOUNDED else str(count)


def _fix(view: WorkloadView, total: int) -> str:
    if total >= UNBOUNDED:
        return _BOUND_IT.get(view.kind, _BOUND_ANY)
    return "reduce replicas or GPUs per pod"


def _breakdown(demands: list[PodDemand]) -> str:
    parts = [
        f"{d.pod.role or d.pod.path}: {_pods(d.pod.count)} x {d.gpus}" for d in demands if d.gpus
    ]
    return ", ".join(parts)


def _amount(total: int) -> str:
    return "an unbounded number of" if total >= UNBOUNDED else str(total)


def _terms_constrain(terms: Any, allowed: frozenset[str]) -> bool:
    """Every OR-ed node selector term must pin the product label to allowed values."""
    if not isinstance(terms, list) or not terms:
        return False
    for term in terms:
        exprs = term.get("matchExpressions") if is_map(term) else None
        if not isinstance(exprs, list) or not any(
            is_map(e)
            and e.get("key") == PRODUCT_LABEL
            and e.get("operator") == "In"
            and isinstance(e.get("values"), list)
            and e["values"]
            and all(isinstance(v, str) and v in allowed for v in e["values"])
            for e in exprs
        ):
            return False
    return True


def _product_finding(rules: GpuRules, pod: PodView) -> Finding | None:
    allowed = rules.allowed_products
    selector = pod.spec.get("nodeSelector")
    chosen = selector.get(PRODUCT_LABEL) if is_map(selector) else None
    if chosen is not None:
        if isinstance(chosen, str) and chosen in allowed:
            return None
        return Finding(
            Rule.GPU_PRODUCT,
            f'{pod.path}.nodeSelector["{PRODUCT_LABEL}"]',
            f"GPU product {chosen!r} is not allowed; select one of: {', '.join(sorted(allowed))}",
        )
    affinity = pod.spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if is_map(affinity) else None
    required = (
        node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        if is_map(node_affinity)
        else None
    )
    terms = required.get("nodeSelectorTerms") if is_map(required) else None
    if _terms_constrain(terms, allowed):
        return None
    return Finding(
        Rule.GPU_PRODUCT,
        f"{pod.path}.nodeSelector",
        f"pod requests GPUs but does not restrict them to an allowed product; set nodeSelector "
        f"{PRODUCT_LABEL} to one of: {', '.join(sorted(allowed))}",
    )


def _per_pod(rules: GpuRules, demands: list[PodDemand]) -> Iterator[Finding]:
    for d in demands:
        yield from d.errors
        if rules.max_per_pod is not None and d.gpus > rules.max_per_pod:
            yield Finding(
                Rule.GPU_MAX_PER_POD,
                d.pod.path,
                f"each pod requests {_amount(d.gpus)} GPUs, above the limit of "
                f"{rules.max_per_pod} per pod; lower the GPU requests/limits of its containers",
            )
        if rules.allowed_products and d.gpus > 0:
            yield from _products(rules, d)


def _products(rules: GpuRules, d: PodDemand) -> Iterator[Finding]:
    """Extended-resource GPUs take the node's product: the node selector must pin it. A DRA
    request is verified by its CEL selectors (productName) or, failing those, the same node
    selector; otherwise the message says what cannot be verified."""
    node = _product_finding(rules, d.pod)
    if d.extended and node is not None:
        yield node
    allowed = ", ".join(sorted(rules.allowed_products))
    for r in d.requests:
        where = f"request {r.name!r} of {r.ref.kind} {r.ref.name}"
        if r.products is not None and not r.products <= rules.allowed_products:
            yield Finding(
                Rule.GPU_PRODUCT,
                r.ref.path,
                f"{where} selects GPU products {', '.join(sorted(r.products))}; allowed: {allowed}",
            )
        elif r.products is None and node is not None:
            yield Finding(
                Rule.GPU_PRODUCT,
                r.ref.path,
                f"the GPU product of {where} (device class "
                f"{device_class_of(r.resource)}) cannot be verified: add a CEL selector "
                f'device.attributes["<driver>"].productName == one of {allowed}, or pin '
                f"the node selector {PRODUCT_LABEL}",
            )


def covered(owner: GpuLoad | None, amounts: Mapping[str, int]) -> bool:
    """Whether the owner's reservation still has room for the workload, resource by resource:
    then the workload is part of it, not on top of it."""
    if owner is None:
        return False
    return all(
        owner.observed.get(r, 0) + n <= owner.reserved.get(r, 0) for r, n in amounts.items() if n
    )


def _load(rules: GpuRules, load: GpuLoad) -> int:
    return max(counted(rules, load.reserved), counted(rules, load.observed))


def _quota(
    rules: GpuRules, view: WorkloadView, total: int, usage: GpuUsage | None
) -> Iterator[Finding]:
    if rules.namespace_quota is None or not total:
        return
    usage = usage or GpuUsage()
    used = sum(_load(rules, load) for load in usage.others)
    owner = usage.owner
    if owner is not None:
        used += _load(rules, owner)
    if covered(owner, usage.demand):
        return  # already counted in full inside the owner's reservation
    if used + total > rules.namespace_quota:
        beyond = f", beyond the reservation of {usage.owner_name}" if owner is not None else ""
        yield Finding(
            Rule.GPU_NAMESPACE_QUOTA,
            "spec",
            f"namespace {view.namespace or '(unset)'} would use {_amount(used + total)} GPUs "
            f"({used} in use + {_amount(total)} requested{beyond}), above its quota of "
            f"{rules.namespace_quota}; "
            + (_fix(view, total) if total >= UNBOUNDED else "free GPUs or request fewer"),
        )


def _per_workload(
    rules: GpuRules, view: WorkloadView, total: int, demands: list[PodDemand]
) -> Iterator[Finding]:
    if (
        view.per_node
        and total
        and (rules.max_per_workload is not None or rules.namespace_quota is not None)
    ):
        yield Finding(
            Rule.GPU_MAX_PER_WORKLOAD,
            "spec",
            f"a {view.kind} runs one pod per node, so its GPU demand ({total} per pod) grows "
            "without bound; run GPU work as a Deployment, Job or training job instead",
        )
        return
    if rules.max_per_workload is not None and total > rules.max_per_workload:
        yield Finding(
            Rule.GPU_MAX_PER_WORKLOAD,
            "spec",
            f"the workload requests {_amount(total)} GPUs in total ({_breakdown(demands)}), "
            "above the "
            f"limit of {rules.max_per_workload}; {_fix(view, total)}",
        )


def check(
    rules: GpuRules, view: WorkloadView, usage: GpuUsage | None, claims: Claims | None = None
) -> list[Finding]:
    total, demands = workload_demand(rules, view, claims)
    per_workload = list(_per_workload(rules, view, total, demands))
    quota = [] if view.per_node else list(_quota(rules, view, total, usage))
    return [*_per_pod(rules, demands), *per_workload, *quota]
