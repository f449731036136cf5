"""The `llm` rules of every policy for one object: an LLM-serving workload, or an exposure
object (Service, Ingress, route) that may reach one. Called by `evaluate` (check and audit)
and by the webhook, with the namespace's related objects as facts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlgate.engine import exposure, guardrails, reach
from mlgate.engine.decisions import Finding, Violation, attribute
from mlgate.engine.llm import LlmServer, LlmTarget, recognise
from mlgate.engine.models import references
from mlgate.engine.policy import CompiledPolicy, Facts, LlmRules, ModelRules
from mlgate.engine.related import runtimes
from mlgate.engine.scope import governing, namespace_in_scope, workload_in_scope
from mlgate.engine.workloads import WorkloadView, view


def servers(rules: LlmRules) -> tuple[LlmServer, ...]:
    return tuple(LlmServer(name, images, commands) for name, images, commands in rules.servers)


def _identity(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    return (obj.get("apiVersion"), obj.get("kind"), reach.namespace_of(obj), reach.name_of(obj))


def may_concern(policies: tuple[CompiledPolicy, ...], obj: Mapping[str, Any]) -> bool:
    """Whether any policy's llm rules could judge `obj`: it is an exposure object, or serves an
    LLM by the table or a policy's own servers. Others need no facts gathered."""
    rules = [p.llm for p in policies if p.llm is not None]
    return bool(rules) and (
        exposure.is_exposure(obj)
        or obj.get("kind") == "InferenceService"  # its runtime may make it one
        or any(recognise(obj, servers(r)) is not None for r in rules)
    )


def in_context(obj: Mapping[str, Any], facts: Facts) -> tuple[Mapping[str, Any], ...]:
    """The related objects as they will be once `obj` is admitted: its stored version (an
    update) replaced by the submitted one."""
    own = _identity(obj)
    return (*(o for o in facts.related or () if _identity(o) != own), obj)


def _declared_models(obj: Mapping[str, Any]) -> list[str]:
    item = view(obj)
    if not isinstance(item, WorkloadView):
        return []
    return [ref.value for ref, _ in references(ModelRules(), item)]


def _workload_findings(
    rules: LlmRules,
    obj: Mapping[str, Any],
    target: LlmTarget,
    related: Sequence[Mapping[str, Any]],
    facts: Facts,
    *,
    evidence: ModelRules,
) -> list[Finding]:
    found: list[Finding] = []
    guard = rules.require_guardrail
    if guard is not None:
        detector = guardrails.detector_problems(
            guard, target, _declared_models(obj), facts.approvals, facts.now, evidence=evidence
        )
        found += (
            guardrails.require_guardrail(
                guard, target, related, facts.approvals, facts.now, evidence=evidence
            )
            if detector is None
            else detector
        )
    if rules.no_direct_exposure:
        found += exposure.exposed_findings(obj, target, related)
    if rules.require_rate_limit:
        found += guardrails.require_rate_limit(target, related)
    return found


def workload_violations(
    policies: tuple[CompiledPolicy, ...], obj: Mapping[str, Any], facts: Facts
) -> tuple[list[Violation], tuple[str, ...]]:
    """Violations of an object that may serve an LLM, and the names of the policies whose llm
    rules judged it."""
    if all(p.llm is None for p in policies):  # most policies have no llm rules: nothing to judge
        return [], ()
    namespace = reach.namespace_of(obj)
    found = reach.meta(obj).get("labels")
    # Untrusted: a labels field that is not a mapping (a string in some upstream docs) has none.
    labels = {
        k: v for k, v in (found if isinstance(found, Mapping) else {}).items() if isinstance(v, str)
    }
    kind = str(obj.get("kind") or "")
    related = in_context(obj, facts)
    violations: list[Violation] = []
    judged: list[str] = []
    for policy in governing(policies, namespace, facts.namespace_labels, kind, labels):
        if policy.llm is None:
            continue
        target = recognise(obj, servers(policy.llm), runtimes(related))
        if target is None:
            continue
        judged.append(policy.name)
        # A guardrail's own model needs the evidence the policy demands of any model.
        evidence = policy.models or ModelRules()
        findings = _workload_findings(policy.llm, obj, target, related, facts, evidence=evidence)
        violations += attribute(policy.name, policy.mode, findings)
    return violations, tuple(judged)


def _targets(
    related: Sequence[Mapping[str, Any]], namespace: str, servers: tuple[LlmServer, ...]
) -> list[LlmTarget]:
    found = []
    for obj in related:
        if reach.same_namespace(reach.namespace_of(obj), namespace) and not exposure.is_exposure(
            obj
        ):
            target = recognise(obj, servers, runtimes(tuple(related)))
            if target is not None:
                found.append(target)
    return found


def exposure_violations(
    policies: tuple[CompiledPolicy, ...], obj: Mapping[str, Any], facts: Facts
) -> tuple[list[Violation], tuple[str, ...]]:
    """Violations of a Service, Ingress or route that reaches an LLM of its namespace that a
    policy with noDirectExposure governs (by the LLM's kind and labels)."""
    namespace = reach.namespace_of(obj)
    related = in_context(obj, facts)
    violations: list[Violation] = []
    judged: list[str] = []
    for policy in policies:
        rules = policy.llm
        if rules is None or not rules.no_direct_exposure:
            continue
        if not namespace_in_scope(policy.match, namespace, facts.namespace_labels):
            continue
        judged.append(policy.name)
        for target in _targets(related, namespace, servers(rules)):
            if workload_in_scope(policy.match, target.kind, target.labels):
                findings = exposure.exposure_findings(obj, target, related)
                violations += attribute(policy.name, policy.mode, findings)
    return violations, tuple(judged)
