"""Self-managed webhook certificates against a real kube-apiserver.

The Secret is shared by replicas that race; the caBundle is what the apiserver really trusts when
it calls the webhook, so the last test lets the apiserver dial a server using our certificates.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from mlgate.cluster.client import JSON, ApiError, KubeClient, login, resource_path
from mlgate.devcluster import Cluster
from mlgate.webhook.certs import (
    CA_CERT,
    CA_KEY,
    TLS_CERT,
    Bundle,
    CertSpec,
    SecretCertificates,
    SyncOutcome,
    decode_certs,
    reload,
    server_ssl_context,
    service_dns_names,
    utcnow,
)

pytestmark = pytest.mark.e2e

SECRET = "mlgate-tls"
WEBHOOKS = resource_path("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations")


@contextlib.asynccontextmanager
async def kube_client(
    control_plane: Cluster, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[KubeClient]:
    """A KubeClient logged in with the control plane's admin kubeconfig.

    A context manager rather than an async fixture: the aiohttp session must live on the test's
    event loop.
    """
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    async with KubeClient(login()) as client:
        yield client


def _spec(namespace: str) -> CertSpec:
    return CertSpec(
        dns_names=service_dns_names("mlgate", namespace)[2:], ip_addresses=("127.0.0.1",)
    )


def _manager(namespace: str, tmp_path: Path, replica: str) -> SecretCertificates:
    return SecretCertificates(namespace, SECRET, _spec(namespace), directory=tmp_path / replica)


async def _secret(client: KubeClient, namespace: str) -> tuple[JSON, dict[str, bytes]]:
    secret = await client.get(resource_path("v1", "secrets", namespace, SECRET))
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    return secret, data


async def test_ensure_creates_the_secret_once(
    control_plane: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with kube_client(control_plane, monkeypatch) as client:
        bundle = await _manager(namespace, tmp_path, "a").ensure(client)
        secret, data = await _secret(client, namespace)
        assert secret["type"] == "kubernetes.io/tls"
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlgate"
        assert set(data) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
        assert bundle.cert_path.read_bytes() == data[TLS_CERT]
        assert bundle.ca_pem == data[CA_CERT]

        again = await _manager(namespace, tmp_path, "b").ensure(client)
        unchanged, _ = await _secret(client, namespace)
        assert again.fingerprint == bundle.fingerprint
        assert unchanged["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]


async def test_concurrent_replicas_converge_and_rotation_keeps_the_ca(
    control_plane: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        kube_client(control_plane, monkeypatch) as first,
        kube_client(control_plane, monkeypatch) as second,
    ):
        replicas = [_manager(namespace, tmp_path, name) for name in ("r1", "r2", "r3", "r4")]
        clients = [first, second, first, second]
        bundles = await asyncio.gather(
            *(r.ensure(c) for r, c in zip(replicas, clients, strict=True))
        )
        assert len({b.fingerprint for b in bundles}) == 1
        _, data = await _secret(first, namespace)
        assert all(b.cert_path.read_bytes() == data[TLS_CERT] for b in bundles)

        # 300 days on, a one-year leaf is in its last third; the ten-year CA is not.
        later = utcnow() + timedelta(days=300)
        rotated = await asyncio.gather(
            *(r.ensure(c, later) for r, c in zip(replicas, clients, strict=True))
        )
        assert len({b.fingerprint for b in rotated}) == 1
        assert rotated[0].fingerprint != bundles[0].fingerprint
        _, after = await _secret(first, namespace)
        assert after[TLS_CERT] != data[TLS_CERT]
        assert after[CA_CERT] == data[CA_CERT] and after[CA_KEY] == data[CA_KEY]
        assert rotated[0].ca_pem == bundles[0].ca_pem  # the caBundle stays valid


def _webhook_config(name: str, url: str, namespace: str, failure_policy: str) -> JSON:
    def webhook(prefix: str) -> JSON:
        return {
            "name": f"{prefix}.certs.e2e.mlgate.io",
            "clientConfig": {"url": url},
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["configmaps"],
                }
            ],
            # Only this test's namespace: never affects other tests.
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": failure_policy,
            "timeoutSeconds": 5,
        }

    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook("first"), webhook("second")],
    }


@contextlib.asynccontextmanager
async def webhook_configuration(
    client: KubeClient, control_plane: Cluster, body: JSON
) -> AsyncIterator[str]:
    name = body["metadata"]["name"]
    await client.create(WEBHOOKS, body)
    try:
        yield name
    finally:  # the test cleans up after itself; mlgate itself never deletes it
        control_plane.kubectl(
            "delete", "validatingwebhookconfiguration", name, "--ignore-not-found"
        )


async def _ca_bundles(client: KubeClient, name: str) -> list[bytes]:
    config = await client.get(f"{WEBHOOKS}/{name}")
    return [base64.b64decode(w["clientConfig"].get("caBundle", "")) for w in config["webhooks"]]


async def test_sync_ca_bundle_sets_every_webhook(
    control_plane: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"{namespace}-certs"
    # Nothing listens on port 9; failurePolicy Ignore and this namespace only keep it harmless.
    body = _webhook_config(name, "https://127.0.0.1:9/validate", namespace, "Ignore")
    async with (
        kube_client(control_plane, monkeypatch) as client,
        webhook_configuration(client, control_plane, body),
    ):
        manager = _manager(namespace, tmp_path, "a")
        bundle = await manager.ensure(client)
        result = await manager.sync_ca_bundle(client, [name, f"{name}-absent"])
        assert result.outcomes == {
            name: SyncOutcome.UPDATED,
            f"{name}-absent": SyncOutcome.MISSING,
        }
        assert await _ca_bundles(client, name) == [bundle.ca_pem, bundle.ca_pem]
        assert (await manager.sync_ca_bundle(client, [name])).outcomes == {
            name: SyncOutcome.UNCHANGED
        }

        # The read-modify-write relies on a merge patch with a stale resourceVersion being
        # refused by the apiserver with 409.
        with pytest.raises(ApiError) as conflict:
            await client.patch(f"{WEBHOOKS}/{name}", {"metadata": {"resourceVersion": "1"}})
        assert conflict.value.status == 409


# --- the apiserver really trusts the caBundle ---------------------------------------------------


@contextlib.asynccontextmanager
async def webhook_server(bundle: Bundle) -> AsyncIterator[tuple[ssl.SSLContext, str, list[Any]]]:
    """An HTTPS admission webhook on 127.0.0.1 that allows everything; yields (ctx, url, calls)."""
    calls: list[Any] = []

    async def validate(request: web.Request) -> web.Response:
        review = await request.json()
        calls.append(review["request"]["name"])
        response = {"uid": review["request"]["uid"], "allowed": True}
        return web.json_response(
            {"apiVersion": review["apiVersion"], "kind": review["kind"], "response": response}
        )

    app = web.Application()
    app.router.add_post("/validate", validate)
    runner = web.AppRunner(app)
    await runner.setup()
    context = server_ssl_context(bundle.cert_path, bundle.key_path)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield context, f"https://127.0.0.1:{port}/validate", calls
    finally:
        await runner.cleanup()


async def _create_configmap(client: KubeClient, namespace: str, name: str) -> None:
    """A server-side dry run: admission runs (no side effects declared), nothing is stored."""
    await client.request(
        "POST",
        resource_path("v1", "configmaps", namespace),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}},
        params={"dryRun": "All"},
    )


async def _admitted(client: KubeClient, namespace: str, name: str) -> None:
    """Retry until the apiserver admits: it picks up webhook configuration changes lazily."""
    async with asyncio.timeout(30):
        while True:
            try:
                await _create_configmap(client, namespace, name)
                return
            except ApiError:
                await asyncio.sleep(0.2)


async def _rejected(client: KubeClient, namespace: str, name: str) -> ApiError:
    """Retry until the apiserver refuses: a new webhook configuration takes a moment to apply."""
    async with asyncio.timeout(30):
        while True:
            try:
                await _create_configmap(client, namespace, name)
            except ApiError as exc:
                return exc
            await asyncio.sleep(0.2)


async def test_apiserver_trusts_the_synced_ca_bundle_across_a_ca_rotation(
    control_plane: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"{namespace}-trust"
    async with kube_client(control_plane, monkeypatch) as client:
        manager = _manager(namespace, tmp_path, "a")
        bundle = await manager.ensure(client)
        async with webhook_server(bundle) as (context, url, calls):
            body = _webhook_config(name, url, namespace, "Fail")
            async with webhook_configuration(client, control_plane, body):
                # Without a caBundle the apiserver cannot verify us: failing closed.
                untrusted = await _rejected(client, namespace, "untrusted")
                assert "x509" in untrusted.message or "certificate" in untrusted.message
                assert calls == []

                await manager.sync_ca_bundle(client, [name])
                await _admitted(client, namespace, "trusted")
                assert "trusted" in calls

                await _rotate_ca_while_serving(client, manager, namespace, name, context, calls)


async def _rotate_ca_while_serving(
    client: KubeClient,
    manager: SecretCertificates,
    namespace: str,
    config: str,
    context: ssl.SSLContext,
    calls: list[Any],
) -> None:
    # Spoil ca.key so the next pass must generate a new CA now (a far-future `now` would issue
    # certificates the apiserver considers not yet valid).
    await client.patch(
        resource_path("v1", "secrets", namespace, SECRET),
        {"data": {CA_KEY: base64.b64encode(b"spoiled").decode()}},
    )
    reloaded: list[Bundle] = []
    assert await manager.reconcile_once(client, [config], reloaded.append)
    assert len(reloaded) == 1
    trusted = decode_certs(reloaded[0].ca_pem)
    assert len(trusted) == 2  # new CA first, the old one kept for the overlap
    new_leaf = decode_certs(reloaded[0].cert_path.read_bytes())[0]
    new_leaf.verify_directly_issued_by(trusted[0])
    assert await _ca_bundles(client, config) == [reloaded[0].ca_pem] * 2
    # The server still presents the old leaf (the callback only recorded the bundle): the old CA
    # in the overlap keeps it trusted.
    calls.clear()
    await _admitted(client, namespace, "old-leaf-new-bundle")
    assert set(calls) == {"old-leaf-new-bundle"}  # both webhooks of the configuration call us

    reload(context, reloaded[0].cert_path, reloaded[0].key_path)
    await _admitted(client, namespace, "new-leaf")
    assert set(calls) == {"old-leaf-new-bundle", "new-leaf"}
