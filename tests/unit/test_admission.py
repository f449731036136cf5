"""The webhook's decision logic on real AdmissionReview bodies, without a network."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.state import PolicyState
from mlgate.run import LEDGER_GPU_RULES
from mlgate.webhook.admission import Admission, Config, Outcome
from mlgate.webhook.review import MalformedReview, parse_review, response
from tests.unit.factories import DIGEST, GOOD_IMAGE, deployment, policy, review

GOVERNED = {"mlgate.io/governed": "true"}
IMAGES = {"allowedRegistries": ["registry.example.com/ml/*"], "requireDigest": True}


def make_admission(*policies: dict[str, Any], labels: dict[str, str] | None = None) -> Admission:
    state = PolicyState()
    for body in policies:
        assert state.upsert(body).ok
    state.set_namespace("ml-prod", GOVERNED if labels is None else labels)
    state.set_namespace("kube-system", GOVERNED)
    return Admission(
        state, GpuLedger(), Config(own_namespace="mlgate-system", gpu_rules=LEDGER_GPU_RULES)
    )


def judge(admission: Admission, body: dict[str, Any]) -> Outcome:
    return asyncio.run(admission.review(parse_review(body)))


def test_compliant_deployment_is_allowed() -> None:
    outcome = judge(make_admission(policy(images=IMAGES)), review(deployment()))
    assert outcome.allowed
    assert outcome.decision is not None and outcome.decision.matched_policies == ("production-ml",)


def test_enforce_denies_with_every_violation_listed() -> None:
    outcome = judge(make_admission(policy(images=IMAGES)), review(deployment(image="nginx:latest")))
    assert not outcome.allowed
    assert "2 violation(s)" in outcome.message
    assert "images.registry at spec.template.spec.containers[0].image" in outcome.message
    assert "images.digest at spec.template.spec.containers[0].image" in outcome.message
    assert "AML.T0010" in outcome.message


def test_warn_allows_with_warnings_and_audit_allows_silently() -> None:
    warn = judge(
        make_admission(policy(mode="Warn", images=IMAGES)), review(deployment(image="nginx"))
    )
    assert warn.allowed and len(warn.warnings) == 2
    assert warn.warnings[0].startswith("mlgate [production-ml] images.registry")
    audit = judge(
        make_admission(policy(mode="Audit", images=IMAGES)), review(deployment(image="nginx"))
    )
    assert audit.allowed and audit.warnings == ()
    assert audit.decision is not None and len(audit.decision.violations) == 2


def test_ungoverned_namespace_is_not_judged() -> None:
    admission = make_admission(policy(images=IMAGES), labels={})
    assert judge(admission, review(deployment(image="nginx"))).allowed


@pytest.mark.parametrize("namespace", ["kube-system", "mlgate-system"])
def test_system_namespaces_are_never_judged(namespace: str) -> None:
    admission = make_admission(policy(images=IMAGES))
    outcome = judge(admission, review(deployment(image="nginx", namespace=namespace)))
    assert outcome.allowed and outcome.route == "exempt"


def test_scale_down_of_noncompliant_deployment_is_allowed_but_scale_up_is_judged() -> None:
    admission = make_admission(policy(images=IMAGES))
    old = deployment(image="nginx", replicas=5)
    down = judge(admission, review(deployment(image="nginx", replicas=1), "UPDATE", old))
    assert down.allowed and down.route == "benign-update"
    up = judge(admission, review(deployment(image="nginx", replicas=9), "UPDATE", old))
    assert not up.allowed


def test_scale_down_that_also_changes_the_image_is_judged() -> None:
    admission = make_admission(policy(images=IMAGES))
    old = deployment(replicas=5)
    sneaky = judge(admission, review(deployment(image="nginx", replicas=1), "UPDATE", old))
    assert not sneaky.allowed


def test_metadata_only_update_is_allowed_unless_it_changes_the_model_annotation() -> None:
    admission = make_admission(policy(images=IMAGES, models={"requireApproved": True}))
    old = deployment(image="nginx", annotations={"mlgate.io/model": "fraud@3"})
    relabel = copy.deepcopy(old)
    relabel["metadata"]["labels"] = {"team": "risk"}
    assert judge(admission, review(relabel, "UPDATE", old)).route == "benign-update"
    swap = copy.deepcopy(old)
    swap["metadata"]["annotations"]["mlgate.io/model"] = "stolen@1"
    outcome = judge(admission, review(swap, "UPDATE", old))
    assert not outcome.allowed and "models.approval" in outcome.message


def test_status_write_that_changes_the_model_annotation_is_judged() -> None:
    """A Pod's /status takes metadata changes, so it cannot launder the model annotation."""
    admission = make_admission(policy(images=IMAGES, models={"requireApproved": True}))
    old = deployment(image="nginx", annotations={"mlgate.io/model": "fraud@3"})
    status = copy.deepcopy(old)
    status["status"] = {"readyReplicas": 1}
    plain = judge(admission, review(status, "UPDATE", old, sub_resource="status"))
    assert plain.allowed and plain.route == "benign-update"
    swap = copy.deepcopy(status)
    swap["metadata"]["annotations"]["mlgate.io/model"] = "stolen@1"
    outcome = judge(admission, review(swap, "UPDATE", old, sub_resource="status"))
    assert not outcome.allowed and "models.approval" in outcome.message


