"""Bypass attempts of a tenant with the default `edit` role, through the real kube-apiserver:
image volumes, unverifiable model env and endpoint redirection, egress side doors, and
NetworkPolicies that were there before the namespace came into scope. Also: kubectl's own YAML
reading, compared with `mlgate check`'s."""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate import kubeyaml
from mlgate.devcluster import Cluster
from mlgate.devrun import MlgateProcess
from mlgate.manifests import Document, documents, expand_paths
from tests.e2e import test_egress
from tests.e2e.test_admission import wait_policy

GOOD = "registry.example.com/ml/serve@sha256:" + "a" * 64
DENIED = 'admission webhook "workloads.mlgate.io" denied the request'
# The same mlgate process fixture as the egress tests (one per module: webhook, reconciler).
mlgate = test_egress.mlgate


# What the built-in `edit` role grants on the resources these tests use. `edit` itself is an
# aggregated ClusterRole, and the local control plane runs no controller-manager to aggregate it.
EDIT_RULES = [
    {"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["*"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["*"]},
]


def as_editor(cp: Cluster, namespace: str) -> Path:
    """A kubeconfig of a user with `edit`'s rights on workloads and NetworkPolicies, in
    `namespace` only: no cluster-wide rights, no rights on mlgate's resources."""
    user = f"tenant-{uuid.uuid4().hex[:6]}"
    meta = {"name": f"{user}-edit", "namespace": namespace}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": meta["name"]},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    apply(cp, {**role, "rules": EDIT_RULES}, binding).check_returncode()
    return cp.user_kubeconfig(user, ["ml-team"])


def apply(
    cp: Cluster, *docs: dict[str, Any], kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), kubeconfig=kubeconfig)


@pytest.fixture
def policy(control_plane: Cluster, mlgate: MlgateProcess) -> Iterator[Any]:
    """Creates Enforce ClusterMLPolicies with the given match and spec; deletes them after."""
    names: list[str] = []

    def make(match: dict[str, Any], **spec: Any) -> str:
        name = f"bypass-{uuid.uuid4().hex[:8]}"
        body = {
            "apiVersion": "mlgate.io/v1alpha1",
            "kind": "ClusterMLPolicy",
            "metadata": {"name": name},
            "spec": {"mode": "Enforce", "match": match, **spec},
        }
        apply(control_plane, body).check_returncode()
        names.append(name)
        wait_policy(control_plane, name)
        return name

    yield make
    for name in names:
        control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def deployment(
    name: str,
    namespace: str,
    *,
    pod: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {
                    "containers": [{"name": "main", "image": GOOD, **(container or {})}],
                    **(pod or {}),
                },
            },
        },
    }


