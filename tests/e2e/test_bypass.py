"""Ways around the webhook, tried by a tenant (the `edit` role, plus the odd extra right)
through the real kube-apiserver: collection deletes, subresources, hostile request shapes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlgate.devcluster import Cluster
from mlgate.devrun import WEBHOOK_CONFIG_KINDS, MlgateProcess
from tests.e2e.conftest import Tenant
from tests.e2e.test_admission import running_mlgate
from tests.e2e.test_egress import (
    ALLOWLIST,
    apply,
    cidr_rule,
    eventually,
    governed_policy,
    network_policy,
    wait_managed,
)

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_CONFIG = "mlgate-bypass-e2e"
GOOD = "registry.example.com/ml/serve@sha256:" + "a" * 64
NAMESPACE_CONTROLLER = "system:serviceaccount:kube-system:namespace-controller"


@pytest.fixture(scope="module")
def mlgate(
    control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlgateProcess]:
    yield from running_mlgate(control_plane, tmp_path_factory, WEBHOOK_CONFIG)


@pytest.fixture
def governed(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str
) -> Iterator[tuple[str, str]]:
    """(policy, scope label) of an Enforce policy that manages egress, with `namespace` in it."""
    name = f"bypass-{uuid.uuid4().hex[:8]}"
    label = f"e2e.mlgate.io/{name}"
    doc = governed_policy(name, label, **ALLOWLIST)
    doc["spec"]["models"] = {"requireApproved": True}
    apply(control_plane, doc).check_returncode()
    control_plane.kubectl("label", "namespace", namespace, f"{label}=governed", check=True)
    wait_managed(control_plane, namespace, "mlgate-egress to appear")
    yield name, label
    control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def names(cp: Cluster, resource: str, namespace: str) -> list[str]:
    out = cp.kubectl("get", resource, "-n", namespace, "-o", "name", check=True)
    return sorted(line.rpartition("/")[2] for line in out.stdout.split())


def user_policies(cp: Cluster, namespace: str) -> None:
    """Two narrowing NetworkPolicies that sort before mlgate-egress (collection deletes go in
    name order and stop at the first refusal)."""
    for name in ("aa-one", "aa-two"):
        apply(cp, network_policy(name, namespace, cidr_rule("10.1.0.0/16"))).check_returncode()


# ---------------------------------------------------------------------------------------------
# Item 1: deleting NetworkPolicies, one by one or as a collection


def test_tenant_deletes_network_policies_but_not_mlgate_egress(
    control_plane: Cluster, governed: tuple[str, str], namespace: str, tenant: Tenant
) -> None:
    cp, user = control_plane, tenant(namespace)
    user_policies(cp, namespace)
    # kubectl deletes one object at a time: each user policy goes, mlgate-egress stays.
    every = cp.kubectl("delete", "networkpolicies", "--all", "-n", namespace, kubeconfig=user)
    assert every.returncode != 0
    assert "mlgate-egress" in every.stderr and "only mlgate may delete it" in every.stderr
    assert names(cp, "networkpolicies", namespace) == ["mlgate-egress"]

    # DELETECOLLECTION: admitted once without a name (this used to fail the match condition
    # and refuse everything), then item by item; mlgate-egress is refused by mlgate itself.
    user_policies(cp, namespace)
    url = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
    collection = cp.kubectl("delete", "--raw", url, kubeconfig=user)
    assert collection.returncode != 0
    assert "only mlgate may delete it" in collection.stderr, collection.stderr
    assert "expression" not in collection.stderr and "matchCondition" not in collection.stderr
    assert names(cp, "networkpolicies", namespace) == ["mlgate-egress"]


def test_namespace_controller_empties_a_governed_namespace(
    control_plane: Cluster, governed: tuple[str, str], namespace: str
) -> None:
    """What the namespace controller does on deletion: DELETECOLLECTION per resource, with
    its own bootstrap RBAC (there is no controller-manager here, so it is impersonated)."""
    cp = control_plane
    user_policies(cp, namespace)
    cp.kubectl("delete", "namespace", namespace, "--wait=false", check=True)
    url = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
    emptied = cp.kubectl("delete", "--raw", url, f"--as={NAMESPACE_CONTROLLER}")
    assert emptied.returncode == 0, emptied.stderr
    assert names(cp, "networkpolicies", namespace) == []


def test_a_namespace_is_emptied_and_finalized_while_mlgate_is_down(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str, tmp_path: Path
) -> None:
    """Deleting a namespace never waits for mlgate: neither the collection deletes nor the
    namespace controller's /finalize write (labels unchanged) are sent to it."""
    cp, victim_config = control_plane, "mlgate-bypass-victim"
    user_policies(cp, namespace)
    victim = MlgateProcess(cp.kubeconfig, tmp_path / "victim.log", webhook_config=victim_config)
    with victim:
        victim.kill()
    try:
        relabel = cp.kubectl("label", "namespace", namespace, "e2e.mlgate.io/probe=1")
        assert relabel.returncode != 0 and "failed calling webhook" in relabel.stderr
        cp.kubectl("delete", "namespace", namespace, "--wait=false", check=True)
        url = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
        as_controller = f"--as={NAMESPACE_CONTROLLER}"
        emptied = cp.kubectl("delete", "--raw", url, as_controller)
        assert emptied.returncode == 0, emptied.stderr
        body = json.loads(cp.kubectl("get", "namespace", namespace, "-o", "json").stdout)
        body["spec"]["finalizers"] = []
        path = tmp_path / "finalize.json"
        path.write_text(json.dumps(body))
        finalize = cp.kubectl(
            "replace", "--raw", f"/api/v1/namespaces/{namespace}/finalize", "-f", str(path),
            as_controller,
        )  # fmt: skip
        assert finalize.returncode == 0, finalize.stderr
        eventually(
            lambda: cp.kubectl("get", "namespace", namespace).returncode != 0 or None,
            "the namespace gone",
        )
    finally:
        cp.kubectl("delete", WEBHOOK_CONFIG_KINDS, victim_config, "--ignore-not-found")