def test_image_update_on_running_pod_is_judged() -> None:
    admission = make_admission(policy(images=IMAGES))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml-prod"},
        "spec": {"containers": [{"name": "c", "image": GOOD_IMAGE}]},
    }
    changed = copy.deepcopy(pod)
    changed["spec"]["containers"][0]["image"] = "docker.io/evil/miner:1"
    outcome = judge(admission, review(changed, "UPDATE", pod, resource="pods"))
    assert not outcome.allowed


def test_ephemeral_container_is_judged() -> None:
    admission = make_admission(policy(images=IMAGES))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml-prod"},
        "spec": {"containers": [{"name": "c", "image": GOOD_IMAGE}]},
    }
    debug = copy.deepcopy(pod)
    debug["spec"]["ephemeralContainers"] = [{"name": "dbg", "image": "busybox"}]
    outcome = judge(
        admission, review(debug, "UPDATE", pod, resource="pods", sub_resource="ephemeralcontainers")
    )
    assert not outcome.allowed
    assert "spec.ephemeralContainers[0].image" in outcome.message


def test_namespace_relabel_out_of_scope_is_denied_for_users_but_not_admins() -> None:
    admission = make_admission(policy(images=IMAGES))
    old = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "ml-prod", "labels": GOVERNED},
    }
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {}
    user = judge(admission, review(new, "UPDATE", old, resource="namespaces"))
    assert not user.allowed and "production-ml" in user.message
    admin = judge(
        admission, review(new, "UPDATE", old, resource="namespaces", groups=("system:masters",))
    )
    assert admin.allowed
    into_scope = judge(admission, review(old, "UPDATE", new, resource="namespaces"))
    assert into_scope.allowed


@pytest.mark.parametrize("sub_resource", ["status", "finalize"])
def test_namespace_subresources_cannot_relabel_out_of_scope(sub_resource: str) -> None:
    admission = make_admission(policy(images=IMAGES))
    old = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "ml-prod", "labels": GOVERNED},
    }
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {}
    outcome = judge(
        admission, review(new, "UPDATE", old, resource="namespaces", sub_resource=sub_resource)
    )
    assert not outcome.allowed and outcome.route == "scope-guard"


def test_concurrent_gpu_admissions_cannot_both_fit_the_quota() -> None:
    admission = make_admission(policy(gpu={"namespaceQuota": 8}))

    async def both() -> list[Outcome]:
        first = admission.review(parse_review(review(deployment("a", replicas=3, gpus=2))))
        second = admission.review(parse_review(review(deployment("b", replicas=3, gpus=2))))
        return list(await asyncio.gather(first, second))

    outcomes = asyncio.run(both())
    assert sorted(o.allowed for o in outcomes) == [False, True]
    denied = next(o for o in outcomes if not o.allowed)
    assert "gpu.namespaceQuota" in denied.message and "6 in use + 6 requested" in denied.message


