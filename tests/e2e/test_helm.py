"""The Helm chart against the real apiserver: every rendering is accepted, install / upgrade /
uninstall work, and the chart's RBAC is enough for `mlgate run` and no more.

There is no kubelet, so the chart's pods never start. Instead, `mlgate run` runs locally with
the container arguments of the installed Deployment and a token of the chart's ServiceAccount.
Every release here routes the webhooks to a namespace selector that matches nothing and uses
failurePolicy Ignore, so a webhook pointing at a Service without pods cannot disturb other tests.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.api.compile import parse_resource
from mlgate.devcluster import Cluster
from mlgate.devrun import MlgateProcess, stand_in_crds
from mlgate.webhook.config import (
    EXTENSIONS_WEBHOOK,
    IMAGES_MUTATING_WEBHOOK,
    LLM_WEBHOOK,
    NAMESPACES_WEBHOOK,
    NETWORK_POLICIES_WEBHOOK,
    POLICIES_WEBHOOK,
    WORKLOADS_WEBHOOK,
    workload_rules,
)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlgate"
CI_VALUES = sorted(CHART.glob("ci/*-values.yaml"))
# Routes nothing to the release's webhooks: no namespace carries this label.
MATCH_NOTHING = {"key": "mlgate.io/helm-e2e-never", "operator": "In", "values": ["never"]}
SAFE_VALUES: dict[str, Any] = {
    "webhook": {
        "failurePolicy": "Ignore",
        "timeoutSeconds": 2,
        "namespaceSelectorExpressions": [MATCH_NOTHING],
    }
}
# CRDs of other projects the chart's options create objects of; schema-less stand-ins suffice
# for the apiserver to accept (and dry-run) those objects.
FOREIGN_KINDS = [
    ("cert-manager.io", "v1", "Certificate", "certificates", "Namespaced"),
    ("cert-manager.io", "v1", "Issuer", "issuers", "Namespaced"),
    ("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors", "Namespaced"),
]


def _uid() -> str:
    return uuid.uuid4().hex[:6]


def _helm_binary() -> str:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    path = Path(assets) / "helm" if assets else None
    found = str(path) if path and os.access(path, os.X_OK) else shutil.which("helm")
    if not found:
        pytest.fail("helm not found: run `make controlplane-assets` (it builds helm)")
    return found


@dataclass
class Helm:
    cluster: Cluster
    binary: str

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=self.cluster.env(),
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def install(
        self, release: str, namespace: str, values: dict[str, Any], tmp: Path, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        file = tmp / f"{release}-values.yaml"
        file.write_text(yaml.safe_dump(values))
        return self(
            "install", release, str(CHART), "--namespace", namespace, "--create-namespace",
            "--values", str(file), *extra,
        )  # fmt: skip


def kubectl_json(cp: Cluster, *args: str) -> Any:
    return json.loads(cp.kubectl(*args, "-o", "json", check=True).stdout)


def exists(cp: Cluster, *args: str) -> bool:
    proc = cp.kubectl("get", *args, "--ignore-not-found", "-o", "name")
    assert proc.returncode == 0, proc.stderr
    return bool(proc.stdout.strip())


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def foreign_crds() -> list[dict[str, Any]]:
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {
                "group": group,
                "scope": scope,
                "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                "versions": [
                    {
                        "name": version,
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": schema},
                    }
                ],
            },
        }
        for group, version, kind, plural, scope in FOREIGN_KINDS
    ]


@pytest.fixture(scope="module")
def helm(control_plane: Cluster) -> Helm:
    return Helm(control_plane, _helm_binary())


@pytest.fixture(scope="module")
def chart_crds(control_plane: Cluster) -> Iterator[None]:
    """The chart's CRDs and stand-ins for cert-manager's and Prometheus Operator's."""
    added = [c for c in foreign_crds() if not exists(control_plane, "crd", c["metadata"]["name"])]
    control_plane.kubectl("apply", "-f", str(CHART / "crds"), check=True)
    if added:
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(added), check=True)
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=True
    )
    yield
    for crd in added:
        control_plane.kubectl("delete", "crd", crd["metadata"]["name"], "--wait=false")