# ---------------------------------------------------------------------------------------------
# Item 2: subresources that write labels, annotations or spec

NAMESPACE_WRITES = [
    {"apiGroups": [""], "resources": ["namespaces", "namespaces/status", "namespaces/finalize"]}
]


def _rules(rules: list[dict[str, Any]], verbs: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{**r, "verbs": list(verbs)} for r in rules]


def _without_label(cp: Cluster, namespace: str, label: str) -> str:
    body = json.loads(cp.kubectl("get", "namespace", namespace, "-o", "json", check=True).stdout)
    del body["metadata"]["labels"][label]
    return json.dumps(body)


def test_namespace_status_and_finalize_cannot_relabel_out_of_scope(
    control_plane: Cluster,
    governed: tuple[str, str],
    namespace: str,
    tenant: Tenant,
    tmp_path: Path,
) -> None:
    cp, (policy, label) = control_plane, governed
    user = tenant(namespace, rules=_rules(NAMESPACE_WRITES, ("get", "update", "patch")))
    drop = json.dumps({"metadata": {"labels": {label: None}}})
    status = cp.kubectl(
        "patch", "namespace", namespace, "--subresource=status", "--type=merge", "-p", drop,
        kubeconfig=user,
    )  # fmt: skip
    assert status.returncode != 0
    assert "namespaces.mlgate.io" in status.stderr and policy in status.stderr, status.stderr
    body = tmp_path / "namespace.json"
    body.write_text(_without_label(cp, namespace, label))
    finalize = cp.kubectl(
        "replace", "--raw", f"/api/v1/namespaces/{namespace}/finalize", "-f", str(body),
        kubeconfig=user,
    )  # fmt: skip
    assert finalize.returncode != 0
    assert "namespaces.mlgate.io" in finalize.stderr and policy in finalize.stderr
    labels = json.loads(cp.kubectl("get", "namespace", namespace, "-o", "json").stdout)
    assert labels["metadata"]["labels"][label] == "governed"
    # Not a hole in theory only: a scope admin's /status write does drop the label.
    admin = cp.kubectl(
        "patch", "namespace", namespace, "--subresource=status", "--type=merge", "-p", drop
    )
    assert admin.returncode == 0, admin.stderr
    after = json.loads(cp.kubectl("get", "namespace", namespace, "-o", "json").stdout)
    assert label not in after["metadata"]["labels"]


MODEL = "mlgate.io/model"
STATUS_KINDS = {
    "Pod": ("pods", {"apiVersion": "v1", "spec": {"containers": [{"name": "m", "image": GOOD}]}}),
    "Deployment": (
        "deployments",
        {
            "apiVersion": "apps/v1",
            "spec": {
                "selector": {"matchLabels": {"app": "m"}},
                "template": {
                    "metadata": {"labels": {"app": "m"}},
                    "spec": {"containers": [{"name": "m", "image": GOOD}]},
                },
            },
        },
    ),
    "Job": (
        "jobs",
        {
            "apiVersion": "batch/v1",
            "spec": {
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": GOOD}]}
                }
            },
        },
    ),
}


