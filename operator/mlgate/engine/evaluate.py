"""evaluate(policies, workload, facts) -> Decision: the one entry point of the engine."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mlgate.engine import egress, gpu, images, models
from mlgate.engine.decisions import Decision, Finding, Mode, Rule, Violation, attribute
from mlgate.engine.policy import CompiledPolicy, Facts
from mlgate.engine.scope import governing
from mlgate.engine.workloads import Unsupported, WorkloadView, view

# The cluster must always be able to repair itself, whatever a policy says.
ALWAYS_EXEMPT = frozenset({"kube-system"})


def _findings(policy: CompiledPolicy, workload: WorkloadView, facts: Facts) -> list[Finding]:
    found: list[Finding] = []
    if policy.images is not None:
        found += images.check(policy.images, workload, facts.images)
    if policy.models is not None:
        found += models.check(policy.models, workload, facts.approvals, facts.now)
    if policy.egress is not None:
        found += egress.check(policy.egress, workload)
    if policy.gpu is not None:
        found += gpu.check(policy.gpu, workload, facts.gpu_usage)
    return found


def _offline_notes(policies: tuple[CompiledPolicy, ...], workload: WorkloadView) -> Iterator[str]:
    for policy in policies:
        if policy.images is not None:
            for note in images.unverified(policy.images, workload):
                yield f"[{policy.name}] {note}"


def _contains_pod_template(node: Any, depth: int = 0) -> bool:
    """Whether an unknown object carries containers somewhere, i.e. would run something."""
    if depth > 12:
        return False
    if isinstance(node, Mapping):
        if isinstance(node.get("containers"), list):
            return True
        return any(_contains_pod_template(v, depth + 1) for v in node.values())
    if isinstance(node, list):
        return any(_contains_pod_template(v, depth + 1) for v in node)
    return False


def decide(
    violations: list[Violation], matched: tuple[str, ...], notes: tuple[str, ...]
) -> Decision:
    allowed = not any(v.mode is Mode.ENFORCE for v in violations)
    return Decision(allowed, tuple(violations), matched, notes)


def _unsupported(
    policies: tuple[CompiledPolicy, ...], item: Unsupported, obj: Mapping[str, Any], facts: Facts
) -> Decision:
    if not _contains_pod_template(obj.get("spec")):
        return Decision(True, notes=(f"{item.kind} is not a workload kind; not judged",))
    labels = _labels(obj)
    matched = governing(policies, item.namespace, facts.namespace_labels, item.kind, labels)
    finding = Finding(
        Rule.WORKLOAD_UNSUPPORTED,
        "kind",
        f"{item.kind} ({item.api_version}) runs containers but mlgate cannot judge it: "
        f"{item.reason}; use a supported workload kind",
    )
    violations = [v for p in matched for v in attribute(p.name, p.mode, [finding])]
    return decide(violations, tuple(p.name for p in matched), ())


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    meta = obj.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    return labels if isinstance(labels, Mapping) else {}


def evaluate_view(
    policies: tuple[CompiledPolicy, ...], workload: WorkloadView, facts: Facts
) -> Decision:
    if workload.namespace in ALWAYS_EXEMPT:
        return Decision(True, notes=(f"namespace {workload.namespace} is always exempt",))
    matched = governing(
        policies, workload.namespace, facts.namespace_labels, workload.kind, workload.labels
    )
    violations = [
        v for p in matched for v in attribute(p.name, p.mode, _findings(p, workload, facts))
    ]
    notes = tuple(_offline_notes(matched, workload)) if facts.images is None else ()
    return decide(violations, tuple(p.name for p in matched), notes)


def evaluate(
    policies: tuple[CompiledPolicy, ...], obj: Mapping[str, Any], facts: Facts
) -> Decision:
    """Judge one Kubernetes object against every policy; plain data in, a Decision out."""
    item = view(obj)
    if isinstance(item, Unsupported):
        if item.namespace in ALWAYS_EXEMPT:
            return Decision(True)
        return _unsupported(policies, item, obj, facts)
    return evaluate_view(policies, item, facts)