def test_dry_run_reserves_nothing() -> None:
    admission = make_admission(policy(gpu={"namespaceQuota": 8}))
    assert judge(admission, review(deployment("a", replicas=3, gpus=2), dry_run=True)).allowed
    assert judge(admission, review(deployment("b", replicas=3, gpus=2))).allowed


def test_resubmitting_the_same_workload_does_not_count_it_twice() -> None:
    admission = make_admission(policy(gpu={"namespaceQuota": 8}))
    assert judge(admission, review(deployment("a", replicas=3, gpus=2))).allowed
    bigger = deployment("a", replicas=4, gpus=2)
    assert judge(admission, review(bigger, "UPDATE", deployment("a", replicas=3, gpus=2))).allowed


def test_signature_rules_fail_closed_without_verification() -> None:
    signed = {
        **IMAGES,
        "signatures": [
            {
                "images": ["registry.example.com/ml/*"],
                "keys": [
                    {
                        "secretRef": {
                            "namespace": "mlgate-system",
                            "name": "cosign",
                            "key": "cosign.pub",
                        }
                    }
                ],
            }
        ],
    }
    outcome = judge(make_admission(policy(images=signed)), review(deployment()))
    assert not outcome.allowed and "images.signature" in outcome.message


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x"}},
    ],
)
def test_malformed_reviews_are_rejected_with_a_reason(body: Any) -> None:
    with pytest.raises(MalformedReview):
        parse_review(body)


def test_response_shape() -> None:
    denied = response("u1", False, "no", warnings=("w",))
    assert denied == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": "u1",
            "allowed": False,
            "status": {"code": 403, "reason": "Forbidden", "message": "no"},
            "warnings": ["w"],
        },
    }
    assert "x" * 5000 not in response("u", False, "x" * 5000)["response"]["status"]["message"]
    assert DIGEST  # the factories' digest is a well-formed sha256


def scale_review(name: str, old: int, new: int) -> dict[str, Any]:
    def scale(replicas: int) -> dict[str, Any]:
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name, "namespace": "ml-prod"},
            "spec": {"replicas": replicas},
        }

    body = review(scale(new), "UPDATE", scale(old), resource="deployments", sub_resource="scale")
    body["request"]["resource"] = {"group": "apps", "version": "v1", "resource": "deployments"}
    return body


def test_scale_subresource_scale_up_is_judged_against_the_parent() -> None:
    admission = make_admission(policy(gpu={"maxPerWorkload": 8}))
    stored = deployment("trainer", replicas=2, gpus=4)
    seen: list[tuple[str, ...]] = []

    async def lookup(*key: str) -> dict[str, Any] | None:
        seen.append(key)
        return stored

    admission.object_lookup = lookup
    up = judge(admission, scale_review("trainer", 2, 10))
    assert not up.allowed and "gpu.maxPerWorkload" in up.message and "40 GPUs" in up.message
    assert seen == [("apps", "v1", "deployments", "ml-prod", "trainer")]
    down = judge(admission, scale_review("trainer", 2, 1))
    assert down.allowed and down.route == "benign-update"
    assert len(seen) == 1  # a scale-down needs no lookup


def test_scale_up_of_a_missing_parent_fails_closed() -> None:
    admission = make_admission(policy(gpu={"maxPerWorkload": 8}))
    outcome = judge(admission, scale_review("ghost", 1, 3))
    assert not outcome.allowed and "cannot read deployments/ghost" in outcome.message


def test_watched_annotations_follow_the_policies_in_force() -> None:
    """Computed once per set of policies: a policy change is seen at the next request."""
    state = PolicyState()
    admission = Admission(state, GpuLedger())
    assert admission.watched_annotations() == frozenset()
    watching = policy(name="watching", models={"sources": {"annotations": ["example.com/model"]}})
    assert state.upsert(watching).ok
    assert "example.com/model" in admission.watched_annotations()
    assert admission.watched_annotations() is admission.watched_annotations()
    state.remove(watching)
    assert admission.watched_annotations() == frozenset()
