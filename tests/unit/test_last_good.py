"""Policies cannot fail open: the last good version survives restarts (status.lastGood), and a
policy with no good version denies what it governs; the webhook refuses what will not compile."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from mlgate.controller.egress import EgressReconciler
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.handlers import register, status_patch
from mlgate.controller.state import PolicyState
from mlgate.engine.evaluate import evaluate
from mlgate.engine.policy import Facts
from mlgate.webhook.admission import Admission
from mlgate.webhook.review import parse_review
from tests.unit.factories import GOOD_IMAGE, deployment, policy, review

NOW = datetime(2026, 1, 1, tzinfo=UTC)
GOVERNED = {"mlgate.io/governed": "true"}
REGISTRY = {"allowedRegistries": ["registry.example.com/ml/*"]}
# The schema lets a glob through; the compiler refuses an image pattern with a tag.
UNCOMPILABLE = {"allowedRegistries": ["ghcr.io/acme/x:latest"]}


def bad(body: dict[str, Any], generation: int = 2) -> dict[str, Any]:
    broken = copy.deepcopy(body)
    broken["metadata"]["generation"] = generation
    broken["spec"]["images"] = UNCOMPILABLE
    return broken


def verdict(state: PolicyState, image: str, namespace: str = "ml-prod") -> Any:
    facts = Facts(now=NOW, namespace_labels=GOVERNED)
    return evaluate(state.snapshot().policies, deployment(image=image, namespace=namespace), facts)


def restarted_with(body: dict[str, Any]) -> tuple[PolicyState, Any]:
    """A fresh process (nothing in memory) reading `body` from the cluster."""
    state = PolicyState()
    return state, state.upsert(body)


def test_a_compiled_spec_is_persisted_and_enforced_after_a_restart() -> None:
    state = PolicyState()
    good = policy(images=REGISTRY)
    first = status_patch({}, state.upsert(good), NOW)
    assert first is not None and first["lastGood"]["generation"] == 1
    assert status_patch(first, state.upsert(good), NOW) is None  # no write loop

    # The invalid spec got in while mlgate was down; the status still holds generation 1.
    stored = {**bad(good), "status": first}
    state, result = restarted_with(stored)
    assert not result.ok and result.active_generation == 1
    assert "generation 1 (status.lastGood) stays in force" in result.message
    assert not verdict(state, "docker.io/evil/miner:1").allowed
    assert verdict(state, GOOD_IMAGE).allowed
    # Failing to compile never overwrites what was persisted.
    change = status_patch(first, result, NOW)
    assert change is not None and "lastGood" not in change


def test_a_policy_with_no_good_version_denies_in_its_scope_naming_itself() -> None:
    state, result = restarted_with(bad(policy("never-good", images=REGISTRY), generation=1))
    assert not result.ok and "denies every workload it governs" in result.message
    denied = verdict(state, GOOD_IMAGE)
    assert not denied.allowed
    (violation,) = denied.violations
    assert violation.rule == "policy.invalid" and violation.policy == "never-good"
    assert "policy never-good has no valid version in force" in violation.message
    assert "spec.images.allowedRegistries[0]" in violation.message
    # Its scope is its own (valid) match: other namespaces are not affected.
    facts = Facts(now=NOW, namespace_labels={})
    elsewhere = deployment(namespace="elsewhere")
    assert evaluate(state.snapshot().policies, elsewhere, facts).allowed


@pytest.mark.parametrize(
    ("kind", "governed", "free"),
    [("ClusterMLPolicy", ["ml-prod", "anything"], []), ("MLPolicy", ["team-a"], ["team-b"])],
)
def test_an_invalid_match_fails_closed(kind: str, governed: list[str], free: list[str]) -> None:
    body = policy("lost-scope", images=REGISTRY)
    body["kind"] = kind
    body["metadata"]["namespace"] = "team-a" if kind == "MLPolicy" else None
    body["spec"]["match"] = {
        "namespaceSelector": {"matchExpressions": [{"key": "x", "operator": "Nope"}]}
    }
    state, result = restarted_with(body)
    assert not result.ok
    facts = Facts(now=NOW, namespace_labels={})
    policies = state.snapshot().policies
    for ns in governed:
        assert not evaluate(policies, deployment(namespace=ns), facts).allowed, ns
    for ns in free:
        assert evaluate(policies, deployment(namespace=ns), facts).allowed, ns


def test_a_good_spec_replaces_the_stand_in() -> None:
    state, _ = restarted_with(bad(policy(images=REGISTRY), generation=1))
    fixed = policy(images=REGISTRY)
    fixed["metadata"]["generation"] = 2
    assert state.upsert(fixed).ok
    assert verdict(state, GOOD_IMAGE).allowed
    # A later invalid edit keeps the good one in memory (not the stand-in).
    again = state.upsert(bad(fixed, generation=3))
    assert "generation 2 stays in force" in again.message


def judge(body: dict[str, Any]) -> Any:
    admission = Admission(PolicyState(), GpuLedger())
    return asyncio.run(admission.review(parse_review(body)))


def mlgate_review(
    obj: dict[str, Any], operation: str = "CREATE", old: Any = None
) -> dict[str, Any]:
    body = review(obj, operation, old, resource="clustermlpolicies")
    body["request"]["resource"]["group"] = "mlgate.io"
    return body


def test_apply_of_a_policy_that_would_not_compile_is_refused_naming_the_field() -> None:
    outcome = judge(mlgate_review(bad(policy())))
    assert not outcome.allowed and outcome.route == "policy-invalid"
    assert outcome.message.startswith("mlgate denied ClusterMLPolicy production-ml: ")
    assert "spec.images.allowedRegistries[0]" in outcome.message
    assert judge(mlgate_review(policy(images=REGISTRY))).allowed
    approval = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ApprovedModel",
        "metadata": {"name": "m"},
        "spec": {"model": "m", "version": "1", "uris": ["ftp://nope"]},
    }
    refused = judge(mlgate_review(approval))
    assert not refused.allowed and "spec.uris[0]" in refused.message


def test_metadata_edits_of_a_grandfathered_invalid_policy_pass() -> None:
    old = bad(policy())
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"team": "sec"}
    assert judge(mlgate_review(relabelled, "UPDATE", old)).allowed


def test_operator_handlers_never_retry_over_one_object() -> None:
    """Only event handlers: kopf runs them once per event and logs an error instead of
    retrying. Change handlers (on.create/update/...) retry with backoff, forever by default."""
    registry = kopf.OperatorRegistry()
    egress = EgressReconciler(None, PolicyState())  # type: ignore[arg-type]
    register(registry, PolicyState(), egress=egress)
    assert registry._watching.get_all_handlers()
    for kind in (registry._changing, registry._spawning, registry._indexing):
        assert not kind.get_all_handlers()
    for handler in registry._watching.get_all_handlers():
        assert handler.errors in (None, kopf.ErrorsMode.IGNORED), handler.id


def test_a_bad_body_never_raises_from_the_state() -> None:
    state = PolicyState()
    for body in ({}, {"kind": "ClusterMLPolicy"}, {"kind": "MLPolicy", "metadata": [], "spec": 3}):
        assert not state.upsert(body).ok


def test_only_mlgate_writes_status_last_good() -> None:
    admission = Admission(PolicyState(), GpuLedger())  # mlgate is the default ServiceAccount
    old = {**policy(), "status": {"lastGood": {"generation": 1, "spec": "{}"}}}
    forged = copy.deepcopy(old)
    forged["status"]["lastGood"]["spec"] = '{"mode":"Audit","match":{}}'

    def write(new: dict[str, Any], user: str) -> Any:
        body = mlgate_review(new, "UPDATE", old)
        body["request"]["subResource"] = "status"
        body["request"]["userInfo"]["username"] = user
        return asyncio.run(admission.review(parse_review(body)))

    denied = write(forged, "mallory")
    assert not denied.allowed and "only mlgate records" in denied.message
    assert write(forged, "system:serviceaccount:mlgate-system:mlgate").allowed
    conditions = copy.deepcopy(old)
    conditions["status"]["conditions"] = []
    assert write(conditions, "mallory").allowed