# ---------------------------------------------------------------------------------------------
# Every rendering is accepted by the apiserver


@pytest.mark.parametrize(
    "values", [None, *CI_VALUES], ids=["default", *(p.name for p in CI_VALUES)]
)
def test_rendered_chart_is_accepted_by_the_apiserver(
    control_plane: Cluster, helm: Helm, chart_crds: None, values: Path | None
) -> None:
    namespace = f"mlgate-dry-{_uid()}"
    # --validate: render with this cluster's version and APIs, as `helm install` would.
    rendered = helm(
        "template", "mlgate", str(CHART), "--namespace", namespace, "--validate",
        *(["--values", str(values)] if values else []),
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    namespaces = {namespace} | {d["metadata"].get("namespace") for d in docs} - {None}
    for name in sorted(namespaces):
        control_plane.kubectl("create", "namespace", name, check=True)
    try:
        applied = control_plane.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=rendered, check=True
        )
        lines = applied.stdout.strip().splitlines()
        assert len(lines) == len(docs), applied.stdout
        assert all(line.endswith("(server dry run)") for line in lines), applied.stdout
    finally:
        for name in namespaces:
            control_plane.kubectl("delete", "namespace", name, "--wait=false")


# ---------------------------------------------------------------------------------------------
# Install, upgrade, uninstall


def _notes_policy(notes: str) -> dict[str, Any]:
    """The first policy the install notes tell the user to apply."""
    start = notes.index("<<'EOF'\n") + len("<<'EOF'\n")
    end = notes.index("\n     EOF", start)
    doc: dict[str, Any] = yaml.safe_load(textwrap.dedent(notes[start:end]))
    return doc


