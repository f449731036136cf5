"""Webhook serving certificates: PKI helpers, rotation plan, Secret races, files mode, live TLS."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ipaddress
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mlgate.cluster.client import JSON, ApiError
from mlgate.webhook import certs
from mlgate.webhook.certs import (
    CA_CERT,
    CA_KEY,
    MIN_REMAINING,
    TLS_CERT,
    TLS_KEY,
    Action,
    Bundle,
    CertificateError,
    CertSpec,
    FileCertificates,
    SecretCertificates,
    SyncOutcome,
    decode_certs,
    decode_key_pair,
    generate_ca,
    issue_serving,
    mutating,
    needs_rotation,
    patch_ca_bundles,
    plan_secret,
    reload,
    renew_secret,
    rotation_due,
    server_ssl_context,
    service_dns_names,
    with_ca_bundle,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
DNS = service_dns_names("mlgate", "mlgate-system")[2:]  # the .svc and .svc.cluster.local names
IPS = ("127.0.0.1",)
SPEC = CertSpec(dns_names=DNS, ip_addresses=IPS)
YEAR = timedelta(days=365)


@pytest.fixture(scope="module")
def ca() -> certs.KeyPair:
    return generate_ca("test-ca", 10 * YEAR, now=NOW)


@pytest.fixture(scope="module")
def leaf(ca: certs.KeyPair) -> certs.KeyPair:
    return issue_serving(ca, DNS, IPS, YEAR, now=NOW)


# --- generation ------------------------------------------------------------------------------


def test_ca_is_a_p256_signing_ca(ca: certs.KeyPair) -> None:
    assert isinstance(ca.key.curve, ec.SECP256R1)
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    ca.cert.verify_directly_issued_by(ca.cert)  # self-signed
    assert ca.cert.not_valid_before_utc < NOW < ca.cert.not_valid_after_utc


def test_leaf_has_sans_eku_and_is_not_a_ca(leaf: certs.KeyPair) -> None:
    assert isinstance(leaf.key.curve, ec.SECP256R1)
    san = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(DNS)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


def test_leaf_signature_verifies_with_the_ca_public_key(
    ca: certs.KeyPair, leaf: certs.KeyPair
) -> None:
    hash_algorithm = leaf.cert.signature_hash_algorithm
    assert hash_algorithm is not None
    ca.key.public_key().verify(
        leaf.cert.signature, leaf.cert.tbs_certificate_bytes, ec.ECDSA(hash_algorithm)
    )
    assert leaf.cert.issuer == ca.cert.subject


def test_leaf_never_outlives_its_ca(ca: certs.KeyPair) -> None:
    long = issue_serving(ca, DNS, valid_for=100 * YEAR, now=NOW)
    assert long.cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_leaf_needs_a_name(ca: certs.KeyPair) -> None:
    with pytest.raises(ValueError, match="at least one"):
        issue_serving(ca, (), (), YEAR, now=NOW)


def test_pem_round_trip(leaf: certs.KeyPair, ca: certs.KeyPair) -> None:
    again = decode_key_pair(leaf.cert_pem, leaf.key_pem)
    assert again.cert == leaf.cert
    assert again.key_pem == leaf.key_pem
    with pytest.raises(CertificateError, match="does not belong"):
        decode_key_pair(leaf.cert_pem, ca.key_pem)
    with pytest.raises(CertificateError):
        decode_certs(b"garbage")


def test_service_dns_names() -> None:
    assert service_dns_names("mlgate", "ns") == (
        "mlgate",
        "mlgate.ns",
        "mlgate.ns.svc",
        "mlgate.ns.svc.cluster.local",
    )


# --- needs_rotation --------------------------------------------------------------------------


def test_fresh_certificate_needs_nothing(ca: certs.KeyPair, leaf: certs.KeyPair) -> None:
    assert needs_rotation(leaf.cert_pem, ca.cert_pem, NOW, DNS, IPS) is None


@pytest.mark.parametrize(
    ("cert_pem", "ca_pem", "reason"),
    [
        (None, b"x", "serving certificate missing"),
        (b"x", b"", "CA certificate missing"),
        (b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n", None, "CA"),
        (b"not pem at all", b"still not", "unparsable"),
    ],
)
def test_missing_or_garbage(cert_pem: bytes | None, ca_pem: bytes | None, reason: str) -> None:
    result = needs_rotation(cert_pem, ca_pem, NOW, DNS)
    assert result is not None and reason in result


def test_garbage_leaf_with_valid_ca(ca: certs.KeyPair) -> None:
    result = needs_rotation(b"garbage", ca.cert_pem, NOW, DNS)
    assert result is not None and result.startswith("unparsable")


def test_expiring_within_a_third_of_lifetime(ca: certs.KeyPair, leaf: certs.KeyPair) -> None:
    lifetime = leaf.cert.not_valid_after_utc - leaf.cert.not_valid_before_utc
    third_left = leaf.cert.not_valid_after_utc - lifetime / 3
    assert needs_rotation(leaf.cert_pem, ca.cert_pem, third_left - timedelta(hours=1), DNS) is None
    reason = needs_rotation(leaf.cert_pem, ca.cert_pem, third_left + timedelta(hours=1), DNS)
    assert reason is not None and "serving certificate expires" in reason


def test_thirty_days_floor_for_short_certificates(ca: certs.KeyPair) -> None:
    short = issue_serving(ca, DNS, valid_for=timedelta(days=60), now=NOW)
    end = short.cert.not_valid_after_utc
    assert not rotation_due(short.cert, end - MIN_REMAINING - timedelta(hours=1))
    assert rotation_due(short.cert, end - MIN_REMAINING + timedelta(hours=1))


def test_wrong_san(ca: certs.KeyPair) -> None:
    other = issue_serving(ca, ["other.default.svc"], now=NOW)
    reason = needs_rotation(other.cert_pem, ca.cert_pem, NOW, DNS, IPS)
    assert reason is not None
    assert "does not cover" in reason and DNS[0] in reason and "127.0.0.1" in reason


def test_ip_only_missing(ca: certs.KeyPair) -> None:
    dns_only = issue_serving(ca, DNS, now=NOW)
    assert needs_rotation(dns_only.cert_pem, ca.cert_pem, NOW, DNS) is None
    assert "127.0.0.1" in (needs_rotation(dns_only.cert_pem, ca.cert_pem, NOW, DNS, IPS) or "")


def test_wildcard_covers_one_label(ca: certs.KeyPair) -> None:
    wildcard = issue_serving(ca, ["*.mlgate-system.svc"], now=NOW)
    assert needs_rotation(wildcard.cert_pem, ca.cert_pem, NOW, ["mlgate.mlgate-system.svc"]) is None
    assert needs_rotation(wildcard.cert_pem, ca.cert_pem, NOW, ["a.b.mlgate-system.svc"])


def test_wrong_ca(leaf: certs.KeyPair) -> None:
    stranger = generate_ca("test-ca", 10 * YEAR, now=NOW)  # same subject, different key
    assert needs_rotation(leaf.cert_pem, stranger.cert_pem, NOW, DNS) == (
        "serving certificate is not signed by the CA"
    )


def test_any_ca_of_the_bundle_may_have_signed(ca: certs.KeyPair, leaf: certs.KeyPair) -> None:
    stranger = generate_ca("other", 10 * YEAR, now=NOW)
    assert needs_rotation(leaf.cert_pem, stranger.cert_pem + ca.cert_pem, NOW, DNS) is None


def test_expiring_ca(ca: certs.KeyPair) -> None:
    late = NOW + 8 * YEAR  # CA has 2 of 10 years left; a fresh leaf from it is fine by itself
    fresh_leaf = issue_serving(ca, DNS, now=late)
    reason = needs_rotation(fresh_leaf.cert_pem, ca.cert_pem, late, DNS)
    assert reason is not None and reason.startswith("CA expires")


# --- CertSpec --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dns_names": ()},
        {"dns_names": DNS, "ip_addresses": ("not-an-ip",)},
        {"dns_names": DNS, "leaf_validity": timedelta(days=30)},
        {"dns_names": DNS, "ca_validity": YEAR},
    ],
)
def test_spec_rejects_configurations_that_cannot_work(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CertSpec(**kwargs)


# --- rotation plan ---------------------------------------------------------------------------


def _fresh() -> dict[str, bytes]:
    return renew_secret(None, Action.CA, NOW, SPEC)


def test_plan_for_a_missing_secret() -> None:
    assert plan_secret(None, NOW, SPEC)[0] is Action.CA
    data = _fresh()
    assert plan_secret(data, NOW, SPEC) == (Action.KEEP, "certificates are valid")
    assert len(decode_certs(data[CA_CERT])) == 1


def test_expiring_leaf_keeps_the_ca() -> None:
    data = _fresh()
    later = NOW + timedelta(days=300)
    action, reason = plan_secret(data, later, SPEC)
    assert action is Action.LEAF and "serving certificate expires" in reason
    renewed = renew_secret(data, action, later, SPEC)
    assert renewed[CA_CERT] == data[CA_CERT] and renewed[CA_KEY] == data[CA_KEY]
    assert renewed[TLS_CERT] != data[TLS_CERT]
    assert plan_secret(renewed, later, SPEC)[0] is Action.KEEP


def test_new_names_reissue_the_leaf_only() -> None:
    data = _fresh()
    wider = CertSpec(dns_names=(*DNS, "mlgate.example"), ip_addresses=IPS)
    action, reason = plan_secret(data, NOW, wider)
    assert action is Action.LEAF and "mlgate.example" in reason


def test_mismatched_or_missing_leaf_key_reissues_the_leaf() -> None:
    data = _fresh()
    assert plan_secret({**data, TLS_KEY: data[CA_KEY]}, NOW, SPEC)[0] is Action.LEAF
    assert plan_secret({k: v for k, v in data.items() if k != TLS_KEY}, NOW, SPEC)[0] is Action.LEAF


@pytest.mark.parametrize("broken", [{CA_KEY: b"junk"}, {CA_CERT: b"junk"}, {CA_KEY: None}])
def test_unusable_ca_means_a_new_ca(broken: dict[str, bytes | None]) -> None:
    data: dict[str, bytes] = {k: v for k, v in {**_fresh(), **broken}.items() if v is not None}
    action, reason = plan_secret(data, NOW, SPEC)
    assert action is Action.CA and reason.startswith("CA unusable")


def test_ca_rotation_keeps_the_old_ca_trusted_for_the_overlap() -> None:
    data = _fresh()
    old_ca = decode_certs(data[CA_CERT])[0]
    late = NOW + 7 * YEAR  # 3 of 10 years left: due
    action, _ = plan_secret(data, late, SPEC)
    assert action is Action.CA
    rotated = renew_secret(data, action, late, SPEC)
    trusted = decode_certs(rotated[CA_CERT])
    assert len(trusted) == 2 and trusted[1] == old_ca and trusted[0] != old_ca
    new_ca = decode_key_pair(rotated[CA_CERT], rotated[CA_KEY])  # ca.key belongs to the first
    decode_certs(rotated[TLS_CERT])[0].verify_directly_issued_by(new_ca.cert)
    assert plan_secret(rotated, late + timedelta(days=1), SPEC)[0] is Action.KEEP

    after_overlap = late + SPEC.ca_overlap + timedelta(minutes=1)
    action, _ = plan_secret(rotated, after_overlap, SPEC)
    assert action is Action.PRUNE
    pruned = renew_secret(rotated, action, after_overlap, SPEC)
    assert decode_certs(pruned[CA_CERT]) == [new_ca.cert]
    assert pruned[TLS_CERT] == rotated[TLS_CERT] and pruned[CA_KEY] == rotated[CA_KEY]


def test_with_ca_bundle_only_reports_real_changes() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
    encoded = base64.b64encode(pem).decode()
    webhooks: list[JSON] = [
        {"name": "a", "clientConfig": {"url": "https://x"}},
        {"name": "b", "clientConfig": {"caBundle": encoded}},
    ]
    updated = with_ca_bundle(webhooks, pem)
    assert updated is not None
    assert [w["clientConfig"]["caBundle"] for w in updated] == [encoded, encoded]
    assert "caBundle" not in webhooks[0]["clientConfig"]  # input untouched
    assert with_ca_bundle(updated, pem) is None


# --- Secret handling against an in-memory apiserver ------------------------------------------


class FakeKube:
    """Just enough apiserver: resourceVersion preconditions, AlreadyExists, scripted errors."""

    def __init__(self) -> None:
        self.objects: dict[str, JSON] = {}
        self.version = 0
        self.errors: list[tuple[str, ApiError]] = []  # (path fragment, error): fails one call
        self.before_write: list[Callable[[], Any]] = []  # run before the next writes

    def _stamp(self, path: str, body: JSON) -> JSON:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.objects[path] = stored
        return copy.deepcopy(stored)

    def fail(self, fragment: str, error: ApiError) -> None:
        self.errors.append((fragment, error))

    def _scripted_error(self, path: str) -> None:
        for index, (fragment, error) in enumerate(self.errors):
            if fragment in path:
                del self.errors[index]
                raise error

    async def _interpose(self, path: str) -> None:
        self._scripted_error(path)
        if self.before_write:
            await self.before_write.pop(0)()

    async def get_or_none(self, path: str) -> JSON | None:
        self._scripted_error(path)
        found = self.objects.get(path)
        return copy.deepcopy(found) if found is not None else None

    async def create(self, path: str, body: JSON) -> JSON:
        await self._interpose(path)
        target = f"{path}/{body['metadata']['name']}"
        if target in self.objects:
            raise ApiError(409, "AlreadyExists", "exists")
        return self._stamp(target, body)

    def _check_version(self, path: str, body: JSON) -> None:
        if path not in self.objects:
            raise ApiError(404, "NotFound", path)
        current = self.objects[path]["metadata"]["resourceVersion"]
        if body["metadata"].get("resourceVersion", current) != current:
            raise ApiError(409, "Conflict", "the object has been modified")

    async def replace(self, path: str, body: JSON) -> JSON:
        await self._interpose(path)
        self._check_version(path, body)
        return self._stamp(path, body)

    async def patch(self, path: str, body: JSON, content_type: str = "") -> JSON:
        await self._interpose(path)
        self._check_version(path, body)
        merged = {**self.objects[path], **{k: v for k, v in body.items() if k != "metadata"}}
        return self._stamp(path, merged)


SECRET_PATH = "/api/v1/namespaces/mlgate-system/secrets/mlgate-tls"
CONFIG_PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/mlgate"


def _manager(tmp_path: Path, name: str = "a", now: datetime = NOW) -> SecretCertificates:
    return SecretCertificates(
        "mlgate-system", "mlgate-tls", SPEC, directory=tmp_path / name, clock=lambda: now
    )


def _secret_data(kube: FakeKube) -> dict[str, bytes]:
    data = kube.objects[SECRET_PATH]["data"]
    return {k: base64.b64decode(v) for k, v in data.items()}


async def test_ensure_creates_the_secret_and_private_files(tmp_path: Path) -> None:
    kube = FakeKube()
    bundle = await _manager(tmp_path).ensure(kube)  # type: ignore[arg-type]
    secret = kube.objects[SECRET_PATH]
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "mlgate"}
    assert "Secret does not exist" in secret["metadata"]["annotations"][certs.REASON_ANNOTATION]
    data = _secret_data(kube)
    assert set(data) == {TLS_CERT, TLS_KEY, CA_CERT, CA_KEY}
    assert bundle.cert_path.read_bytes() == data[TLS_CERT]
    assert bundle.key_path.read_bytes() == data[TLS_KEY]
    assert bundle.ca_pem == data[CA_CERT]
    assert bundle.serial == decode_certs(data[TLS_CERT])[0].serial_number
    for path in (bundle.cert_path, bundle.key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(bundle.cert_path.parent.stat().st_mode) == 0o700


async def test_second_ensure_reuses_the_secret(tmp_path: Path) -> None:
    kube = FakeKube()
    first = await _manager(tmp_path, "a").ensure(kube)  # type: ignore[arg-type]
    version = kube.version
    second = await _manager(tmp_path, "b").ensure(kube)  # type: ignore[arg-type]
    assert second.fingerprint == first.fingerprint and kube.version == version


async def test_create_race_adopts_the_winners_secret(tmp_path: Path) -> None:
    kube = FakeKube()
    winner = _manager(tmp_path, "winner")
    results: list[Bundle] = []

    async def other_replica_wins() -> None:
        results.append(await winner.ensure(kube))  # type: ignore[arg-type]

    kube.before_write.append(other_replica_wins)
    loser = await _manager(tmp_path, "loser").ensure(kube)  # type: ignore[arg-type]
    assert loser.fingerprint == results[0].fingerprint
    assert loser.ca_pem == results[0].ca_pem


async def test_rotation_race_adopts_the_winners_rotation(tmp_path: Path) -> None:
    kube = FakeKube()
    await _manager(tmp_path, "init").ensure(kube)  # type: ignore[arg-type]
    later = NOW + timedelta(days=300)
    winner = _manager(tmp_path, "winner", later)
    results: list[Bundle] = []

    async def other_replica_wins() -> None:
        results.append(await winner.ensure(kube))  # type: ignore[arg-type]

    kube.before_write.append(other_replica_wins)
    loser = await _manager(tmp_path, "loser", later).ensure(kube)  # type: ignore[arg-type]
    assert loser.fingerprint == results[0].fingerprint


async def test_foreign_or_wrong_type_secret_is_never_overwritten(tmp_path: Path) -> None:
    kube = FakeKube()
    foreign = renew_secret(None, Action.CA, NOW, SPEC)
    kube.objects[SECRET_PATH] = {
        "metadata": {"name": "mlgate-tls", "resourceVersion": "1"},
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v).decode() for k, v in foreign.items()},
    }
    with pytest.raises(CertificateError, match="refusing to overwrite"):
        await _manager(tmp_path).ensure(kube, NOW + 5 * YEAR)  # type: ignore[arg-type]
    kube.objects[SECRET_PATH]["type"] = "Opaque"
    with pytest.raises(CertificateError, match="has type 'Opaque'"):
        await _manager(tmp_path).ensure(kube)  # type: ignore[arg-type]


async def test_empty_placeholder_secret_is_filled(tmp_path: Path) -> None:
    kube = FakeKube()
    kube.objects[SECRET_PATH] = {
        "metadata": {"name": "mlgate-tls", "resourceVersion": "1", "labels": {"x": "y"}},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "", "tls.key": ""},
    }
    await _manager(tmp_path).ensure(kube)  # type: ignore[arg-type]
    labels = kube.objects[SECRET_PATH]["metadata"]["labels"]
    assert labels == {"x": "y", "app.kubernetes.io/managed-by": "mlgate"}


async def test_forbidden_is_reported_with_an_rbac_hint(tmp_path: Path) -> None:
    kube = FakeKube()
    kube.fail("/secrets/", ApiError(403, "Forbidden", "secrets is forbidden"))
    with pytest.raises(CertificateError, match="needs get/create/update on secrets"):
        await _manager(tmp_path).ensure(kube)  # type: ignore[arg-type]


def _webhook_config(ca_bundle: str | None = None) -> JSON:
    client_config: JSON = {"url": "https://127.0.0.1:1/validate"}
    if ca_bundle is not None:
        client_config["caBundle"] = ca_bundle
    return {
        "metadata": {"name": "mlgate", "resourceVersion": "1"},
        "webhooks": [{"name": "a.mlgate.io", "clientConfig": client_config}],
    }


async def test_sync_ca_bundle_with_conflict_and_missing(tmp_path: Path) -> None:
    kube = FakeKube()
    manager = _manager(tmp_path)
    kube.objects[CONFIG_PATH] = _webhook_config()

    async def someone_else_edits() -> None:
        kube._stamp(CONFIG_PATH, kube.objects[CONFIG_PATH])

    await manager.ensure(kube)  # type: ignore[arg-type]
    kube.before_write.append(someone_else_edits)  # first patch hits a 409
    result = await manager.sync_ca_bundle(kube, ["mlgate", "absent"])  # type: ignore[arg-type]
    assert result.outcomes == {"mlgate": SyncOutcome.UPDATED, "absent": SyncOutcome.MISSING}
    assert not result.in_step and not result.failed
    bundle = kube.objects[CONFIG_PATH]["webhooks"][0]["clientConfig"]["caBundle"]
    assert base64.b64decode(bundle) == manager.ca_pem
    again = await manager.sync_ca_bundle(kube, ["mlgate"])  # type: ignore[arg-type]
    assert again.outcomes == {"mlgate": SyncOutcome.UNCHANGED} and again.in_step


async def test_ca_rotation_reaches_the_mutating_configuration_too(tmp_path: Path) -> None:
    """Validating and mutating configurations may share a name; each gets the new caBundle."""
    kube = FakeKube()
    mutating_path = CONFIG_PATH.replace("validating", "mutating")
    kube.objects[CONFIG_PATH] = _webhook_config()
    kube.objects[mutating_path] = _webhook_config("c3RhbGU=")
    manager = _manager(tmp_path)
    await manager.ensure(kube)  # type: ignore[arg-type]
    configs = ["mlgate", mutating("mlgate")]
    assert await manager.reconcile_once(kube, configs, lambda _: None)  # type: ignore[arg-type]
    for path in (CONFIG_PATH, mutating_path):
        bundle = kube.objects[path]["webhooks"][0]["clientConfig"]["caBundle"]
        assert base64.b64decode(bundle) == manager.ca_pem, path
    kube.fail("mutatingwebhookconfigurations", ApiError(403, "Forbidden", "no"))
    result = await patch_ca_bundles(kube, configs, b"pem")  # type: ignore[arg-type]
    assert result.names(SyncOutcome.FAILED) == [mutating("mlgate")]
    assert result.names(SyncOutcome.UPDATED) == ["mlgate"]


async def test_sync_reports_api_failures_without_raising() -> None:
    kube = FakeKube()
    kube.fail("validatingwebhookconfigurations", ApiError(403, "Forbidden", "no"))
    result = await patch_ca_bundles(kube, ["mlgate"], b"pem")  # type: ignore[arg-type]
    assert result.failed and result.names(SyncOutcome.FAILED) == ["mlgate"]


async def test_reconcile_once_rotates_syncs_then_reloads(tmp_path: Path) -> None:
    kube = FakeKube()
    kube.objects[CONFIG_PATH] = _webhook_config()
    manager = _manager(tmp_path)
    first = await manager.ensure(kube)  # type: ignore[arg-type]
    seen: list[Bundle] = []
    configs = ["mlgate"]

    assert await manager.reconcile_once(kube, configs, seen.append)  # type: ignore[arg-type]
    assert seen == []  # nothing changed since ensure()

    late = NOW + 7 * YEAR  # CA rotation
    kube.fail("validatingwebhookconfigurations", ApiError(500, "InternalError", "etcd hiccup"))
    assert not await manager.reconcile_once(kube, configs, seen.append, late)  # type: ignore[arg-type]
    assert seen == []  # the new CA is not trusted yet, so the old leaf stays

    assert await manager.reconcile_once(kube, configs, seen.append, late)  # type: ignore[arg-type]
    assert len(seen) == 1 and seen[0].fingerprint != first.fingerprint
    assert len(decode_certs(seen[0].ca_pem)) == 2  # new and old CA during the overlap
    bundle = kube.objects[CONFIG_PATH]["webhooks"][0]["clientConfig"]["caBundle"]
    assert base64.b64decode(bundle) == seen[0].ca_pem


async def test_reconcile_once_survives_api_errors_and_failing_reload(tmp_path: Path) -> None:
    kube = FakeKube()
    manager = _manager(tmp_path)
    kube.fail("/secrets/", ApiError(503, "ServiceUnavailable", "down"))
    assert not await manager.reconcile_once(kube, [], lambda b: None)  # type: ignore[arg-type]

    def broken(_: Bundle) -> None:
        raise CertificateError("boom")

    assert not await manager.reconcile_once(kube, [], broken)  # type: ignore[arg-type]
    calls: list[Bundle] = []
    assert await manager.reconcile_once(kube, [], calls.append)  # type: ignore[arg-type]
    assert len(calls) == 1  # retried after the failed reload


async def test_run_forever_is_cancellable_and_deletes_nothing(tmp_path: Path) -> None:
    kube = FakeKube()
    kube.objects[CONFIG_PATH] = _webhook_config()
    seen: list[Bundle] = []
    task = asyncio.create_task(
        _manager(tmp_path).run_forever(kube, ["mlgate"], seen.append, interval=3600)  # type: ignore[arg-type]
    )
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(seen) == 1
    assert SECRET_PATH in kube.objects and CONFIG_PATH in kube.objects


# --- files mode ------------------------------------------------------------------------------


def _write_pair(directory: Path, pair: certs.KeyPair, ca: certs.KeyPair) -> None:
    (directory / "tls.crt").write_bytes(pair.cert_pem)
    (directory / "tls.key").write_bytes(pair.key_pem)
    (directory / "ca.crt").write_bytes(ca.cert_pem)


def test_file_certificates_follow_rotation(tmp_path: Path, ca: certs.KeyPair) -> None:
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    first = issue_serving(ca, DNS, now=NOW)
    _write_pair(mounted, first, ca)
    files = FileCertificates(
        mounted / "tls.crt", mounted / "tls.key", mounted / "ca.crt", directory=tmp_path / "snap"
    )
    bundle = files.load()
    assert bundle.serial == first.cert.serial_number and bundle.ca_pem == ca.cert_pem
    assert bundle.cert_path.parent == tmp_path / "snap"
    seen: list[Bundle] = []
    assert not files.check(seen.append)

    second = issue_serving(ca, DNS, now=NOW)
    (mounted / "tls.crt").write_bytes(second.cert_pem)  # key not swapped yet: mid-rotation
    assert not files.check(seen.append) and seen == []
    assert bundle.cert_path.read_bytes() == first.cert_pem  # snapshot untouched
    (mounted / "tls.key").write_bytes(second.key_pem)
    assert files.check(seen.append)
    assert [b.serial for b in seen] == [second.cert.serial_number]


def test_file_certificates_report_unusable_files(tmp_path: Path) -> None:
    files = FileCertificates(tmp_path / "nope.crt", tmp_path / "nope.key")
    with pytest.raises(CertificateError, match="cannot read"):
        files.load()
    assert not files.changed()


async def test_file_certificates_run_forever_polls(tmp_path: Path, ca: certs.KeyPair) -> None:
    _write_pair(tmp_path, issue_serving(ca, DNS, now=NOW), ca)
    files = FileCertificates(tmp_path / "tls.crt", tmp_path / "tls.key")
    files.load()
    seen: list[Bundle] = []
    task = asyncio.create_task(files.run_forever(seen.append, interval=0.01))
    _write_pair(tmp_path, issue_serving(ca, DNS, now=NOW), ca)
    for _ in range(200):
        if seen:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert len(seen) == 1


# --- a real TLS handshake --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[ssl.SSLContext, int, certs.KeyPair]]:
    """An asyncio TLS server on 127.0.0.1 serving a fresh leaf; yields (context, port, CA)."""
    authority = generate_ca("handshake-ca", 10 * YEAR)
    pair = issue_serving(authority, ["localhost"], ["127.0.0.1"], YEAR)
    (tmp_path / "a.crt").write_bytes(pair.cert_pem)
    (tmp_path / "a.key").write_bytes(pair.key_pem)
    context = server_ssl_context(tmp_path / "a.crt", tmp_path / "a.key")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    async with server:
        yield context, server.sockets[0].getsockname()[1], authority


async def _served_serial(port: int, ca_pem: bytes) -> int:
    client = ssl.create_default_context(cadata=ca_pem.decode())  # trusts only our CA
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client, server_hostname="127.0.0.1"
    )
    assert await reader.read() == b"ok"
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def test_tls_handshake_and_hot_reload(tmp_path: Path) -> None:
    async with tls_server(tmp_path) as (context, port, authority):
        await _handshake_then_reload(context, port, authority, tmp_path)


async def _handshake_then_reload(
    context: ssl.SSLContext, port: int, authority: certs.KeyPair, tmp_path: Path
) -> None:
    first_serial = await _served_serial(port, authority.cert_pem)

    rotated = issue_serving(authority, ["localhost"], ["127.0.0.1"], YEAR)
    (tmp_path / "b.crt").write_bytes(rotated.cert_pem)
    (tmp_path / "b.key").write_bytes(rotated.key_pem)
    reload(context, tmp_path / "b.crt", tmp_path / "b.key")
    assert await _served_serial(port, authority.cert_pem) == rotated.cert.serial_number
    assert rotated.cert.serial_number != first_serial


async def test_untrusted_ca_fails_the_handshake(tmp_path: Path) -> None:
    stranger = generate_ca("handshake-ca", 10 * YEAR)
    async with tls_server(tmp_path) as (_, port, _):
        with pytest.raises(ssl.SSLCertVerificationError):
            await _served_serial(port, stranger.cert_pem)


async def test_failed_reload_keeps_serving_the_old_certificate(tmp_path: Path) -> None:
    async with tls_server(tmp_path) as (context, port, authority):
        await _bad_reload_is_harmless(context, port, authority, tmp_path)


async def _bad_reload_is_harmless(
    context: ssl.SSLContext, port: int, authority: certs.KeyPair, tmp_path: Path
) -> None:
    before = await _served_serial(port, authority.cert_pem)
    other = issue_serving(authority, ["localhost"], ["127.0.0.1"], YEAR)
    (tmp_path / "bad.crt").write_bytes(other.cert_pem)
    (tmp_path / "bad.key").write_bytes(authority.key_pem)  # wrong key
    with pytest.raises(CertificateError):
        reload(context, tmp_path / "bad.crt", tmp_path / "bad.key")
    assert await _served_serial(port, authority.cert_pem) == before


def test_a_private_directory_mlgate_creates_goes_with_the_process() -> None:
    """Without --tls-dir the serving key lives in a fresh 0700 directory: removed at exit, so
    restarts do not pile up private keys in /tmp."""
    code = (
        "from mlgate.webhook import certs\n"
        "d = certs._private_directory(None)\n"
        "(d / 'tls.key').write_text('key')\n"
        "print(d, oct(d.stat().st_mode & 0o777))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    path, mode = out.stdout.split()
    assert mode == "0o700"
    assert not Path(path).exists()
