"""NetworkPolicies already in a namespace that widen its allowlist: found, reported, and holding
back new workloads until they are removed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from mlgate.api.compile import compile_policy, parse_resource
from mlgate.controller.audit import judge
from mlgate.controller.egress import CONDITION, EgressReconciler
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.state import PolicyState
from mlgate.engine import widened
from mlgate.engine.decisions import Mode, Rule
from mlgate.engine.policy import CompiledPolicy, Facts
from mlgate.webhook.admission import Admission
from mlgate.webhook.review import parse_review
from tests.unit.factories import deployment, policy, review
from tests.unit.test_egress_controller import (
    STATUS_PATH,
    FakeApi,
    namespace,
    policy_body,
)
from tests.unit.test_egress_controller import (
    run as run_reconciler,
)
from tests.unit.test_egress_webhook import ALLOWLIST, GOVERNED, MANAGED, netpol

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def compiled(**spec: Any) -> CompiledPolicy:
    return compile_policy(parse_resource(policy(**spec)))  # type: ignore[arg-type]


def test_widening_network_policies_are_found_per_policy_by_namespace_scope() -> None:
    scoped = {"kinds": ["InferenceService"], "namespaceSelector": {"matchLabels": GOVERNED}}
    p = compiled(egress=ALLOWLIST, match=scoped)
    netpols = [netpol("wide", "0.0.0.0/0"), netpol("narrow", "10.1.0.0/16")]
    found = list(widened.widenings((p,), netpols, "ml-prod", GOVERNED))
    assert [(w.policy.name, w.name) for w in found] == [("production-ml", "wide")]
    assert found[0].first.path == "spec.egress[0].to[0].ipBlock.cidr"
    assert list(widened.widenings((p,), netpols, "other", {})) == []


def test_mlgates_own_network_policy_is_not_a_widening() -> None:
    p = compiled(egress=ALLOWLIST)
    ours = netpol("mlgate-egress", "0.0.0.0/0", labels=MANAGED)
    impostor = netpol("mlgate-egress", "0.0.0.0/0")
    found = widened.widenings((p,), [ours, impostor], "ml-prod", GOVERNED)
    assert [w.name for w in found] == ["mlgate-egress"]  # only the unlabelled one


def test_held_back_names_the_network_policy_to_remove() -> None:
    p = compiled(egress=ALLOWLIST)
    (w,) = widened.widenings((p,), [netpol("wide")], "ml-prod", GOVERNED)
    v = widened.held_back(w)
    assert (v.policy, v.mode, v.rule, v.path) == (
        "production-ml",
        Mode.ENFORCE,
        Rule.EGRESS_NETWORK_POLICY,
        "metadata.namespace",
    )
    assert v.message.startswith(
        "NetworkPolicy wide in namespace ml-prod widens egress beyond the policy's allowlist "
        "(spec.egress[0].to[0].ipBlock.cidr: 0.0.0.0/0 widens egress beyond"
    )
    assert v.message.endswith(
        "remove it (kubectl delete networkpolicy wide -n ml-prod) or narrow it, then retry"
    )


def _admission(*policies: dict[str, Any], netpols: list[dict[str, Any]]) -> Admission:
    state = PolicyState()
    for body in policies:
        assert state.upsert(body).ok
    state.set_namespace("ml-prod", GOVERNED)

    async def present(_: str) -> bool:
        return True

    return Admission(
        state,
        GpuLedger(),
        egress_present=present,
        network_policies=lambda ns: [n for n in netpols if n["metadata"]["namespace"] == ns],
    )


def _judge(admission: Admission, obj: dict[str, Any]) -> Any:
    return asyncio.run(admission.review(parse_review(review(obj))))


def test_new_workloads_are_held_back_while_a_widening_network_policy_exists() -> None:
    # The policy selects only InferenceServices, but mlgate-egress covers every pod: so does this.
    body = policy(egress=ALLOWLIST, match={"kinds": ["InferenceService"]})
    admission = _admission(body, netpols=[netpol("wide")])
    outcome = _judge(admission, deployment())
    assert not outcome.allowed
    assert (
        "egress.networkPolicy at metadata.namespace: NetworkPolicy wide in namespace ml-prod"
        in (outcome.message)
    )
    assert "kubectl delete networkpolicy wide -n ml-prod" in outcome.message
    narrowed = _admission(body, netpols=[netpol("wide", "10.0.0.0/16")])
    assert _judge(narrowed, deployment()).allowed


def test_a_warn_policy_only_warns_about_a_widening_network_policy() -> None:
    admission = _admission(policy(mode="Warn", egress=ALLOWLIST), netpols=[netpol("wide")])
    outcome = _judge(admission, deployment())
    assert outcome.allowed and len(outcome.warnings) == 1


def test_status_names_the_widening_network_policies_at_once() -> None:
    async def test(reconciler: EgressReconciler, api: FakeApi) -> None:
        reconciler.observe_any_network_policy("ml-prod", "wide", netpol("wide"))
        reconciler.observe_namespace("ml-prod", namespace("ml-prod", {}))
        await reconciler.reconcile_pending()
        assert reconciler.network_policies("ml-prod")[0]["metadata"]["name"] == "wide"
        # The namespace comes into scope: the status says so in the same pass.
        reconciler.observe_namespace("ml-prod", namespace("ml-prod", GOVERNED))
        await reconciler.reconcile_pending()
        status = api.objects[STATUS_PATH.format("production-ml")]["status"]
        [condition] = [c for c in status["conditions"] if c["type"] == CONDITION]
        assert (condition["status"], condition["reason"]) == ("False", "WidenedByNetworkPolicy")
        assert condition["message"].startswith(
            "1 NetworkPolicy(ies) widen egress beyond this policy's allowlist: ml-prod/wide"
        )
        reconciler.observe_any_network_policy("ml-prod", "wide", None)
        await reconciler.reconcile_pending()
        status = api.objects[STATUS_PATH.format("production-ml")]["status"]
        [condition] = [c for c in status["conditions"] if c["type"] == CONDITION]
        assert condition["reason"] == "Managed"

    run_reconciler(test, policy_body(egress=ALLOWLIST))


def test_the_audit_counts_widening_network_policies() -> None:
    outcome = judge(
        (compiled(egress=ALLOWLIST),),
        [netpol("wide"), netpol("narrow", "10.0.0.0/16"), deployment()],
        lambda _: Facts(now=NOW, namespace_labels=GOVERNED),
        frozenset({"kube-system"}),
    )
    assert outcome.per_policy == {"production-ml": 1}
    (finding,) = outcome.findings
    assert (finding.resource.kind, finding.resource.name) == ("NetworkPolicy", "wide")


def test_waiting_for_mlgate_egress_covers_workloads_outside_the_selector() -> None:
    state = PolicyState()
    body = policy(egress=ALLOWLIST, match={"selector": {"matchLabels": {"team": "ml"}}})
    assert state.upsert(body).ok
    state.set_namespace("ml-prod", GOVERNED)
    outcome = asyncio.run(Admission(state, GpuLedger()).review(parse_review(review(deployment()))))
    assert not outcome.allowed
    assert "mlgate-egress does not exist yet in namespace ml-prod" in outcome.message