def test_install_upgrade_uninstall(
    control_plane: Cluster, helm: Helm, chart_crds: None, tmp_path: Path
) -> None:
    cp = control_plane
    # Every ML API is served, so the webhook's auto-detection must route all of them.
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(stand_in_crds()), check=True)
    cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=True)
    release = namespace = f"mlgate-life-{_uid()}"  # contains "mlgate": the full name is release's
    try:
        installed = helm.install(release, namespace, SAFE_VALUES, tmp_path)
        assert "STATUS: deployed" in installed.stdout
        notes = installed.stdout
        assert "kubectl label namespace <namespace> mlgate.io/governed=true" in notes
        assert "Workloads not judged" not in notes  # every ML API was found
        policy = _notes_policy(notes)
        assert parse_resource(policy).metadata.name == "first-policy"
        cp.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(policy), check=True)

        deployment = kubectl_json(cp, "-n", namespace, "get", "deployment", release)
        assert deployment["spec"]["replicas"] == 2
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == release
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        for kind in ("service", "serviceaccount", "poddisruptionbudget", "role", "rolebinding"):
            assert exists(
                cp, "-n", namespace, kind, release if "role" not in kind else f"{release}-tls"
            )
        for kind in ("role", "rolebinding"):
            assert exists(cp, "-n", namespace, kind, f"{release}-leader-election")
        assert f"--lease-name={release}" in pod["containers"][0]["args"]
        for kind in ("clusterrole", "clusterrolebinding"):
            assert exists(cp, kind, release)
        config = kubectl_json(cp, "get", "validatingwebhookconfiguration", release)
        hooks = {w["name"]: w for w in config["webhooks"]}
        assert set(hooks) == {
            WORKLOADS_WEBHOOK,
            EXTENSIONS_WEBHOOK,
            NETWORK_POLICIES_WEBHOOK,
            LLM_WEBHOOK,
            NAMESPACES_WEBHOOK,
            POLICIES_WEBHOOK,
        }
        assert hooks[WORKLOADS_WEBHOOK]["rules"] == workload_rules(status=True)
        assert hooks[EXTENSIONS_WEBHOOK].get("rules", []) == []  # no WorkloadKind yet
        for hook in hooks.values():
            assert hook["clientConfig"]["service"]["name"] == release
            assert hook["sideEffects"] == "NoneOnDryRun"
            assert hook["failurePolicy"] == "Ignore"
            expressions = hook["namespaceSelector"]["matchExpressions"]
            assert {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", namespace],
            } in expressions
        mutating = kubectl_json(cp, "get", "mutatingwebhookconfiguration", release)
        (pin,) = mutating["webhooks"]
        assert pin["name"] == IMAGES_MUTATING_WEBHOOK and pin["rules"] == workload_rules()
        assert pin["clientConfig"]["service"]["path"] == "/mutate"
        assert (pin["sideEffects"], pin["reinvocationPolicy"]) == ("None", "IfNeeded")
        assert pin["namespaceSelector"] == hooks[WORKLOADS_WEBHOOK]["namespaceSelector"]

        # mlgate (self mode) writes the caBundle; an upgrade must leave it alone.
        ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        for kind, count in (
            ("validatingwebhookconfiguration", len(hooks)),
            ("mutatingwebhookconfiguration", 1),
        ):
            patch = [
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": ca.decode()}
                for i in range(count)
            ]
            cp.kubectl(
                "patch", kind, release, "--type=json", "-p", json.dumps(patch), check=True
            )  # fmt: skip
        helm(
            "upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values",
            "--set", "replicaCount=3", "--set", "webhook.timeoutSeconds=3",
        )  # fmt: skip
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            for hook in kubectl_json(cp, "get", kind, release)["webhooks"]:
                assert hook["timeoutSeconds"] == 3
                assert hook["clientConfig"]["caBundle"] == ca.decode()
        deployment = kubectl_json(cp, "-n", namespace, "get", "deployment", release)
        assert deployment["spec"]["replicas"] == 3
        assert (
            "--timeout-seconds=3" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        )
        history = json.loads(helm("history", release, "-n", namespace, "-o", "json").stdout)
        assert [h["revision"] for h in history] == [1, 2]

        uninstalled = helm("uninstall", release, "--namespace", namespace, "--wait")
        assert "uninstalled" in uninstalled.stdout
        assert not exists(cp, "validatingwebhookconfiguration", release)
        assert not exists(cp, "mutatingwebhookconfiguration", release)
        assert not exists(cp, "clusterrole", release)
        assert not exists(cp, "clusterrolebinding", release)
        for kind in ("deployment", "service", "serviceaccount", "poddisruptionbudget"):
            assert not exists(cp, "-n", namespace, kind, release)
        assert not exists(cp, "-n", namespace, "role", f"{release}-tls")
        assert not exists(cp, "-n", namespace, "role", f"{release}-leader-election")
        # CRDs, and with them users' policies, stay.
        assert exists(cp, "crd", "clustermlpolicies.mlgate.io")
        assert not json.loads(helm("list", "-n", namespace, "-o", "json").stdout)
    finally:
        helm("uninstall", release, "--namespace", namespace, "--ignore-not-found", check=False)
        cp.kubectl("delete", "namespace", namespace, "--wait=false")


