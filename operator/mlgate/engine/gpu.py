"""GPU demand per pod, per workload and per namespace, and the GPU products pods may select."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.kindspec import UNBOUNDED
from mlgate.engine.policy import GpuRules
from mlgate.engine.quantities import InvalidQuantity, parse_quantity
from mlgate.engine.workloads import (
    ContainerKind,
    ContainerView,
    PodView,
    WorkloadView,
)

PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True, slots=True)
class PodDemand:
    pod: PodView
    gpus: int
    errors: tuple[Finding, ...] = ()


def _container_gpus(rules: GpuRules, c: ContainerView) -> tuple[int, list[Finding]]:
    """GPUs a container asks for: the larger of request and limit, summed over GPU resources."""
    total, errors = 0, []
    amounts: dict[str, int] = {}
    for section in ("limits", "requests"):
        values = c.resources.get(section)
        if not isinstance(values, Mapping):
            continue
        for resource, raw in values.items():
            if not any(p.fullmatch(str(resource)) for p in rules.resources):
                continue
            try:
                quantity = parse_quantity(raw)
                problem = f"{raw!r} is negative" if quantity < 0 else None
            except InvalidQuantity as exc:
                problem = str(exc)
            if problem is not None:  # a negative amount must not offset other containers' GPUs
                errors.append(
                    Finding(
                        Rule.GPU_MAX_PER_POD,
                        f'{c.resources_path}.{section}["{resource}"]',
                        f"{problem}; GPU resources must be whole numbers",
                    )
                )
                continue
            amounts[resource] = max(amounts.get(resource, 0), math.ceil(quantity))
    total = sum(amounts.values())
    return total, errors


def pod_demand(rules: GpuRules, pod: PodView) -> PodDemand:
    """Effective GPUs of a pod, as the scheduler counts them.

    App containers and sidecars run together; plain init containers run one at a time before
    them, each alongside the sidecars declared before it, so the pod needs the larger of the two
    (the scheduler's formula; `pod.containers` keeps init containers in declaration order).
    """
    running, sidecars, init_peak, errors = 0, 0, 0, []
    for c in pod.containers:
        gpus, problems = _container_gpus(rules, c)
        errors.extend(problems)
        if c.kind is ContainerKind.APP:
            running += gpus
        elif c.kind is ContainerKind.SIDECAR:
            sidecars += gpus
            init_peak = max(init_peak, sidecars)
        elif c.kind is ContainerKind.INIT:
            init_peak = max(init_peak, gpus + sidecars)
    return PodDemand(pod, max(running + sidecars, init_peak), tuple(errors))


def workload_demand(rules: GpuRules, view: WorkloadView) -> tuple[int, list[PodDemand]]:
    demands = [pod_demand(rules, pod) for pod in view.pods]
    return sum(d.gpus * d.pod.count for d in demands), demands


def _pods(count: int) -> str:
    return "unbounded (autoscaling without a maximum)" if count >= UNBOUNDED else str(count)


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
        exprs = term.get("matchExpressions") if isinstance(term, Mapping) else None
        if not isinstance(exprs, list) or not any(
            isinstance(e, Mapping)
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
    chosen = selector.get(PRODUCT_LABEL) if isinstance(selector, Mapping) else None
    if chosen is not None:
        if isinstance(chosen, str) and chosen in allowed:
            return None
        return Finding(
            Rule.GPU_PRODUCT,
            f'{pod.path}.nodeSelector["{PRODUCT_LABEL}"]',
            f"GPU product {chosen!r} is not allowed; select one of: {', '.join(sorted(allowed))}",
        )
    affinity = pod.spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = (
        node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        if isinstance(node_affinity, Mapping)
        else None
    )
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
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
                f"each pod requests {d.gpus} GPUs, above the limit of {rules.max_per_pod} per "
                "pod; lower the GPU requests/limits of its containers",
            )
        if rules.allowed_products and d.gpus > 0:
            finding = _product_finding(rules, d.pod)
            if finding is not None:
                yield finding


def _per_workload(
    rules: GpuRules, view: WorkloadView, total: int, demands: list[PodDemand], usage: int | None
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
            f"limit of {rules.max_per_workload}; reduce replicas or GPUs per pod",
        )
    if rules.namespace_quota is not None and total:
        used = usage or 0
        if used + total > rules.namespace_quota:
            yield Finding(
                Rule.GPU_NAMESPACE_QUOTA,
                "spec",
                f"namespace {view.namespace or '(unset)'} would use {_amount(used + total)} GPUs "
                f"({used} in use + {_amount(total)} requested), above its quota of "
                f"{rules.namespace_quota}; free GPUs or request fewer",
            )


def check(rules: GpuRules, view: WorkloadView, usage: int | None) -> list[Finding]:
    total, demands = workload_demand(rules, view)
    return [*_per_pod(rules, demands), *_per_workload(rules, view, total, demands, usage)]
