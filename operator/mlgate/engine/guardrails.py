"""llm.requireGuardrail and llm.requireRateLimit: what must stand in front of an LLM.

A guardrail is a fact about the cluster, not a field of the workload: the webhook gathers the
guardrail objects of the namespace, `mlgate check` takes them from its input. A guardrail
counts when it targets the LLM and its own model (if it names one) is approved.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from mlgate.engine import reach
from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.llm import LlmTarget, group_of
from mlgate.engine.models import approval_problem, normalise
from mlgate.engine.policy import Approval, GuardrailContract, GuardrailRules, ModelRules
from mlgate.engine.reads import as_map as _map
from mlgate.engine.reads import as_str as _str
from mlgate.engine.scope import selector_matches

TRUSTYAI = "trustyai.opendatahub.io"
NVIDIA_APPS = "apps.nvidia.com"
KUADRANT = "kuadrant.io"
ORCHESTRATOR = "GuardrailsOrchestrator"
NEMO = "NemoGuardrail"
GATEWAY_POLICY = "ClusterGuardrailPolicy"
# The built-in guardrail kinds a policy may accept, by the name it uses for them.
BUILT_IN: Mapping[str, tuple[tuple[str, str], ...]] = {
    ORCHESTRATOR: ((TRUSTYAI, ORCHESTRATOR),),
    NEMO: ((NVIDIA_APPS, NEMO), (NVIDIA_APPS, "NemoGuardrails")),
    GATEWAY_POLICY: ((TRUSTYAI, GATEWAY_POLICY),),
}
RATE_LIMIT_KINDS = frozenset({(KUADRANT, "TokenRateLimitPolicy"), (KUADRANT, "RateLimitPolicy")})
# Where TrustyAI's orchestrator config names the LLM it forwards to.
_GENERATION_BLOCK = re.compile(r"^(?:chat_)?generation:\s*$", re.MULTILINE)
_HOSTNAME = re.compile(r"^\s+hostname:\s*[\"']?([^\"'\s#]+)", re.MULTILINE)


def _of(obj: Mapping[str, Any], kinds: Sequence[tuple[str, str]]) -> bool:
    return (group_of(_str(obj.get("apiVersion"))), obj.get("kind")) in kinds


def is_gateway_guardrail(obj: Mapping[str, Any]) -> bool:
    """A gateway guardrail policy. Matched by kind in any API group: the kind is cluster-scoped
    and only cluster admins install CRDs, so a tenant cannot forge one; the stand-in is
    TrustyAI's group."""
    return obj.get("kind") == GATEWAY_POLICY