def denied(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, "admitted, but mlgate should have denied it"
    assert DENIED in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def admitted(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


# --- item 3: image volumes -------------------------------------------------------------------


def test_image_volumes_fall_under_the_image_rules(
    control_plane: Cluster, policy: Any, namespace: str
) -> None:
    cp = control_plane
    policy(
        {"namespaces": [namespace]},
        images={"allowedRegistries": ["registry.example.com/ml/*"], "requireDigest": True},
    )
    tenant = as_editor(cp, namespace)
    volume = {"name": "weights", "image": {"reference": "docker.io/evil/weights:latest"}}
    mount = {"volumeMounts": [{"name": "weights", "mountPath": "/weights"}]}
    sneaky = deployment("sneaky", namespace, pod={"volumes": [volume]}, container=mount)
    denied(
        apply(cp, sneaky, kubeconfig=tenant),
        "images.registry at spec.template.spec.volumes[0].image.reference",
        "images.digest at spec.template.spec.volumes[0].image.reference",
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bare", "namespace": namespace},
        "spec": {"containers": [{"name": "main", "image": GOOD, **mount}], "volumes": [volume]},
    }
    denied(apply(cp, pod, kubeconfig=tenant), "images.registry at spec.volumes[0].image.reference")
    pinned = {"name": "weights", "image": {"reference": GOOD}}
    fine = deployment("fine", namespace, pod={"volumes": [pinned]}, container=mount)
    admitted(apply(cp, fine, kubeconfig=tenant))


# --- item 5: model references mlgate cannot read, endpoints ----------------------------------


def test_unverifiable_model_env_and_endpoints_are_denied(
    control_plane: Cluster, policy: Any, namespace: str
) -> None:
    cp = control_plane
    approved = f"approved-{uuid.uuid4().hex[:6]}"
    apply(
        cp,
        {
            "apiVersion": "mlgate.io/v1alpha1",
            "kind": "ApprovedModel",
            "metadata": {"name": approved},
            "spec": {"model": "fraud", "version": "3", "uris": ["s3://models/fraud/v3"]},
        },
    ).check_returncode()
    try:
        policy(
            {"namespaces": [namespace]},
            models={"allowedEndpoints": ["https://hf-mirror.internal"]},
        )
        tenant = as_editor(cp, namespace)
        model = {"name": "MODEL_URI", "value": "s3://models/fraud/v3"}
        from_config = deployment(
            "from-config",
            namespace,
            container={"env": [model], "envFrom": [{"configMapRef": {"name": "model-config"}}]},
        )
        denied(
            apply(cp, from_config, kubeconfig=tenant),
            "models.indirectReference at spec.template.spec.containers[0].envFrom[0]",
            "set the approved model URI literally",
        )
        secret_env = {"name": "MODEL_URI", "valueFrom": {"secretKeyRef": {"name": "m", "key": "u"}}}
        denied(
            apply(cp, deployment("from-secret", namespace, container={"env": [secret_env]}),
                  kubeconfig=tenant),
            "models.indirectReference at spec.template.spec.containers[0].env[0].valueFrom",
        )  # fmt: skip
        redirect = {"name": "AWS_ENDPOINT_URL_S3", "value": "https://evil.example"}
        denied(
            apply(cp, deployment("redirect", namespace, container={"env": [model, redirect]}),
                  kubeconfig=tenant),
            "models.endpoint at spec.template.spec.containers[0].env[1].value",
        )  # fmt: skip
        mirror = {"name": "HF_ENDPOINT", "value": "https://hf-mirror.internal"}
        prefixed = {"prefix": "APP_", "configMapRef": {"name": "app-config"}}
        fine = deployment(
            "fine", namespace, container={"env": [model, mirror], "envFrom": [prefixed]}
        )
        admitted(apply(cp, fine, kubeconfig=tenant))
    finally:
        cp.kubectl("delete", "approvedmodel", approved, "--ignore-not-found")


# --- item 6: egress side doors and widening NetworkPolicies ----------------------------------


def test_egress_side_doors_are_denied_even_outside_the_policy_selector(
    control_plane: Cluster, policy: Any, namespace: str
) -> None:
    cp = control_plane
    # The policy selects only `team: ml` workloads, but mlgate-egress confines every pod.
    policy(
        {"namespaces": [namespace], "selector": {"matchLabels": {"team": "ml"}}},
        egress={"networkPolicy": {"allowedCIDRs": ["10.0.0.0/8"]}},
    )
    deadline = time.monotonic() + 30
    while cp.kubectl("-n", namespace, "get", "networkpolicy", "mlgate-egress").returncode:
        assert time.monotonic() < deadline, "mlgate-egress never appeared"
        time.sleep(0.3)
    tenant = as_editor(cp, namespace)
    attempts = {
        "host-network": ({"hostNetwork": True}, {}, {}, "egress.hostNetwork"),
        "host-pid": ({"hostPID": True}, {}, {}, "egress.hostPID"),
        "host-ipc": ({"hostIPC": True}, {}, {}, "egress.hostIPC"),
        "privileged": ({}, {"securityContext": {"privileged": True}}, {}, "egress.privileged"),
        "net-admin": (
            {},
            {"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}},
            {},
            "egress.capabilities",
        ),
        "multus": ({}, {}, {"k8s.v1.cni.cncf.io/networks": "macvlan"}, "egress.secondaryNetwork"),
    }
    for name, (pod, container, extra, rule) in attempts.items():
        doc = deployment(
            name, namespace, pod=pod, container=container, annotations=extra,
            labels={"team": "other"},
        )  # fmt: skip
        denied(apply(cp, doc, kubeconfig=tenant), rule, "egress.allow")
    admitted(apply(cp, deployment("plain", namespace, labels={"team": "other"}), kubeconfig=tenant))


def test_network_policies_already_widening_hold_workloads_back(
    control_plane: Cluster, policy: Any, namespace: str
) -> None:
    cp = control_plane
    label = f"e2e.mlgate.io/bypass-{uuid.uuid4().hex[:6]}"
    tenant = as_editor(cp, namespace)
    wide = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all-egress", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }
    # Written while the namespace is out of every policy's scope: admitted.
    admitted(apply(cp, wide, kubeconfig=tenant))
    name = policy(
        {"namespaceSelector": {"matchLabels": {label: "governed"}}},
        egress={"networkPolicy": {"allowedCIDRs": ["10.0.0.0/8"]}},
    )
    cp.kubectl("label", "namespace", namespace, f"{label}=governed", check=True)
    deadline = time.monotonic() + 30
    while True:
        out = cp.kubectl("get", "clustermlpolicy", name, "-o", "json")
        conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
        found = [c for c in conditions if c["type"] == "EgressNetworkPolicy"]
        if found and found[0]["reason"] == "WidenedByNetworkPolicy":
            assert f"{namespace}/allow-all-egress" in found[0]["message"]
            break
        assert time.monotonic() < deadline, f"no WidenedByNetworkPolicy condition: {found}"
        time.sleep(0.3)
    while cp.kubectl("-n", namespace, "get", "networkpolicy", "mlgate-egress").returncode:
        assert time.monotonic() < deadline, "mlgate-egress never appeared"
        time.sleep(0.3)
    denied(
        apply(cp, deployment("held", namespace), kubeconfig=tenant),
        "NetworkPolicy allow-all-egress in namespace",
        f"kubectl delete networkpolicy allow-all-egress -n {namespace}",
    )
    cp.kubectl("-n", namespace, "delete", "networkpolicy", "allow-all-egress", check=True)
    deadline = time.monotonic() + 30
    while (result := apply(cp, deployment("held", namespace), kubeconfig=tenant)).returncode:
        assert time.monotonic() < deadline, result.stderr
        time.sleep(0.3)


# --- item 9: kubectl's YAML ------------------------------------------------------------------

SCALARS = ["y", "Y", "yes", "on", "ON", "n", "no", "off", "true", "~", "null", "1_000", "0x1F",
           "017", "0o17", "0b101", "08", "1e3", ".5", "-.5", "+12", "1:20", "2024-01-15", "=",
           "yES", "1e999", "18446744073709551615", "18446744073709551616"]  # fmt: skip


def _numbers_as_floats(data: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Each value with its JSON type, so that `true` and `1` never compare equal."""
    typed: dict[str, tuple[str, Any]] = {}
    for key, value in data.items():
        if isinstance(value, bool) or value is None or isinstance(value, str):
            typed[key] = (type(value).__name__, value)
        else:
            typed[key] = ("number", float(value))
    return typed


def test_kubectl_reads_yaml_scalars_as_mlgate_check_does(
    control_plane: Cluster, tmp_path: Path
) -> None:
    data = "\n".join(f"  k{i}: {text}" for i, text in enumerate(SCALARS))
    keys = "\n".join(f"  {key}: v" for key in ("on", "n", "1", "0x10", "1.5", "1e6"))
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: scalars\n"
        f"data:\n{data}\nbinaryData:\n{keys}\n"
    )
    manifest = tmp_path / "scalars.yaml"
    manifest.write_text(text)
    out = control_plane.kubectl(
        "create", "--dry-run=client", "--validate=false", "-o", "json", "-f", str(manifest)
    )
    assert out.returncode == 0, out.stderr
    by_kubectl = json.loads(out.stdout)
    mine, problems = kubeyaml.load(text)
    assert problems == []
    # kubectl prints every number through float64 or int64: compare numbers as floats.
    assert _numbers_as_floats(mine["data"]) == _numbers_as_floats(by_kubectl["data"])
    assert sorted(mine["binaryData"]) == sorted(by_kubectl["binaryData"])


def test_kubectl_reads_dot_files_of_a_directory_as_mlgate_check_does(
    control_plane: Cluster, tmp_path: Path
) -> None:
    def config_map(name: str) -> str:
        return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"

    for path, name in [
        ("visible.yaml", "visible"),
        (".hidden.yaml", "hidden"),
        (".dir/nested.yml", "nested"),
        ("notes.txt", "ignored"),
    ]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(config_map(name))

    def kubectl_reads(*flags: str) -> set[str]:
        out = control_plane.kubectl(
            "create", "--dry-run=client", "-o", "name", *flags, "-f", str(tmp_path)
        )
        assert out.returncode == 0, out.stderr
        return set(out.stdout.split())

    assert kubectl_reads() == {"configmap/visible", "configmap/hidden"}
    recursive = kubectl_reads("-R")
    assert recursive == {"configmap/visible", "configmap/hidden", "configmap/nested"}
    sources, errors = expand_paths([str(tmp_path)], io.StringIO())
    assert errors == []
    names = {
        f"configmap/{doc.obj['metadata']['name']}"
        for source in sources
        for doc in documents(source)
        if isinstance(doc, Document)
    }
    assert names == recursive  # mlgate check reads directories as `kubectl apply -R -f DIR`
