"""The webhook's egress routes: user NetworkPolicies, the guard on mlgate-egress, workloads
waiting for it, and the webhook configuration that sends these requests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.state import PolicyState
from mlgate.webhook.admission import Admission, Config, Outcome
from mlgate.webhook.config import NETWORK_POLICIES_WEBHOOK, webhook_configuration
from mlgate.webhook.review import parse_review
from tests.unit.factories import deployment, policy, review

GOVERNED = {"mlgate.io/governed": "true"}
MLGATE = "system:serviceaccount:mlgate-system:mlgate"
ALLOWLIST = {
    "networkPolicy": {"manage": True, "allowedCIDRs": ["10.0.0.0/8"], "allowedPorts": [443]}
}


def make_admission(
    *policies: dict[str, Any], present: bool = True, labels: dict[str, str] | None = None
) -> tuple[Admission, list[str]]:
    state = PolicyState()
    for body in policies:
        assert state.upsert(body).ok
    state.set_namespace("ml-prod", GOVERNED if labels is None else labels)
    asked: list[str] = []

    async def egress_present(namespace: str) -> bool:
        asked.append(namespace)
        return present

    admission = Admission(
        state,
        GpuLedger(),
        Config(egress_managers=frozenset({MLGATE})),
        egress_present=egress_present,
    )
    return admission, asked


def judge(
    admission: Admission,
    body: dict[str, Any],
    username: str = "alice",
) -> Outcome:
    body["request"]["userInfo"]["username"] = username
    return asyncio.run(admission.review(parse_review(body)))


def netpol(
    name: str = "user",
    cidr: str = "0.0.0.0/0",
    labels: dict[str, str] | None = None,
    namespace: str = "ml-prod",
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": cidr}}], "ports": [{"port": 443}]}],
        },
    }


def np_review(
    obj: dict[str, Any] | None, operation: str = "CREATE", old: dict[str, Any] | None = None
) -> dict[str, Any]:
    return review(obj, operation, old, resource="networkpolicies")


MANAGED = {"app.kubernetes.io/managed-by": "mlgate"}


def test_widening_user_network_policy_is_denied_naming_the_rule() -> None:
    admission, _ = make_admission(policy(egress=ALLOWLIST))
    outcome = judge(admission, np_review(netpol()))
    assert not outcome.allowed
    assert "mlgate denied NetworkPolicy ml-prod/user: 1 violation(s)" in outcome.message
    assert (
        "[production-ml] egress.networkPolicy at spec.egress[0].to[0].ipBlock.cidr: 0.0.0.0/0 "
        "widens egress beyond allowedCIDRs [10.0.0.0/8]" in outcome.message
    )


def test_network_policy_within_the_allowlist_is_allowed() -> None:
    admission, _ = make_admission(policy(egress=ALLOWLIST))
    assert judge(admission, np_review(netpol(cidr="10.2.0.0/16"))).allowed


def test_widening_edit_is_denied_but_metadata_edits_are_not() -> None:
    admission, _ = make_admission(policy(egress=ALLOWLIST))
    old = netpol(cidr="10.2.0.0/16")
    assert not judge(admission, np_review(netpol(), "UPDATE", old)).allowed
    grandfathered = netpol()
    relabelled = netpol(labels={"team": "risk"})
    outcome = judge(admission, np_review(relabelled, "UPDATE", grandfathered))
    assert outcome.allowed and outcome.route == "benign-update"


def test_network_policies_outside_scope_or_in_exempt_namespaces_pass() -> None:
    admission, _ = make_admission(policy(egress=ALLOWLIST), labels={})
    assert judge(admission, np_review(netpol())).allowed
    governed, _ = make_admission(policy(egress=ALLOWLIST))
    for namespace in ("kube-system", "mlgate-system"):
        outcome = judge(governed, np_review(netpol(namespace=namespace)))
        assert outcome.allowed and outcome.route == "exempt"


def test_deleting_a_user_network_policy_is_always_allowed() -> None:
    admission, _ = make_admission(policy(egress=ALLOWLIST))
    outcome = judge(admission, np_review(None, "DELETE", netpol()))
    assert outcome.allowed and outcome.route == "not-judged-operation"


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE"])
def test_only_mlgate_may_edit_or_delete_mlgate_egress(operation: str) -> None:
    admission, _ = make_admission(policy(egress=ALLOWLIST))
    old = netpol("mlgate-egress", cidr="10.0.0.0/8", labels=MANAGED)
    new = None if operation == "DELETE" else netpol("mlgate-egress", labels=MANAGED)
    body = np_review(new, operation, old)
    denied = judge(admission, body)
    assert not denied.allowed and denied.route == "egress-guard"
    verb = "edit" if operation == "UPDATE" else "delete"
    assert (
        f"NetworkPolicy mlgate-egress in ml-prod is managed by mlgate and only mlgate may {verb}"
        in denied.message
    )
    assert "spec.egress.networkPolicy" in denied.message
    for manager in (
        MLGATE,
        "system:serviceaccount:kube-system:namespace-controller",
        "system:serviceaccount:kube-system:generic-garbage-collector",
    ):
        allowed = judge(admission, np_review(new, operation, old), username=manager)
        assert allowed.allowed and allowed.route == "egress-guard", manager


def test_users_cannot_pre_empt_mlgate_egress_in_a_managed_namespace() -> None:
    admission, _ = make_admission(policy(egress=ALLOWLIST))
    outcome = judge(admission, np_review(netpol("mlgate-egress", cidr="10.0.0.0/8")))
    assert not outcome.allowed and outcome.route == "egress-guard"


def test_a_collection_delete_passes_and_its_items_are_judged_one_by_one() -> None:
    admission, _ = make_admission(policy(egress=ALLOWLIST))
    collection = np_review(None, "DELETE", None)
    collection["request"]["namespace"] = "ml-prod"
    assert judge(admission, collection).route == "collection-delete"
    assert judge(admission, collection).allowed
    item = judge(admission, np_review(None, "DELETE", netpol("mlgate-egress", labels=MANAGED)))
    assert not item.allowed and item.route == "egress-guard"


def test_mlgate_egress_elsewhere_is_an_ordinary_name() -> None:
    # Outside every managing policy's scope and without mlgate's label, the name is free.
    admission, _ = make_admission(policy(egress=ALLOWLIST), labels={})
    outcome = judge(admission, np_review(None, "DELETE", netpol("mlgate-egress")))
    assert outcome.allowed and outcome.route == "not-judged-operation"


def test_workloads_wait_for_the_managed_network_policy() -> None:
    admission, asked = make_admission(policy(egress=ALLOWLIST), present=False)
    outcome = judge(admission, review(deployment()))
    assert not outcome.allowed and asked == ["ml-prod"]
    assert "egress.networkPolicy at metadata.namespace" in outcome.message
    assert "mlgate-egress does not exist yet in namespace ml-prod" in outcome.message
    assert "retry shortly" in outcome.message
    ready, _ = make_admission(policy(egress=ALLOWLIST), present=True)
    assert judge(ready, review(deployment())).allowed


def test_only_managing_policies_make_workloads_wait() -> None:
    unmanaged = {"networkPolicy": {"manage": False, "allowedCIDRs": ["10.0.0.0/8"]}}
    admission, asked = make_admission(policy(egress=unmanaged), present=False)
    assert judge(admission, review(deployment())).allowed and asked == []
    outside, asked = make_admission(policy(egress=ALLOWLIST), present=False, labels={})
    assert judge(outside, review(deployment())).allowed and asked == []


def test_a_warn_policy_only_warns_while_the_network_policy_is_missing() -> None:
    admission, _ = make_admission(policy(mode="Warn", egress=ALLOWLIST), present=False)
    outcome = judge(admission, review(deployment()))
    assert outcome.allowed
    assert [w.split(" at ")[0] for w in outcome.warnings] == [
        "mlgate [production-ml] egress.networkPolicy"
    ]


def test_without_a_reconciler_workloads_that_need_egress_limits_wait() -> None:
    state = PolicyState()
    assert state.upsert(policy(egress=ALLOWLIST)).ok
    state.set_namespace("ml-prod", GOVERNED)
    outcome = asyncio.run(Admission(state, GpuLedger()).review(parse_review(review(deployment()))))
    assert not outcome.allowed


def test_webhook_configuration_routes_network_policies() -> None:
    body = webhook_configuration("mlgate", {"url": "https://x/validate"}, "mlgate-system")
    [hook] = [w for w in body["webhooks"] if w["name"] == NETWORK_POLICIES_WEBHOOK]
    assert hook["rules"] == [
        {
            "apiGroups": ["networking.k8s.io"],
            "apiVersions": ["v1"],
            "resources": ["networkpolicies"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "scope": "Namespaced",
        }
    ]
    [condition] = hook["matchConditions"]
    # Evaluated against every request shape in tests/unit/test_match_conditions.py.
    assert condition["expression"].startswith("request.operation != 'DELETE' || ")
    assert "oldObject.metadata.name == 'mlgate-egress'" in condition["expression"]
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kube-system",
        "mlgate-system",
    ]
