"""Egress limits behind the real kube-apiserver: the managed NetworkPolicy mlgate-egress appears
when a namespace enters scope, comes back after deletion or a widening edit, goes when the
namespace leaves scope; widening user NetworkPolicies are denied; workloads wait for it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from mlgate.devcluster import Cluster
from mlgate.devrun import MlgateProcess
from tests.e2e.test_admission import running_mlgate

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_CONFIG = "mlgate-egress-e2e"
GOOD = "registry.example.com/ml/serve@sha256:" + "a" * 64
T = TypeVar("T")


@pytest.fixture(scope="module")
def mlgate(
    control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlgateProcess]:
    yield from running_mlgate(control_plane, tmp_path_factory, WEBHOOK_CONFIG)


def apply(cp: Cluster, *docs: dict[str, Any], kubeconfig: Path | None = None) -> Any:
    return cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), kubeconfig=kubeconfig)


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def get_json(cp: Cluster, *args: str) -> dict[str, Any] | None:
    out = cp.kubectl("get", *args, "-o", "json")
    return json.loads(out.stdout) if out.returncode == 0 else None


def managed(cp: Cluster, namespace: str) -> dict[str, Any] | None:
    return get_json(cp, "networkpolicy", "mlgate-egress", "-n", namespace)


def _matching(value: T | None, until: Callable[[T], bool]) -> T | None:
    return value if value is not None and until(value) else None


def wait_managed(
    cp: Cluster,
    namespace: str,
    what: str,
    until: Callable[[dict[str, Any]], bool] = lambda _: True,
    timeout: float = 30.0,
) -> dict[str, Any]:
    return eventually(lambda: _matching(managed(cp, namespace), until), what, timeout)


def governed_policy(name: str, label: str, **network_policy: Any) -> dict[str, Any]:
    """Scoped by a label only this test's namespace carries: one test, one namespace."""
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": name},
        "spec": {
            "mode": "Enforce",
            "match": {"namespaceSelector": {"matchLabels": {label: "governed"}}},
            "egress": {"networkPolicy": network_policy},
        },
    }


ALLOWLIST = {"allowedCIDRs": ["10.0.0.0/8", "2001:db8::/32"], "allowedPorts": [443]}
DNS_RULE = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


def cidr_rule(*cidrs: str, port: int = 443) -> dict[str, Any]:
    return {
        "to": [{"ipBlock": {"cidr": c}} for c in cidrs],
        "ports": [{"protocol": "TCP", "port": port}],
    }


@pytest.fixture
def scope(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str
) -> Iterator[tuple[str, str]]:
    """(policy name, scope label) of a managing policy that no namespace is in yet."""
    name = f"egress-{uuid.uuid4().hex[:8]}"
    label = f"e2e.mlgate.io/{name}"
    apply(control_plane, governed_policy(name, label, **ALLOWLIST)).check_returncode()
    yield name, label
    control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def network_policy(name: str, namespace: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": list(rules)},
    }


def user_with_network_policy_rights(cp: Cluster, namespace: str, user: str) -> Path:
    rbac = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "netpol-editor", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": ["get", "list", "create", "update", "patch", "delete"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "netpol-editor", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "netpol-editor",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    ]
    apply(cp, *rbac).check_returncode()
    return cp.user_kubeconfig(user, ["ml-team"])


def egress_condition(cp: Cluster, policy: str) -> dict[str, Any] | None:
    body = get_json(cp, "clustermlpolicy", policy) or {}
    conditions = body.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "EgressNetworkPolicy"), None)