@pytest.fixture
def approved(control_plane: Cluster, mlgate: MlgateProcess) -> Iterator[str]:
    name = f"fraud-{uuid.uuid4().hex[:6]}"
    doc = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ApprovedModel",
        "metadata": {"name": name},
        "spec": {"model": name, "version": "3", "approvedBy": "e2e"},
    }
    apply(control_plane, doc).check_returncode()
    yield f"{name}@3"
    control_plane.kubectl("delete", "approvedmodel", name, "--ignore-not-found")


@pytest.mark.parametrize("kind", sorted(STATUS_KINDS))
def test_status_writes_cannot_swap_the_model(
    control_plane: Cluster,
    governed: tuple[str, str],
    approved: str,
    namespace: str,
    tenant: Tenant,
    kind: str,
) -> None:
    cp, (plural, body) = control_plane, STATUS_KINDS[kind]
    meta = {"name": "served", "namespace": namespace, "annotations": {MODEL: approved}}
    eventually(
        lambda: apply(cp, {"kind": kind, "metadata": meta, **body}).returncode == 0 or None,
        f"{kind} with the approved model admitted",
    )
    user = tenant(
        namespace,
        rules=_rules([{"apiGroups": ["", "apps", "batch"], "resources": [f"{plural}/status"]}],
                     ("get", "update", "patch")),
    )  # fmt: skip
    swap = json.dumps({"metadata": {"annotations": {MODEL: "stolen@1"}}})
    out = cp.kubectl(
        "patch", plural, "served", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", swap, kubeconfig=user,
    )  # fmt: skip
    stored = json.loads(cp.kubectl("get", plural, "served", "-n", namespace, "-o", "json").stdout)
    # The apiserver takes annotations through /status for these kinds: mlgate judges them.
    assert out.returncode != 0 and "models.approval" in out.stderr, out.stderr
    stored = json.loads(cp.kubectl("get", plural, "served", "-n", namespace, "-o", "json").stdout)
    assert stored["metadata"]["annotations"][MODEL] == approved
    # Proof that the hole is real: a harmless annotation does go in through /status.
    note = json.dumps({"metadata": {"annotations": {"note": "via-status"}}})
    noted = cp.kubectl(
        "patch", plural, "served", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", note, kubeconfig=user,
    )  # fmt: skip
    assert noted.returncode == 0, noted.stderr
    stored = json.loads(cp.kubectl("get", plural, "served", "-n", namespace, "-o", "json").stdout)
    assert stored["metadata"]["annotations"]["note"] == "via-status"
    # A status-only write (what kubelets and controllers send) is never held up.
    conditions = json.dumps({"status": {"conditions": []}})
    plain = cp.kubectl(
        "patch", plural, "served", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", conditions, kubeconfig=user,
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr


def test_custom_resource_status_cannot_change_metadata(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str
) -> None:
    """Why custom resources need no judging of /status: the apiserver keeps everything but
    .status from a /status write (what KServe, Kubeflow and Ray CRDs declare)."""
    cp, group = control_plane, "probes.e2e.mlgate.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"statusprobes.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": "StatusProbe", "plural": "statusprobes", "singular": "statusprobe"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    apply(cp, crd).check_returncode()
    cp.kubectl("wait", "--for=condition=Established", f"crd/statusprobes.{group}", check=True)
    probe = {
        "apiVersion": f"{group}/v1",
        "kind": "StatusProbe",
        "metadata": {"name": "p", "namespace": namespace, "annotations": {MODEL: "a@1"}},
        "spec": {"image": GOOD},
    }
    eventually(lambda: apply(cp, probe).returncode == 0 or None, "the probe created")
    swap = json.dumps({"metadata": {"annotations": {MODEL: "b@2"}}, "spec": {"image": "x"}})
    out = cp.kubectl(
        "patch", "statusprobes", "p", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", swap,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    stored = json.loads(
        cp.kubectl("get", "statusprobes", "p", "-n", namespace, "-o", "json").stdout
    )
    assert stored["metadata"]["annotations"][MODEL] == "a@1" and stored["spec"]["image"] == GOOD


# ---------------------------------------------------------------------------------------------
# Item 8: hostile shapes through the apiserver


def _deep(depth: int) -> str:
    return '{"k":' * depth + '"bottom"' + "}" * depth


@pytest.mark.parametrize("depth", [3000, 9000])
def test_deeply_nested_custom_resource_is_answered_and_can_shrink(
    control_plane: Cluster, governed: tuple[str, str], namespace: str, tmp_path: Path, depth: int
) -> None:
    cp = control_plane
    pod = {"containers": [{"name": "m", "image": GOOD}]}
    ray = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "deep", "namespace": namespace},
        "spec": {
            "headGroupSpec": {"template": {"spec": pod}},
            "workerGroupSpecs": [{"groupName": "w", "replicas": 3, "template": {"spec": pod}}],
            "extra": "DEEP",
        },
    }
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(ray).replace('"DEEP"', _deep(depth)))
    created = cp.kubectl("create", "-f", str(path))
    assert created.returncode == 0, created.stderr[-2000:]
    down = json.dumps([{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 1}])
    scaled = cp.kubectl("patch", "raycluster", "deep", "-n", namespace, "--type=json", "-p", down)
    assert scaled.returncode == 0, scaled.stderr[-2000:]
    labelled = cp.kubectl("label", "raycluster", "deep", "-n", namespace, "team=risk")
    assert labelled.returncode == 0, labelled.stderr[-2000:]
    # Still judged: an unapproved model next to the deep field is refused with mlgate's message.
    swapped = cp.kubectl("annotate", "raycluster", "deep", "-n", namespace, f"{MODEL}=stolen@1")
    assert swapped.returncode != 0 and "models.approval" in swapped.stderr, swapped.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# Item 7: what mlgate enforces after a restart is written by mlgate only


