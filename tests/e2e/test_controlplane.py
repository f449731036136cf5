"""The local control plane is a real Kubernetes API: CRD schemas, RBAC and admission webhooks."""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlgate.devcluster import (
    CertificateAuthority,
    Cluster,
    ExistingCluster,
    LocalControlPlane,
)

from .conftest import REPO_ROOT

CRD_DIR = REPO_ROOT / "crds"
GROUP = "mlgate.io"
KINDS = {  # kind -> (plural, namespaced)
    "ClusterMLPolicy": ("clustermlpolicies", False),
    "MLPolicy": ("mlpolicies", True),
    "ApprovedModel": ("approvedmodels", False),
}


def _deployment(name: str, namespace: str) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause"}]},
                },
            },
        }
    )


def test_api_is_up(control_plane: Cluster) -> None:
    version = control_plane.kubectl("version", "-o", "json", check=True)
    server = json.loads(version.stdout)["serverVersion"]
    assert server["major"] == "1"
    assert control_plane.kubectl("get", "--raw", "/readyz", check=True).stdout == "ok"


# --------------------------------------------------------------------------------------------------
# CRDs


@pytest.fixture(scope="module")
def crds(control_plane: Cluster) -> list[Path]:
    files = sorted(CRD_DIR.glob("*.yaml"))
    assert files, f"no CRDs in {CRD_DIR}: run `make crds`"
    for path in files:
        control_plane.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(path), check=True
        )
    names = [f"crd/{plural}.{GROUP}" for plural, _ in KINDS.values()]
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *names, check=True
    )
    return files


def _policy(kind: str, spec: dict[str, Any], namespace: str | None = None) -> str:
    metadata: dict[str, Any] = {"name": "e2e-schema"}
    if namespace:
        metadata["namespace"] = namespace
    return json.dumps(
        {"apiVersion": f"{GROUP}/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}
    )


def test_crds_are_served_with_the_right_scope(control_plane: Cluster, crds: list[Path]) -> None:
    out = control_plane.kubectl(
        "api-resources", f"--api-group={GROUP}", "--no-headers", "-o", "wide", check=True
    ).stdout
    served = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for kind, (plural, namespaced) in KINDS.items():
        assert plural in served, f"{kind} ({plural}) not served: {out}"
        assert kind in served[plural]
        assert str(namespaced).lower() in served[plural]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"mode": "Bogus"}, "spec.mode"),
        ({"mode": "Enforce", "gpu": {"maxPerPod": -1}}, "spec.gpu.maxPerPod"),
    ],
    ids=["bogus-mode", "negative-maxPerPod"],
)
@pytest.mark.parametrize("kind", ["ClusterMLPolicy", "MLPolicy"])
def test_apiserver_rejects_invalid_policies(
    control_plane: Cluster,
    crds: list[Path],
    namespace: str,
    kind: str,
    spec: dict[str, Any],
    field: str,
) -> None:
    ns = namespace if KINDS[kind][1] else None
    result = control_plane.kubectl(
        "create", "--dry-run=server", "-f", "-", input=_policy(kind, spec, ns)
    )
    assert result.returncode != 0, f"{kind} with {spec} was accepted"
    assert "invalid" in result.stderr.lower()
    assert field in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["ClusterMLPolicy", "MLPolicy"])
def test_apiserver_accepts_a_valid_policy(
    control_plane: Cluster, crds: list[Path], namespace: str, kind: str
) -> None:
    ns = namespace if KINDS[kind][1] else None
    spec = {"mode": "Audit", "gpu": {"maxPerPod": 0}}
    control_plane.kubectl(
        "create", "--dry-run=server", "-f", "-", input=_policy(kind, spec, ns), check=True
    )


# --------------------------------------------------------------------------------------------------
# Admission webhooks reach a server on the host