def _title(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')} {reach.namespace_of(obj) or '(cluster)'}/{reach.name_of(obj)}"


# ---------------------------------------------------------------------------------------------
# Which guardrail objects target the LLM


def _generation_hosts(text: str) -> Iterator[str]:
    """The generation service host names of a fms-guardrails-orchestrator config.yaml, read
    without a YAML parser (a ConfigMap is tenant input; aliases could blow up a parser)."""
    for block in _GENERATION_BLOCK.finditer(text):
        rest = text[block.end() :]
        end = re.search(r"^\S", rest, re.MULTILINE)
        found = _HOSTNAME.search(rest[: end.start() if end else len(rest)])
        if found:
            yield found.group(1)


def _orchestrator_targets(
    gorch: Mapping[str, Any], target: LlmTarget, related: Sequence[Mapping[str, Any]]
) -> bool:
    spec, namespace = _map(gorch.get("spec")), reach.namespace_of(gorch)
    if not reach.same_namespace(namespace, target.namespace):
        return False
    auto = _map(spec.get("autoConfig"))
    if _str(auto.get("inferenceServiceToGuardrail")) == target.name and target.kind in (
        "InferenceService",
        "LLMInferenceService",
    ):
        return True
    config = _str(spec.get("orchestratorConfig"))
    for obj in related:
        if (
            reach.is_kind(obj, "", "ConfigMap")
            and reach.name_of(obj) == config
            and reach.same_namespace(reach.namespace_of(obj), namespace)
        ):
            for text in _map(obj.get("data")).values():
                for host in _generation_hosts(_str(text)):
                    if reach.names_target(host, namespace, target, related):
                        return True
    return False


def _nemo_targets(
    nemo: Mapping[str, Any], target: LlmTarget, related: Sequence[Mapping[str, Any]]
) -> bool:
    spec, namespace = _map(nemo.get("spec")), reach.namespace_of(nemo)
    urls = [_str(_map(spec.get("nimEndpoint")).get("baseURL"))]
    urls += [
        _str(_map(e).get("value"))
        for e in spec.get("env") or ()
        if _map(e).get("name") == "NIM_ENDPOINT_URL"
    ]
    return any(u and reach.names_target(u, namespace, target, related) for u in urls)


def target_refs(obj: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(kind, namespace, name) of a policy-attachment object's targetRef(s)."""
    spec = _map(obj.get("spec"))
    refs = [spec.get("targetRef"), *(spec.get("targetRefs") or ())]
    for ref in map(_map, refs):
        namespace = _str(ref.get("namespace")) or reach.namespace_of(obj)
        yield _str(ref.get("kind")), namespace, _str(ref.get("name"))


def _routes(target: LlmTarget, related: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(namespace, name) of the Gateway API routes that lead to the LLM."""
    found = {
        (reach.namespace_of(r), reach.name_of(r))
        for r in related
        if reach.is_gateway_route(r) and reach.route_reaches(r, target, related)
    }
    return found | {(target.namespace, n) for n in _own_routes(target, related)}


def _own_routes(target: LlmTarget, related: Sequence[Mapping[str, Any]]) -> set[str]:
    """Routes an LLMInferenceService names or has KServe create for it."""
    for obj in related:
        if _is_target(obj, target) and target.kind == "LLMInferenceService":
            route = _map(_map(_map(obj.get("spec")).get("router")).get("route"))
            refs = _map(route.get("http")).get("refs") or ()
            names = {_str(_map(r).get("name")) for r in refs}
            return names | ({f"{target.name}-kserve-route"} if route else set())
    return set()


def _gateways(target: LlmTarget, related: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(namespace, name) of the Gateways the LLM is served through."""
    routes = _routes(target, related)
    found = {
        (namespace, name)
        for r in related
        if reach.is_gateway_route(r) and (reach.namespace_of(r), reach.name_of(r)) in routes
        for kind, namespace, name in reach.route_parents(r)
        if kind == "Gateway"
    }
    for obj in related:
        if _is_target(obj, target):
            found |= router_gateways(obj)
    return found


# Where KServe attaches an LLMInferenceService's route when `router.gateway` names none (its
# `ingress.kserveIngressGateway` default).
DEFAULT_KSERVE_GATEWAY = ("kserve", "kserve-ingress-gateway")


def router_gateways(llmisvc: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(namespace, name) of the Gateways an LLMInferenceService's router serves it through."""
    router = _map(_map(llmisvc.get("spec")).get("router"))
    if not isinstance(router.get("gateway"), Mapping) and not isinstance(
        router.get("route"), Mapping
    ):
        return set()
    refs = [_map(r) for r in _map(router.get("gateway")).get("refs") or ()]
    namespace = reach.namespace_of(llmisvc)
    found = {(_str(r.get("namespace")) or namespace, _str(r.get("name"))) for r in refs}
    return found or {DEFAULT_KSERVE_GATEWAY}


def _is_target(obj: Mapping[str, Any], target: LlmTarget) -> bool:
    return (
        obj.get("kind") == target.kind
        and reach.name_of(obj) == target.name
        and reach.same_namespace(reach.namespace_of(obj), target.namespace)
    )


def _attached(
    policy: Mapping[str, Any], target: LlmTarget, related: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether a policy-attachment object targets one of the LLM's routes or gateways."""
    routes, gateways = _routes(target, related), _gateways(target, related)
    for kind, namespace, name in target_refs(policy):
        if kind == "Gateway" and (namespace, name) in gateways:
            return True
        if kind.endswith("Route") and (namespace, name) in routes:
            return True
    return False


def _field(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for key in path.split("."):
        value = _map(value).get(key)
    return _str(value)


def _contract_targets(
    contract: GuardrailContract,
    obj: Mapping[str, Any],
    target: LlmTarget,
    related: Sequence[Mapping[str, Any]],
) -> bool:
    if obj.get("apiVersion") != contract.api_version or obj.get("kind") != contract.kind:
        return False
    labels = {k: v for k, v in _map(reach.meta(obj).get("labels")).items() if isinstance(v, str)}
    if contract.selector is not None and not selector_matches(contract.selector, labels):
        return False
    value = _field(obj, contract.target_field)
    namespace = reach.namespace_of(obj) or target.namespace
    return bool(value) and reach.names_target(value, namespace, target, related)


def _guards(
    rules: GuardrailRules,
    obj: Mapping[str, Any],
    target: LlmTarget,
    related: Sequence[Mapping[str, Any]],
) -> bool:
    accepted = rules.accept
    if ORCHESTRATOR in accepted and _of(obj, BUILT_IN[ORCHESTRATOR]):
        return _orchestrator_targets(obj, target, related)
    if NEMO in accepted and _of(obj, BUILT_IN[NEMO]):
        return _nemo_targets(obj, target, related)
    if GATEWAY_POLICY in accepted and is_gateway_guardrail(obj):
        return _attached(obj, target, related)
    return any(_contract_targets(c, obj, target, related) for c in rules.contracts)


# ---------------------------------------------------------------------------------------------
# The guardrail's own model


def _model_problem(
    rules: GuardrailRules,
    value: str,
    approvals: tuple[Approval, ...],
    namespace: str,
    now: datetime,
    *,
    evidence: ModelRules,
) -> str | None:
    wanted = normalise(value, hf_id=True, name_version=True)
    if wanted is None:
        return f"{value!r} names no model URI or name@version"
    allowed = tuple(
        a
        for a in approvals
        if not rules.guardrail_models or any(g.fullmatch(a.model) for g in rules.guardrail_models)
    )
    problem = approval_problem(wanted, allowed, namespace, now, evidence)
    return (
        None
        if problem is None
        else f"model {value!r} is not an approved guardrail model: {problem}"
    )


def guardrail_model_problems(
    rules: GuardrailRules,
    declared: Sequence[str],
    approvals: tuple[Approval, ...],
    namespace: str,
    now: datetime,
    *,
    evidence: ModelRules,
) -> list[str]:
    """Why the guardrail's models do not count: each must be approved (as a guardrail model
    where the policy names them) with the evidence the policy's `models` rules demand."""
    return [
        p
        for v in declared
        if (p := _model_problem(rules, v, approvals, namespace, now, evidence=evidence)) is not None
    ]


def _declared_models(rules: GuardrailRules, obj: Mapping[str, Any]) -> list[str]:
    annotations = _map(reach.meta(obj).get("annotations"))
    return [_str(annotations.get(k)) for k in rules.model_annotations if k in annotations]


def _accepted_names(rules: GuardrailRules) -> str:
    names = sorted(rules.accept) + [f"{c.kind} ({c.api_version})" for c in rules.contracts]
    return ", ".join(names) or "(none: the policy accepts no guardrail kind)"


def _how_to(target: LlmTarget, rules: GuardrailRules) -> str:
    hints = []
    if ORCHESTRATOR in rules.accept:
        hints.append(
            f"a {ORCHESTRATOR} with spec.autoConfig.inferenceServiceToGuardrail: {target.name}"
            if target.kind in ("InferenceService", "LLMInferenceService")
            else f"a {ORCHESTRATOR} whose orchestratorConfig generation hostname is its Service"
        )
    if NEMO in rules.accept:
        hints.append(f"a {NEMO} whose spec.nimEndpoint.baseURL is its Service's URL")
    if GATEWAY_POLICY in rules.accept:
        hints.append(f"a {GATEWAY_POLICY} targeting the Gateway or HTTPRoute it is served through")
    return "; or ".join(hints) or f"one of: {_accepted_names(rules)}"


def require_guardrail(
    rules: GuardrailRules,
    target: LlmTarget,
    related: Sequence[Mapping[str, Any]],
    approvals: tuple[Approval, ...],
    now: datetime,
    *,
    evidence: ModelRules,
) -> list[Finding]:
    """An LLM must be targeted by an accepted guardrail whose own model is approved.

    The denial is retryable: guardrails are created first (they may name an LLM that does not
    exist yet), and a GitOps tool or `kubectl apply` retried after them succeeds."""
    unapproved: list[str] = []
    for obj in related:
        if not _guards(rules, obj, target, related):
            continue
        problems = guardrail_model_problems(
            rules, _declared_models(rules, obj), approvals, target.namespace, now, evidence=evidence
        )
        if not problems:
            return []
        unapproved.append(f"{_title(obj)} targets it but {'; '.join(problems)}")
    if unapproved:
        message = "; ".join(unapproved) + "; approve the guardrail's model or use another guardrail"
    else:
        message = (
            f"LLM {target.describe()} is served without a guardrail in front of it: no guardrail "
            f"the policy accepts ({_accepted_names(rules)}) targets it. Create "
            f"{_how_to(target, rules)} first, then apply this again (the denial is retryable: "
            "it names what is missing)"
        )
    return [Finding(Rule.LLM_GUARDRAIL, "metadata.name", message)]


def detector_problems(
    rules: GuardrailRules,
    target: LlmTarget,
    models: Sequence[str],
    approvals: tuple[Approval, ...],
    now: datetime,
    *,
    evidence: ModelRules,
) -> list[Finding] | None:
    """For a guardrail detector (labelled as one): the findings on its own model; None when the
    LLM is not a detector and must be guarded itself.

    A label is the tenant's to set, so it exempts nothing by itself: the detector's models must
    be approved as guardrail models, which needs the policy to name them (guardrailModels);
    otherwise any approved chat model could be relabelled out of its guardrail."""
    if rules.detector_selector is None or not selector_matches(
        rules.detector_selector, target.labels
    ):
        return None
    if not rules.guardrail_models:
        message = (
            f"{target.describe()} is labelled as a guardrail detector, but the policy names no "
            "guardrail models (llm.requireGuardrail.guardrailModels), so it needs a guardrail "
            "like any LLM; name the approved detector models there"
        )
        return [Finding(Rule.LLM_GUARDRAIL, "metadata.labels", message)]
    if not models:
        message = (
            f"guardrail detector {target.describe()} declares no model, so mlgate cannot tell it "
            "runs an approved guardrail model; add annotation mlgate.io/model-uri"
        )
        return [Finding(Rule.LLM_GUARDRAIL, "metadata.annotations", message)]
    problems = guardrail_model_problems(
        rules, models, approvals, target.namespace, now, evidence=evidence
    )
    return [
        Finding(Rule.LLM_GUARDRAIL, "metadata.labels", f"guardrail detector {target.name}: {p}")
        for p in problems
    ]


def require_rate_limit(target: LlmTarget, related: Sequence[Mapping[str, Any]]) -> list[Finding]:
    for obj in related:
        if _of(obj, tuple(RATE_LIMIT_KINDS)) and _attached(obj, target, related):
            return []
    message = (
        f"LLM {target.describe()} has no rate limit: no TokenRateLimitPolicy or RateLimitPolicy "
        "(kuadrant.io) targets an HTTPRoute or Gateway it is served through; add one first, "
        "then apply this again"
    )
    return [Finding(Rule.LLM_RATE_LIMIT, "metadata.name", message)]