def test_tenant_cannot_forge_the_last_good_policy(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str, tenant: Tenant
) -> None:
    cp = control_plane
    doc = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "MLPolicy",
        "metadata": {"name": "team", "namespace": namespace},
        "spec": {"mode": "Enforce", "images": {"requireDigest": True}},
    }
    apply(cp, doc).check_returncode()
    eventually(
        lambda: (get_mlpolicy(cp, namespace).get("status") or {}).get("lastGood"),
        "mlgate persisted status.lastGood",
    )
    user = tenant(
        namespace,
        rules=_rules([{"apiGroups": ["mlgate.io"], "resources": ["mlpolicies/status"]}],
                     ("get", "patch", "update")),
    )  # fmt: skip
    forged = {"generation": 1, "spec": json.dumps({"mode": "Audit", "match": {}})}
    out = cp.kubectl(
        "patch", "mlpolicy", "team", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"lastGood": forged}}), kubeconfig=user,
    )  # fmt: skip
    assert out.returncode != 0 and "only mlgate records" in out.stderr, out.stderr
    plain = cp.kubectl(
        "patch", "mlpolicy", "team", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"violations": 0}}), kubeconfig=user,
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr


def get_mlpolicy(cp: Cluster, namespace: str) -> dict[str, Any]:
    out = cp.kubectl("get", "mlpolicy", "team", "-n", namespace, "-o", "json", check=True)
    body: dict[str, Any] = json.loads(out.stdout)
    return body


# ---------------------------------------------------------------------------------------------
# The mutating entry's rules follow the policies in force (controller.routing): a tenant can
# neither switch mutation off for a policy that needs it nor route requests elsewhere.


def test_tenant_cannot_change_the_routing_of_mlgate_webhooks(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str, tenant: Tenant
) -> None:
    cp, user = control_plane, tenant(namespace)
    empty_rules = json.dumps([{"op": "replace", "path": "/webhooks/0/rules", "value": []}])
    for kind in WEBHOOK_CONFIG_KINDS.split(","):
        patched = cp.kubectl(
            "patch", kind, WEBHOOK_CONFIG, "--type=json", "-p", empty_rules, kubeconfig=user
        )
        assert patched.returncode != 0 and "forbidden" in patched.stderr.lower(), patched.stderr
        deleted = cp.kubectl("delete", kind, WEBHOOK_CONFIG, kubeconfig=user)
        assert deleted.returncode != 0 and "forbidden" in deleted.stderr.lower(), deleted.stderr
    # Still there, untouched by the attempts.
    assert cp.kubectl("get", WEBHOOK_CONFIG_KINDS, WEBHOOK_CONFIG).returncode == 0
