"""Egress side doors: every way out of the pod's network namespace, and who they apply to."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mlgate.engine import side_doors
from mlgate.engine.decisions import Rule
from mlgate.engine.evaluate import evaluate
from mlgate.engine.policy import CompiledPolicy, Facts
from mlgate.engine.workloads import WorkloadView, view
from tests.unit.test_evaluate import policy

NOW = datetime(2026, 3, 1, tzinfo=UTC)
POD = "spec.template.spec"
MANAGED = {"networkPolicy": {"allowedCIDRs": ["10.0.0.0/8"]}}


def deployment(
    pod: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    kind: str = "Deployment",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"name": "main", "image": "registry.example.com/ml/x:1", **(container or {})}
        ],
        **(pod or {}),
    }
    return {
        "apiVersion": "apps/v1" if kind != "Job" else "batch/v1",
        "kind": kind,
        "metadata": {"name": "w", "namespace": "team-a", "labels": labels or {}},
        "spec": {"template": {"metadata": {"annotations": annotations or {}}, "spec": spec}},
    }


def found(obj: dict[str, Any], *policies: CompiledPolicy) -> set[tuple[str, str]]:
    decision = evaluate(policies or (policy(egress={}),), obj, Facts(now=NOW))
    return {(v.rule, v.path) for v in decision.violations}


@pytest.mark.parametrize(
    ("pod", "rule", "path"),
    [
        ({"hostNetwork": True}, Rule.EGRESS_HOST_NETWORK, f"{POD}.hostNetwork"),
        ({"hostPID": True}, Rule.EGRESS_HOST_PID, f"{POD}.hostPID"),
        ({"hostIPC": True}, Rule.EGRESS_HOST_IPC, f"{POD}.hostIPC"),
        (
            {"securityContext": {"windowsOptions": {"hostProcess": True}}},
            Rule.EGRESS_PRIVILEGED,
            f"{POD}.securityContext.windowsOptions.hostProcess",
        ),
    ],
)
def test_host_namespaces_are_denied(pod: dict[str, Any], rule: Rule, path: str) -> None:
    assert found(deployment(pod)) == {(rule, path)}


def test_privileged_containers_are_denied_in_every_container_list() -> None:
    privileged = {"securityContext": {"privileged": True}}
    obj = deployment(container=privileged)
    obj["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "init", "image": "x:1", **privileged},
        {"name": "side", "image": "x:1", "restartPolicy": "Always", **privileged},
    ]
    assert found(obj) == {
        (Rule.EGRESS_PRIVILEGED, f"{POD}.containers[0].securityContext.privileged"),
        (Rule.EGRESS_PRIVILEGED, f"{POD}.initContainers[0].securityContext.privileged"),
        (Rule.EGRESS_PRIVILEGED, f"{POD}.initContainers[1].securityContext.privileged"),
    }


@pytest.mark.parametrize(
    "capability", ["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "ALL", "cap_net_admin", "net_raw"]
)
def test_network_capabilities_are_denied_however_spelled(capability: str) -> None:
    context = {"securityContext": {"capabilities": {"add": ["CHOWN", capability]}}}
    assert found(deployment(container=context)) == {
        (Rule.EGRESS_CAPABILITIES, f"{POD}.containers[0].securityContext.capabilities.add[1]")
    }


def test_other_capabilities_and_dropping_pass() -> None:
    context = {"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE"], "drop": ["ALL"]}}
    assert found(deployment(container={"securityContext": context})) == set()


@pytest.mark.parametrize("key", ["k8s.v1.cni.cncf.io/networks", "v1.multus-cni.io/default-network"])
def test_multus_networks_are_denied(key: str) -> None:
    obj = deployment(annotations={key: "macvlan-conf"})
    assert found(obj) == {
        (Rule.EGRESS_SECONDARY_NETWORK, f'spec.template.metadata.annotations["{key}"]')
    }


def test_multus_annotation_on_a_bare_pod() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "team-a",
            "annotations": {"k8s.v1.cni.cncf.io/networks": '[{"name": "dmz"}]'},
        },
        "spec": {"containers": [{"name": "main", "image": "x:1"}]},
    }
    assert found(pod) == {
        (Rule.EGRESS_SECONDARY_NETWORK, 'metadata.annotations["k8s.v1.cni.cncf.io/networks"]')
    }


def test_every_side_door_has_its_own_allow_switch() -> None:
    obj = deployment(
        {"hostNetwork": True, "hostPID": True, "hostIPC": True},
        {"securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}}},
        annotations={"k8s.v1.cni.cncf.io/networks": "dmz"},
    )
    assert {r for r, _ in found(obj)} == {d.rule for d in side_doors.SIDE_DOORS}
    switches = {d.setting: True for d in side_doors.SIDE_DOORS}
    assert found(obj, policy(egress=switches)) == set()
    for door in side_doors.SIDE_DOORS:
        others = {k: v for k, v in switches.items() if k != door.setting}
        assert {r for r, _ in found(obj, policy(egress=others))} == {door.rule}


def test_side_door_message_says_how_to_allow_it() -> None:
    rules, workload = policy(egress={}).egress, view(deployment({"hostPID": True}))
    assert rules is not None and isinstance(workload, WorkloadView)
    (finding,) = side_doors.check(rules, workload)
    assert finding.message == (
        "hostPID: true shares the node's processes, whose network namespaces the pod can then "
        "enter; remove it (or a policy may set egress.allowHostPID: true)"
    )


# --- scope: exactly the pods mlgate-egress covers --------------------------------------------


def test_managed_egress_covers_workloads_outside_the_policys_selector_and_kinds() -> None:
    # mlgate-egress selects every pod of the namespace, so the side doors must be shut for
    # every pod there, not only for the workloads the policy's selector and kinds pick.
    p = policy(
        match={"kinds": ["InferenceService"], "selector": {"matchLabels": {"team": "ml"}}},
        egress=MANAGED,
    )
    obj = deployment({"hostNetwork": True}, labels={"team": "other"})
    decision = evaluate((p,), obj, Facts(now=NOW))
    assert decision.allowed is False
    assert {(v.policy, v.rule) for v in decision.violations} == {
        ("production-ml", Rule.EGRESS_HOST_NETWORK)
    }
    assert decision.matched_policies == ("production-ml",)


def test_only_side_doors_apply_outside_the_selector() -> None:
    p = policy(
        match={"selector": {"matchLabels": {"team": "ml"}}},
        egress=MANAGED,
        images={"allowedRegistries": []},
    )
    assert found(deployment({"hostPID": True}), p) == {(Rule.EGRESS_HOST_PID, f"{POD}.hostPID")}


def test_unmanaged_allowlist_keeps_the_selector() -> None:
    # Without a managing policy there is no mlgate-egress: the policy's own selector decides.
    p = policy(
        match={"selector": {"matchLabels": {"team": "ml"}}},
        egress={"networkPolicy": {"manage": False}},
    )
    assert found(deployment({"hostNetwork": True}), p) == set()
    assert found(deployment({"hostNetwork": True}, labels={"team": "ml"}), p) == {
        (Rule.EGRESS_HOST_NETWORK, f"{POD}.hostNetwork")
    }


def test_managed_egress_of_another_namespace_does_not_reach_here() -> None:
    p = policy(match={"namespaces": ["team-b"]}, egress=MANAGED)
    assert found(deployment({"hostNetwork": True}), p) == set()