def wait_condition(
    cp: Cluster, policy: str, what: str, until: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    return eventually(lambda: _matching(egress_condition(cp, policy), until), what)


def test_managed_network_policy_lifecycle(
    control_plane: Cluster, scope: tuple[str, str], namespace: str
) -> None:
    cp, (policy, label) = control_plane, scope
    assert managed(cp, namespace) is None
    cp.kubectl("label", "namespace", namespace, f"{label}=governed", check=True)

    # It appears, with exactly the allowed egress, owned by the policy and labelled as mlgate's.
    first = wait_managed(cp, namespace, "mlgate-egress to appear")
    assert first["spec"] == {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [DNS_RULE, cidr_rule("10.0.0.0/8", "2001:db8::/32")],
    }
    meta = first["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "mlgate"
    assert meta["annotations"]["mlgate.io/egress-policies"] == policy
    assert [(r["kind"], r["name"]) for r in meta["ownerReferences"]] == [
        ("ClusterMLPolicy", policy)
    ]
    condition = wait_condition(
        cp, policy, "the policy's EgressNetworkPolicy condition", lambda c: c["status"] == "True"
    )
    assert condition["message"] == f"mlgate-egress kept in 1 namespace(s): {namespace}"

    # Deleted: it comes back (a new object).
    cp.kubectl("-n", namespace, "delete", "networkpolicy", "mlgate-egress", check=True)
    restored = wait_managed(
        cp,
        namespace,
        "mlgate-egress to be restored after deletion",
        lambda np: np["metadata"]["uid"] != meta["uid"],
    )
    assert restored["spec"] == first["spec"]

    # Widened by hand: put back.
    widen = {
        "spec": {"egress": [*first["spec"]["egress"], {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}
    }
    cp.kubectl(
        "-n", namespace, "patch", "networkpolicy", "mlgate-egress", "--type=merge",
        "-p", json.dumps(widen), check=True,
    )  # fmt: skip
    wait_managed(
        cp, namespace, "the widening edit to be reverted", lambda np: np["spec"] == first["spec"]
    )

    # The policy changes: the NetworkPolicy follows; a second, narrower policy intersects.
    other = f"{policy}-narrow"
    narrower = governed_policy(
        other, label, manage=False, allowedCIDRs=["10.1.0.0/16", "2001:db8:1::/48"]
    )
    apply(cp, governed_policy(policy, label, **{**ALLOWLIST, "allowedPorts": [443, 8443]}))
    apply(cp, narrower).check_returncode()
    try:
        expected = [DNS_RULE, cidr_rule("10.1.0.0/16", "2001:db8:1::/48")]
        expected[1]["ports"].append({"protocol": "TCP", "port": 8443})
        updated = wait_managed(
            cp,
            namespace,
            "mlgate-egress to become the intersection of both policies",
            lambda np: np["spec"]["egress"] == expected,
        )
        assert updated["metadata"]["annotations"]["mlgate.io/egress-policies"] == (
            f"{policy},{other}"
        )
        wait_condition(
            cp,
            other,
            "the narrower policy's status to name its partner",
            lambda c: f"{namespace} (intersected with {policy})" in c["message"],
        )
    finally:
        cp.kubectl("delete", "clustermlpolicy", other)

    # Out of scope: removed.
    cp.kubectl("label", "namespace", namespace, f"{label}-", check=True)
    eventually(
        lambda: True if managed(cp, namespace) is None else None,
        "mlgate-egress to be removed when the namespace leaves scope",
    )


def test_only_mlgate_may_change_mlgate_egress(
    control_plane: Cluster, scope: tuple[str, str], namespace: str
) -> None:
    cp, (_, label) = control_plane, scope
    cp.kubectl("label", "namespace", namespace, f"{label}=governed", check=True)
    first = wait_managed(cp, namespace, "mlgate-egress to appear")
    mallory = user_with_network_policy_rights(cp, namespace, "mallory")
    delete = cp.kubectl(
        "-n", namespace, "delete", "networkpolicy", "mlgate-egress", kubeconfig=mallory
    )
    assert delete.returncode != 0
    assert 'admission webhook "networkpolicies.mlgate.io" denied the request' in delete.stderr
    assert "only mlgate may delete it" in delete.stderr
    widen = {"spec": {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}}
    edit = cp.kubectl(
        "-n", namespace, "patch", "networkpolicy", "mlgate-egress", "--type=merge",
        "-p", json.dumps(widen), kubeconfig=mallory,
    )  # fmt: skip
    assert edit.returncode != 0 and "only mlgate may edit it" in edit.stderr
    assert managed(cp, namespace) == first
    # Other NetworkPolicies stay hers to delete, even while mlgate is not asked at all.
    mine = network_policy("mine", namespace, cidr_rule("10.3.0.0/16"))
    apply(cp, mine, kubeconfig=mallory).check_returncode()
    gone = cp.kubectl("-n", namespace, "delete", "networkpolicy", "mine", kubeconfig=mallory)
    assert gone.returncode == 0, gone.stderr


@pytest.mark.parametrize(
    ("rule", "path", "text"),
    [
        (cidr_rule("0.0.0.0/0"), "spec.egress[0].to[0].ipBlock.cidr", "0.0.0.0/0 widens egress"),
        (cidr_rule("::/0"), "spec.egress[0].to[0].ipBlock.cidr", "::/0 widens egress"),
        (cidr_rule("10.0.0.0/8", port=22), "spec.egress[0].ports[0].port", "allows port 22/TCP"),
        ({"ports": [{"port": 443}]}, "spec.egress[0].to", "every destination"),
        (
            {"to": [{"namespaceSelector": {}}]},
            "spec.egress[0].to[0].namespaceSelector",
            "every namespace",
        ),
    ],
    ids=["any-ipv4", "any-ipv6", "other-port", "empty-to", "all-namespaces"],
)
def test_widening_user_network_policies_are_denied(
    control_plane: Cluster,
    scope: tuple[str, str],
    namespace: str,
    rule: dict[str, Any],
    path: str,
    text: str,
) -> None:
    cp, (policy, label) = control_plane, scope
    cp.kubectl("label", "namespace", namespace, f"{label}=governed", check=True)
    wait_managed(cp, namespace, "mlgate-egress to appear")
    out = apply(cp, network_policy("wide", namespace, rule))
    assert out.returncode != 0
    assert 'admission webhook "networkpolicies.mlgate.io" denied the request' in out.stderr
    assert f"[{policy}] egress.networkPolicy at {path}" in out.stderr
    assert text in out.stderr
    fine = apply(cp, network_policy("fine", namespace, cidr_rule("10.20.0.0/16")))
    assert fine.returncode == 0, fine.stderr
    widened = network_policy("fine", namespace, cidr_rule("10.20.0.0/16"), rule)
    assert apply(cp, widened).returncode != 0


def test_workloads_wait_until_the_network_policy_exists(
    control_plane: Cluster, scope: tuple[str, str], namespace: str
) -> None:
    cp, (policy, label) = control_plane, scope
    # A ResourceQuota of zero NetworkPolicies makes the apiserver refuse mlgate-egress until it
    # is gone. Its status is written here too, as the local control plane has no quota
    # controller to do it (and a quota without status limits nothing).
    count = {"count/networkpolicies.networking.k8s.io": "0"}
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-netpol", "namespace": namespace},
        "spec": {"hard": count},
    }
    apply(cp, quota).check_returncode()
    cp.kubectl(
        "-n", namespace, "patch", "resourcequota", "no-netpol", "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": {"hard": count, "used": count}}), check=True,
    )  # fmt: skip
    cp.kubectl("label", "namespace", namespace, f"{label}=governed", check=True)
    failed = wait_condition(
        cp,
        policy,
        "the policy's status to report the failed apply",
        lambda c: c["reason"] == "ApplyFailed",
    )
    assert namespace in failed["message"]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "early", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "early"}},
            "template": {
                "metadata": {"labels": {"app": "early"}},
                "spec": {"containers": [{"name": "main", "image": GOOD}]},
            },
        },
    }
    early = apply(cp, deployment)
    assert early.returncode != 0
    assert 'admission webhook "workloads.mlgate.io" denied the request' in early.stderr
    assert "mlgate-egress does not exist yet" in early.stderr and "retry shortly" in early.stderr
    cp.kubectl("-n", namespace, "delete", "resourcequota", "no-netpol", check=True)
    wait_managed(cp, namespace, "mlgate-egress once the quota is gone", timeout=45)
    admitted = apply(cp, deployment)
    assert admitted.returncode == 0, admitted.stderr
