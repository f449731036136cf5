"""The llm rules in the webhook: facts come from the related-objects lookup, read only where a
policy with llm rules governs; LLMs, exposure objects and LLM-only kinds are routed to them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mlgate.controller.audit import Related
from mlgate.controller.audit import judge as audit
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.state import PolicyState
from mlgate.engine.policy import Facts as EngineFacts
from mlgate.engine.related import RelatedKind
from mlgate.webhook.admission import Admission, Config, Outcome
from mlgate.webhook.review import parse_review
from tests.unit.factories import deployment, policy, review

GOVERNED = {"mlgate.io/governed": "true"}
LLM_RULES = {"requireGuardrail": {}, "noDirectExposure": True}


def vllm(name: str = "chat") -> dict[str, Any]:
    body = deployment(name=name, image="vllm/vllm-openai:v0.8.5")
    body["spec"]["template"]["metadata"] = {"labels": {"app": name}}
    return body


GUARD = {
    "apiVersion": "apps.nvidia.com/v1alpha1",
    "kind": "NemoGuardrail",
    "metadata": {"name": "guard", "namespace": "ml-prod"},
    "spec": {"nimEndpoint": {"baseURL": "http://chat-svc.ml-prod.svc.cluster.local:8000/v1"}},
}
CHAT_SVC = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "chat-svc", "namespace": "ml-prod"},
    "spec": {"selector": {"app": "chat"}},
}


class Facts:
    """The cluster's objects, and which namespaces were asked for."""

    def __init__(self, *objects: Mapping[str, Any]) -> None:
        self.objects = objects
        self.asked: list[str] = []

    async def __call__(
        self, namespace: str, _: tuple[RelatedKind, ...]
    ) -> tuple[Mapping[str, Any], ...]:
        self.asked.append(namespace)
        return self.objects


def judge(facts: Facts, body: dict[str, Any], resource: str, labels: Any = None) -> Outcome:
    state = PolicyState()
    assert state.upsert(policy(llm=LLM_RULES)).ok
    state.set_namespace("ml-prod", GOVERNED if labels is None else labels)
    admission = Admission(state, GpuLedger(), Config(), related=facts)
    return asyncio.run(admission.review(parse_review(review(body, resource=resource))))


def test_unguarded_llm_is_denied_with_framework_ids() -> None:
    outcome = judge(Facts(CHAT_SVC), vllm(), "deployments")
    assert not outcome.allowed
    assert "llm.requireGuardrail" in outcome.message
    assert "MITRE ATLAS AML.M0020, AML.T0051, AML.T0054; OWASP LLM01, LLM02, LLM05, LLM09" in (
        outcome.message
    )


def test_guarded_llm_is_admitted() -> None:
    assert judge(Facts(CHAT_SVC, GUARD), vllm(), "deployments").allowed


def test_load_balancer_to_llm_pods_is_denied_once_the_llm_exists() -> None:
    lb = {**CHAT_SVC, "metadata": {"name": "lb", "namespace": "ml-prod"}}
    lb["spec"] = {"type": "LoadBalancer", "selector": {"app": "chat"}}
    outcome = judge(Facts(CHAT_SVC, GUARD, vllm()), lb, "services")
    assert not outcome.allowed and "llm.noDirectExposure at spec.type" in outcome.message
    assert judge(Facts(CHAT_SVC, GUARD), lb, "services").allowed  # no LLM behind it


def test_llm_only_kinds_are_judged_by_their_llm_rules() -> None:
    nim = {
        "apiVersion": "apps.nvidia.com/v1alpha1",
        "kind": "NIMService",
        "metadata": {"name": "llama", "namespace": "ml-prod"},
        "spec": {"image": {"repository": "nvcr.io/nim/meta/llama3-8b-instruct", "tag": "1.0.3"}},
    }
    outcome = judge(Facts(), nim, "nimservices")
    assert not outcome.allowed and "llm.requireGuardrail" in outcome.message


def test_facts_are_read_only_for_llms_and_exposure_where_llm_rules_govern() -> None:
    facts = Facts()
    assert judge(facts, vllm(), "deployments", labels={}).allowed
    assert judge(facts, deployment(), "deployments").allowed
    assert facts.asked == []
    judge(facts, vllm(), "deployments")
    assert facts.asked == ["ml-prod"]


def test_audit_reports_an_llm_whose_guardrail_is_gone() -> None:
    """Admitted behind its guardrail, then the guardrail was deleted: the audit counts it."""
    state = PolicyState()
    assert state.upsert(policy(llm=LLM_RULES)).ok
    policies = state.snapshot().policies
    llm = vllm()

    def count(*objects: Mapping[str, Any]) -> int:
        related = Related.of_objects(objects)

        def facts_for(namespace: str) -> EngineFacts:
            return EngineFacts(now=datetime.now(UTC), related=related.of(namespace))

        return audit(policies, [llm], facts_for, frozenset()).per_policy["production-ml"]

    assert count(CHAT_SVC, GUARD, llm) == 0
    assert count(CHAT_SVC, llm) == 1