# ---------------------------------------------------------------------------------------------
# RBAC: enough for mlgate run, and nothing more


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    service_account: str
    keys_namespace: str
    governed: str  # a namespace a test policy governs

    @property
    def tls_secret(self) -> str:
        return f"{self.name}-tls"

    @property
    def lease(self) -> str:
        return f"{self.name}-leader"  # leaderElection.leaseName, not the default

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@pytest.fixture(scope="module")
def release(
    control_plane: Cluster, helm: Helm, chart_crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    cp = control_plane
    suffix = _uid()
    rel = Release(
        name=f"mlgate-rbac-{suffix}",
        namespace=f"mlgate-rbac-{suffix}",
        service_account=f"mlgate-rbac-{suffix}",
        keys_namespace=f"mlgate-keys-{suffix}",
        governed=f"mlgate-team-{suffix}",
    )
    for name in (rel.keys_namespace, rel.governed):
        cp.kubectl("create", "namespace", name, check=True)
    for namespace, secret in (
        (rel.keys_namespace, "cosign-keys"),
        (rel.keys_namespace, "other-keys"),
        ("default", f"unrelated-{suffix}"),
    ):
        cp.kubectl(
            "-n", namespace, "create", "secret", "generic", secret, "--from-literal=k=v", check=True
        )  # fmt: skip
    values = {
        **SAFE_VALUES,
        "leaderElection": {"leaseName": rel.lease},
        "rbac": {"keySecrets": [{"namespace": rel.keys_namespace, "name": "cosign-keys"}]},
    }
    try:
        helm.install(rel.name, rel.namespace, values, tmp_path_factory.mktemp("helm"))
        yield rel
    finally:
        helm("uninstall", rel.name, "--namespace", rel.namespace, "--wait", check=False)
        for name in (rel.namespace, rel.keys_namespace, rel.governed):
            cp.kubectl("delete", "namespace", name, "--wait=false")
        cp.kubectl("-n", "default", "delete", "secret", f"unrelated-{suffix}", "--ignore-not-found")


def service_account_kubeconfig(cp: Cluster, rel: Release, path: Path) -> Path:
    """The admin kubeconfig's cluster, with a token of the chart's ServiceAccount as the user."""
    token = cp.kubectl(
        "-n", rel.namespace, "create", "token", rel.service_account, "--duration=1h", check=True
    ).stdout.strip()  # fmt: skip
    config = yaml.safe_load(cp.kubectl("config", "view", "--minify", "--raw", check=True).stdout)
    config["users"] = [{"name": rel.service_account, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = rel.service_account
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class ChartMlgate(MlgateProcess):
    """`mlgate run` with the installed Deployment's own arguments, served on 127.0.0.1."""

    def __init__(self, kubeconfig: Path, log_path: Path, chart_args: list[str]) -> None:
        super().__init__(kubeconfig, log_path, extra_args=chart_args)

    def command(self) -> list[str]:
        assert self.extra_args[0] == "run"
        return [
            sys.executable, "-m", "mlgate", *self.extra_args,
            "--kubeconfig", str(self.kubeconfig),
            "--host", "127.0.0.1", "--port", str(self.port), "--cert-ip", "127.0.0.1",
        ]  # fmt: skip


def review(namespace: str, obj: dict[str, Any], **request: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "operation": "CREATE",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "name": obj["metadata"]["name"],
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": obj,
            "dryRun": False,
            **request,
        },
    }


def post(url: str, ca_pem: bytes, body: dict[str, Any]) -> dict[str, Any]:
    context = ssl.create_default_context(cadata=ca_pem.decode())  # the Secret's CA must verify
    request = urllib.request.Request(
        url + "/validate", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())["response"]
        return answer


def test_chart_rbac_is_enough_for_mlgate_run(
    control_plane: Cluster, release: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp, rel = control_plane, release
    deployment = kubectl_json(cp, "-n", rel.namespace, "get", "deployment", rel.name)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    kubeconfig = service_account_kubeconfig(cp, rel, tmp_path / "sa.kubeconfig")
    log = tmp_path / "mlgate.log"
    policy = f"helm-rbac-{_uid()}"
    pod_name = f"{rel.name}-pod"
    monkeypatch.setenv("POD_NAME", pod_name)  # the Lease identity, as the Deployment sets it
    mlgate = ChartMlgate(kubeconfig, log, args)
    try:
        mlgate.start()  # ready: listed policies, namespaces and pods with the chart's RBAC
        # The self-managed certificate: Secret created, caBundle of the chart's webhook set.
        secret = kubectl_json(cp, "-n", rel.namespace, "get", "secret", rel.tls_secret)
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlgate"
        ca_pem = base64.b64decode(secret["data"]["ca.crt"])
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            for hook in kubectl_json(cp, "get", kind, rel.name)["webhooks"]:
                assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca_pem, kind

        # Leader election: this replica creates the chart's Lease and holds it.
        def lease_holder() -> str | None:
            if not exists(cp, "-n", rel.namespace, "lease", rel.lease):
                return None
            lease = kubectl_json(cp, "-n", rel.namespace, "get", "lease", rel.lease)
            holder: str | None = lease.get("spec", {}).get("holderIdentity")
            return holder

        assert wait_for("the leader-election Lease", lease_holder) == pod_name

        # A Warn policy that also keeps mlgate-egress: watched, compiled, status written.
        cp.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump({
            "apiVersion": "mlgate.io/v1alpha1",
            "kind": "ClusterMLPolicy",
            "metadata": {"name": policy},
            "spec": {
                "mode": "Warn",
                "match": {"namespaces": [rel.governed]},
                "images": {"disallowTags": ["latest"]},
                "egress": {"networkPolicy": {"manage": True, "allowedCIDRs": ["10.0.0.0/8"]}},
            },
        }))  # fmt: skip

        def ready() -> bool:
            status = kubectl_json(cp, "get", "clustermlpolicy", policy).get("status", {})
            return any(
                c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
            )

        wait_for("the policy's Ready condition", ready)
        # NetworkPolicy mlgate-egress: created by server-side apply with patch on that name only.
        wait_for(
            "mlgate-egress",
            lambda: exists(cp, "-n", rel.governed, "networkpolicy", "mlgate-egress"),
        )

        # The webhook judges with namespace facts and posts an Event for the Warn finding.
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": rel.governed},
            "spec": {"containers": [{"name": "main", "image": "nginx:latest"}]},
        }
        answer = post(mlgate.url, ca_pem, review(rel.governed, pod))
        assert answer["allowed"] is True and answer.get("warnings"), answer

        def event() -> bool:
            events = kubectl_json(cp, "-n", rel.governed, "get", "events")["items"]
            return any(e["reason"] == "PolicyViolation" for e in events)

        wait_for("the PolicyViolation event", event)

        # A scale-up through /scale is judged as the Deployment, which mlgate reads.
        cp.kubectl(
            "-n", rel.governed, "create", "deployment", "web", "--image=nginx:latest", check=True
        )
        scale = {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": "web", "namespace": rel.governed},
            "spec": {"replicas": 3},
        }
        old = {**scale, "spec": {"replicas": 1}}
        answer = post(mlgate.url, ca_pem, review(
            rel.governed, scale, operation="UPDATE", subResource="scale", oldObject=old,
            kind={"group": "autoscaling", "version": "v1", "kind": "Scale"},
            resource={"group": "apps", "version": "v1", "resource": "deployments"},
        ))  # fmt: skip
        assert answer["allowed"] is True and answer.get("warnings"), answer

        # The policy goes: mlgate deletes the NetworkPolicy it kept.
        cp.kubectl("delete", "clustermlpolicy", policy, check=True)
        wait_for(
            "mlgate-egress to be removed",
            lambda: not exists(cp, "-n", rel.governed, "networkpolicy", "mlgate-egress"),
        )
    finally:
        mlgate.stop()
        cp.kubectl("delete", "clustermlpolicy", policy, "--ignore-not-found")
        cp.kubectl("-n", rel.namespace, "delete", "secret", rel.tls_secret, "--ignore-not-found")
        cp.kubectl("-n", rel.namespace, "delete", "lease", rel.lease, "--ignore-not-found")
    text = log.read_text()
    # An HTTP 403 as a status, not the digits inside a timestamp such as 12:00:51.403.
    assert not re.search(r"(?<![.\d])403(?!\d)", text), f"403 in the log:\n{mlgate.log_tail()}"
    for forbidden in ("Forbidden", "forbidden", "Not enough permissions"):
        assert forbidden not in text, f"{forbidden!r} in the mlgate log:\n{mlgate.log_tail()}"


def access(cp: Cluster, rel: Release, checks: list[tuple[str, ...]]) -> list[bool]:
    """Whether the chart's ServiceAccount may do each (verb, "resource[.group][/name]",
    namespace[, subresource]), answered by the apiserver's authorizer in one batch of
    SubjectAccessReviews ("" namespace: cluster-wide or all namespaces)."""
    reviews = []
    for verb, target, namespace, *sub in checks:
        resource, _, name = target.partition("/")
        resource, _, group = resource.partition(".")
        attributes = {"verb": verb, "resource": resource, "group": group, "name": name}
        attributes |= {"namespace": namespace, "subresource": sub[0] if sub else ""}
        reviews.append({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": rel.user,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{rel.namespace}",
                    "system:authenticated",
                ],
                "resourceAttributes": attributes,
            },
        })  # fmt: skip
    out = cp.kubectl("create", "-o", "yaml", "-f", "-", input=yaml.safe_dump_all(reviews))
    assert out.returncode == 0, out.stderr
    items = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(items) == len(checks), out.stdout
    return [bool(item["status"].get("allowed")) for item in items]