class _Webhook:
    """A tiny HTTPS ValidatingWebhook: denies objects whose name starts with ``deny-``."""

    message = "mlgate-e2e-webhook says no"

    def __init__(self, tmp: Path) -> None:
        self.ca = CertificateAuthority("e2e-webhook-ca")
        cert, key = self.ca.issue_files(
            tmp, "webhook", "e2e-webhook", ip_addresses=["127.0.0.1"], server=True
        )
        self.requests: list[dict[str, Any]] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = body["request"]
                webhook.requests.append(request)
                name = request["object"]["metadata"]["name"]
                allowed = not name.startswith("deny-")
                response: dict[str, Any] = {"uid": request["uid"], "allowed": allowed}
                if not allowed:
                    response["status"] = {"code": 403, "message": f"{webhook.message}: {name}"}
                payload = json.dumps(
                    {"apiVersion": body["apiVersion"], "kind": body["kind"], "response": response}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/validate"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def webhook() -> Iterator[_Webhook]:
    with tempfile.TemporaryDirectory() as tmp, _Webhook(Path(tmp)) as hook:
        yield hook


def test_validating_webhook_is_called(
    control_plane: Cluster, namespace: str, webhook: _Webhook
) -> None:
    config_name = f"{namespace}-deny"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": config_name},
        "webhooks": [
            {
                "name": "deny.e2e.mlgate.io",
                "clientConfig": {
                    "url": webhook.url,
                    "caBundle": base64.b64encode(webhook.ca.cert_pem).decode(),
                },
                "rules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["deployments"],
                    }
                ],
                # Only this test's namespace: never affects other tests.
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(config), check=True)
    try:
        # The apiserver picks up webhook configurations asynchronously: probe with dry-run
        # (the webhook has no side effects, so it is called for dry-run requests too).
        deadline = time.monotonic() + 30
        while True:
            probe = control_plane.kubectl(
                "create", "--dry-run=server", "-f", "-", input=_deployment("deny-probe", namespace)
            )
            if probe.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert webhook.message in probe.stderr, probe.stderr

        denied = control_plane.kubectl("create", "-f", "-", input=_deployment("deny-me", namespace))
        assert denied.returncode != 0
        assert f"{webhook.message}: deny-me" in denied.stderr
        assert 'admission webhook "deny.e2e.mlgate.io" denied the request' in denied.stderr

        control_plane.kubectl(
            "create", "-f", "-", input=_deployment("allow-me", namespace), check=True
        )
        control_plane.kubectl("get", "deployment", "allow-me", "-n", namespace, check=True)
        absent = control_plane.kubectl("get", "deployment", "deny-me", "-n", namespace)
        assert absent.returncode != 0

        seen = [(r["name"], r["operation"], r["dryRun"]) for r in webhook.requests]
        assert ("deny-me", "CREATE", False) in seen
        assert ("allow-me", "CREATE", False) in seen
        assert all(r["namespace"] == namespace for r in webhook.requests)
    finally:
        control_plane.kubectl(
            "delete", "validatingwebhookconfiguration", config_name, "--ignore-not-found"
        )


# --------------------------------------------------------------------------------------------------
# Users, RBAC, and the devcluster interface itself


def test_client_certificates_authenticate_users_under_rbac(
    control_plane: Cluster, namespace: str
) -> None:
    if not isinstance(control_plane, LocalControlPlane):
        pytest.skip("minting client certificates needs the local control plane's CA key")
    kubeconfig = control_plane.user_kubeconfig("e2e-alice", groups=["e2e-team"])
    who = control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig, check=True)
    user = json.loads(who.stdout)["status"]["userInfo"]
    assert user["username"] == "e2e-alice"
    assert "e2e-team" in user["groups"]

    denied = control_plane.kubectl("get", "pods", "-n", namespace, kubeconfig=kubeconfig)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()

    # Not the `view` ClusterRole: aggregated roles stay empty without a controller-manager.
    control_plane.kubectl(
        "create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", namespace,
        check=True,
    )  # fmt: skip
    control_plane.kubectl(
        "create", "rolebinding", "e2e-pod-reader", "--role=pod-reader", "--group=e2e-team",
        "-n", namespace, check=True,
    )  # fmt: skip
    # The RBAC authorizer sees new bindings through an informer: allow it a moment.
    deadline = time.monotonic() + 15
    while True:
        allowed = control_plane.kubectl("get", "pods", "-n", namespace, kubeconfig=kubeconfig)
        if allowed.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert allowed.returncode == 0, allowed.stderr


def test_existing_cluster_mode_uses_a_kubeconfig(control_plane: Cluster) -> None:
    existing = ExistingCluster(kubeconfig=control_plane.kubeconfig)
    with existing:
        assert existing.server == control_plane.server
        assert existing.kubectl("get", "namespace", "default", check=True).returncode == 0


def test_a_second_control_plane_starts_and_leaves_nothing_behind(
    control_plane: Cluster,
) -> None:
    if not isinstance(control_plane, LocalControlPlane):
        pytest.skip("needs KUBEBUILDER_ASSETS")
    with LocalControlPlane(control_plane.assets_dir) as second:
        assert second.server != control_plane.server
        second.kubectl("create", "namespace", "only-in-second", check=True)
        assert control_plane.kubectl("get", "namespace", "only-in-second").returncode != 0
        pids, workdir = second.pids, second.workdir
        assert len(pids) == 2
    assert not second.running()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    assert not workdir.exists()
