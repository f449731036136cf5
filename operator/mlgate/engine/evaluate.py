"""evaluate(policies, workload, facts) -> Decision: the one entry point of the engine."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mlgate.engine import egress, exposure, gpu, images, llm_policy, models, side_doors
from mlgate.engine.decisions import Decision, Finding, Mode, Rule, Violation, attribute
from mlgate.engine.effective import effective_view
from mlgate.engine.kindspec import may_run
from mlgate.engine.policy import CompiledPolicy, Facts, UnknownKinds
from mlgate.engine.scope import governing, namespace_in_scope
from mlgate.engine.workloads import Unsupported, WorkloadView

# The cluster must always be able to repair itself, whatever a policy says.
ALWAYS_EXEMPT = frozenset({"kube-system"})


def _findings(policy: CompiledPolicy, workload: WorkloadView, facts: Facts) -> list[Finding]:
    if policy.invalid is not None:
        return [invalid_policy(policy.name, policy.invalid)]
    # A runtime the workload names but nobody can show: what will run is unknown, so every
    # policy governing it objects (mlgate.engine.effective).
    found = [Finding(Rule.WORKLOAD_RUNTIME, u.path, u.message) for u in workload.unresolved]
    if policy.images is not None:
        found += images.check(policy.images, workload, facts.images)
    if policy.models is not None:
        found += models.check(policy.models, workload, facts.approvals, facts.now)
    if policy.egress is not None:
        found += side_doors.check(policy.egress, workload)
    if policy.gpu is not None:
        found += gpu.check(policy.gpu, workload, facts.gpu_usage, facts.device_claims)
    return found


def _offline_notes(policies: tuple[CompiledPolicy, ...], workload: WorkloadView) -> Iterator[str]:
    for policy in policies:
        if policy.images is not None:
            for note in images.unverified(policy.images, workload):
                yield f"[{policy.name}] {note}"


def invalid_policy(name: str, reason: str) -> Finding:
    return Finding(
        Rule.POLICY_INVALID,
        "metadata.namespace",
        f"policy {name} has no valid version in force ({reason}); mlgate denies what it "
        "governs until the policy is fixed",
    )


def decide(
    violations: list[Violation], matched: tuple[str, ...], notes: tuple[str, ...]
) -> Decision:
    allowed = not any(v.mode is Mode.ENFORCE for v in violations)
    return Decision(allowed, tuple(violations), matched, notes)


def _unknown_kind_mode(policy: CompiledPolicy) -> Mode | None:
    """The mode an unjudgeable object's violation takes under `policy` (None: none at all)."""
    if policy.unknown_kinds is UnknownKinds.ALLOW:
        return None
    if policy.unknown_kinds is UnknownKinds.WARN and policy.mode is Mode.ENFORCE:
        return Mode.WARN
    return policy.mode


def evaluate_unsupported(
    policies: tuple[CompiledPolicy, ...], item: Unsupported, obj: Mapping[str, Any], facts: Facts
) -> Decision:
    """An object mlgate cannot judge: nothing to say unless it runs containers; then each
    governing policy's `unknownKinds` decides. The webhook and `check` both come here."""
    if item.namespace in ALWAYS_EXEMPT:
        return Decision(True)
    if not may_run(obj):
        what = item.kind or "the document"
        return Decision(True, notes=(f"{what} is not a workload kind; not judged",))
    labels = _labels(obj)
    matched = governing(policies, item.namespace, facts.namespace_labels, item.kind, labels)
    fix = (
        "use a supported workload kind or teach mlgate this one with a WorkloadKind"
        if facts.kinds.lookup(item.api_version, item.kind) is None
        else "write it so that what will run can be seen"
    )
    finding = Finding(
        Rule.WORKLOAD_UNSUPPORTED,
        "kind",
        f"{item.kind} ({item.api_version}) runs containers but mlgate cannot judge it: "
        f"{item.reason}; {fix}",
    )
    violations = [
        v
        for p in matched
        if (mode := _unknown_kind_mode(p)) is not None
        for v in attribute(p.name, mode, [finding])
    ]
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
    fenced = _fenced(policies, matched, workload.namespace, facts)
    violations += [
        v
        for p in fenced
        if p.egress is not None
        for v in attribute(p.name, p.mode, side_doors.check(p.egress, workload))
    ]
    notes = tuple(_offline_notes(matched, workload)) if facts.images is None else ()
    return decide(violations, tuple(p.name for p in (*matched, *fenced)), notes)


def _fenced(
    policies: tuple[CompiledPolicy, ...],
    matched: tuple[CompiledPolicy, ...],
    namespace: str,
    facts: Facts,
) -> tuple[CompiledPolicy, ...]:
    """Egress policies that do not select the workload but whose allowlist shapes the namespace's
    mlgate-egress, which covers every pod there: their side-door rules must cover the same pods,
    or a pod outside the selector could step around the NetworkPolicy."""
    effective = egress.namespace_egress(policies, namespace, facts.namespace_labels)
    if effective is None:
        return ()
    return tuple(p for p in policies if p.name in effective.policies and p not in matched)


def evaluate_network_policy(
    policies: tuple[CompiledPolicy, ...], netpol: Mapping[str, Any], facts: Facts
) -> Decision:
    """A user NetworkPolicy against the egress allowlists of the policies governing its
    namespace. Scope is by namespace only: kinds and workload selectors concern workloads."""
    namespace = str(_meta(netpol).get("namespace") or "")
    if namespace in ALWAYS_EXEMPT:
        return Decision(True, notes=(f"namespace {namespace} is always exempt",))
    matched = [
        (p, rules)
        for p in policies
        if (rules := egress.allowlist(p)) is not None
        and namespace_in_scope(p.match, namespace, facts.namespace_labels)
    ]
    violations = [
        v
        for p, rules in matched
        for v in attribute(p.name, p.mode, egress.widening_findings(netpol, rules, namespace))
    ]
    return decide(violations, tuple(p.name for p, _ in matched), ())


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def with_llm(
    decision: Decision, policies: tuple[CompiledPolicy, ...], obj: Mapping[str, Any], facts: Facts
) -> Decision:
    """`decision` with the llm rules' verdict on `obj` added (engine.llm_policy)."""
    if not isinstance(obj, Mapping) or str(_meta(obj).get("namespace") or "") in ALWAYS_EXEMPT:
        return decision
    check = (
        llm_policy.exposure_violations
        if exposure.is_exposure(obj)
        else (llm_policy.workload_violations)
    )
    violations, judged = check(policies, obj, facts)
    if not judged:
        return decision
    matched = tuple(dict.fromkeys((*decision.matched_policies, *judged)))
    # A decision no policy made carries only "not judged" notes, which the llm rules belie.
    notes = decision.notes if decision.matched_policies else ()
    return decide([*decision.violations, *violations], matched, notes)


def evaluate(
    policies: tuple[CompiledPolicy, ...], obj: Mapping[str, Any], facts: Facts
) -> Decision:
    """Judge one Kubernetes object against every policy; plain data in, a Decision out."""
    if egress.is_network_policy(obj):
        return evaluate_network_policy(policies, obj, facts)
    item = effective_view(obj, facts.runtimes, facts.kinds)
    if isinstance(item, Unsupported):
        if item.namespace in ALWAYS_EXEMPT:
            return Decision(True)
        return with_llm(evaluate_unsupported(policies, item, obj, facts), policies, obj, facts)
    return with_llm(evaluate_view(policies, item, facts), policies, obj, facts)