def test_chart_rbac_grants_nothing_more(control_plane: Cluster, release: Release) -> None:
    rel = release
    allowed = [
        ("list", "clustermlpolicies.mlgate.io", ""),
        ("patch", "clustermlpolicies.mlgate.io/p", "", "status"),
        ("watch", "pods", ""),
        ("get", "namespaces/default", ""),
        ("create", "events", rel.governed),
        ("get", f"secrets/{rel.tls_secret}", rel.namespace),
        ("update", f"secrets/{rel.tls_secret}", rel.namespace),
        ("create", "secrets", rel.namespace),
        ("get", "secrets/cosign-keys", rel.keys_namespace),
        ("get", f"validatingwebhookconfigurations.admissionregistration.k8s.io/{rel.name}", ""),
        ("patch", f"validatingwebhookconfigurations.admissionregistration.k8s.io/{rel.name}", ""),
        ("get", f"mutatingwebhookconfigurations.admissionregistration.k8s.io/{rel.name}", ""),
        ("patch", f"mutatingwebhookconfigurations.admissionregistration.k8s.io/{rel.name}", ""),
        ("create", "networkpolicies.networking.k8s.io", rel.governed),
        ("watch", "networkpolicies.networking.k8s.io", ""),
        ("patch", "networkpolicies.networking.k8s.io/mlgate-egress", rel.governed),
        ("delete", "networkpolicies.networking.k8s.io/mlgate-egress", rel.governed),
        ("get", "deployments.apps/web", rel.governed),
        ("watch", "jobs.batch", ""),
        ("list", "inferenceservices.serving.kserve.io", ""),
        ("create", "leases.coordination.k8s.io", rel.namespace),
        ("get", f"leases.coordination.k8s.io/{rel.lease}", rel.namespace),
        ("update", f"leases.coordination.k8s.io/{rel.lease}", rel.namespace),
        ("list", "policyreports.wgpolicyk8s.io", ""),
        ("create", "policyreports.wgpolicyk8s.io", rel.governed),
        ("patch", "policyreports.wgpolicyk8s.io/mlgate-audit", rel.governed),
        ("delete", "policyreports.wgpolicyk8s.io/mlgate-audit", rel.governed),
        ("patch", "clusterpolicyreports.wgpolicyk8s.io/mlgate-audit", ""),
        ("create", "gpubudgets.mlgate.io", rel.namespace),
        ("update", "gpubudgets.mlgate.io/team-a", rel.namespace),
        ("patch", "gpubudgets.mlgate.io/team-a", rel.namespace, "status"),
        ("get", "resourceclaimtemplates.resource.k8s.io/t", rel.governed),
    ]
    denied = [
        # GPU budgets: only in its own namespace, never deleted.
        ("create", "gpubudgets.mlgate.io", rel.governed),
        ("delete", "gpubudgets.mlgate.io/team-a", rel.namespace),
        # Secrets: only its own TLS Secret and the listed key Secret.
        ("get", "secrets/anything", "default"),
        ("list", "secrets", ""),
        ("list", "secrets", rel.namespace),
        ("watch", "secrets", rel.keys_namespace),
        ("get", "secrets/other-keys", rel.keys_namespace),
        ("get", "secrets/other", rel.namespace),
        ("update", "secrets/other", rel.namespace),
        ("delete", f"secrets/{rel.tls_secret}", rel.namespace),
        ("create", "secrets", rel.keys_namespace),
        ("create", "secrets", "default"),
        # Workloads and policies: read what judging needs, never write.
        ("create", "pods", rel.governed),
        ("delete", "pods/x", rel.governed),
        ("create", "pods/x", rel.governed, "exec"),
        ("update", "deployments.apps/web", rel.governed),
        ("patch", "deployments.apps/web", rel.governed, "scale"),
        ("create", "clustermlpolicies.mlgate.io", ""),
        ("update", "clustermlpolicies.mlgate.io/p", ""),
        ("patch", "mlpolicies.mlgate.io/p", rel.governed),
        ("delete", "approvedmodels.mlgate.io/m", ""),
        # NetworkPolicies but mlgate-egress, webhook configurations, RBAC, anything else.
        ("delete", "networkpolicies.networking.k8s.io/allow-all", rel.governed),
        ("patch", "networkpolicies.networking.k8s.io/allow-all", rel.governed),
        ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/other", ""),
        ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io", ""),
        ("delete", f"validatingwebhookconfigurations.admissionregistration.k8s.io/{rel.name}", ""),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/x", ""),
        ("delete", f"mutatingwebhookconfigurations.admissionregistration.k8s.io/{rel.name}", ""),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
        ("escalate", "clusterroles.rbac.authorization.k8s.io/x", ""),
        ("update", "namespaces/default", ""),
        ("get", "configmaps/x", rel.namespace),
        ("create", "serviceaccounts/x", rel.namespace, "token"),
        ("impersonate", "users/admin", ""),
        # Leases: its own, in its own namespace, never listed, patched or deleted.
        ("get", "leases.coordination.k8s.io/other", rel.namespace),
        ("update", "leases.coordination.k8s.io/other", rel.namespace),
        ("update", f"leases.coordination.k8s.io/{rel.lease}", "kube-system"),
        ("create", "leases.coordination.k8s.io", "kube-system"),
        ("list", "leases.coordination.k8s.io", rel.namespace),
        ("watch", "leases.coordination.k8s.io", ""),
        ("patch", f"leases.coordination.k8s.io/{rel.lease}", rel.namespace),
        ("delete", f"leases.coordination.k8s.io/{rel.lease}", rel.namespace),
        ("patch", "clusterkopfpeerings.kopf.dev/other", ""),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io/x", ""),
        # PolicyReports: only its own report, never other tools'.
        ("patch", "policyreports.wgpolicyk8s.io/kyverno-report", rel.governed),
        ("delete", "clusterpolicyreports.wgpolicyk8s.io/other", ""),
        ("update", "policyreports.wgpolicyk8s.io/mlgate-audit", rel.governed),
    ]
    answers = access(control_plane, rel, allowed + denied)
    expected = [True] * len(allowed) + [False] * len(denied)
    wrong = [
        c for c, got, want in zip(allowed + denied, answers, expected, strict=True) if got != want
    ]
    assert not wrong, f"RBAC differs from least privilege (allowed <-> denied): {wrong}"
