"""Serving certificates for the validating webhook.

Two modes, chosen by `mlgate run --cert-mode`:

* ``self`` (`SecretCertificates`): mlgate keeps a CA and a serving certificate in one
  ``kubernetes.io/tls`` Secret shared by every replica, rotates them before they expire and keeps
  the ``caBundle`` of its Validating- and MutatingWebhookConfiguration(s) in step.
* ``files`` (`FileCertificates`): certificate and key are mounted files (e.g. from cert-manager),
  which are polled and reloaded when they change. cert-manager's cainjector owns the caBundle.

Either way the TLS server gets a private, validated snapshot of cert + key, and `reload` swaps the
certificate of a live `ssl.SSLContext` so new handshakes use it without a restart.

Nothing here deletes anything, ever: not on shutdown, not on errors. A webhook configuration or
Secret that vanished with the process would make the apiserver fail (or skip) admission.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import copy
import enum
import hashlib
import ipaddress
import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlgate.cluster.client import JSON, ApiError, KubeClient, resource_path

log = logging.getLogger("mlgate.certs")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")

# Rotate when less than a third of the lifetime is left (cert-manager's default renewBefore) or
# less than MIN_REMAINING, whichever comes first: a month leaves time to notice a failing rotation.
ROTATE_FRACTION = 3
MIN_REMAINING = timedelta(days=30)
# Certificates start slightly in the past so a replica or apiserver whose clock lags still
# accepts a freshly issued one.
CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_CA_VALIDITY = timedelta(days=3650)
DEFAULT_LEAF_VALIDITY = timedelta(days=365)
# After a CA rotation the old CA stays in ca.crt/caBundle this long, so apiservers that still have
# the old caBundle and replicas that still serve the old leaf keep working until all caught up.
DEFAULT_CA_OVERLAP = timedelta(days=7)
# Optimistic-concurrency retries before giving up until the next pass.
MAX_ATTEMPTS = 5

KUBE_TLS_TYPE = "kubernetes.io/tls"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "mlgate"
ROTATED_AT_ANNOTATION = "mlgate.io/cert-rotated-at"
REASON_ANNOTATION = "mlgate.io/cert-rotation-reason"
WEBHOOK_API = "admissionregistration.k8s.io/v1"
WEBHOOK_PLURAL = "validatingwebhookconfigurations"
MUTATING_WEBHOOK_PLURAL = "mutatingwebhookconfigurations"
_WEBHOOK_KINDS = {
    WEBHOOK_PLURAL: "ValidatingWebhookConfiguration",
    MUTATING_WEBHOOK_PLURAL: "MutatingWebhookConfiguration",
}


class CertificateError(Exception):
    """Certificates cannot be obtained, parsed or stored; the message says what to fix."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(now: datetime) -> datetime:
    """cryptography's *_utc properties are aware; comparing them with a naive time would raise."""
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# Pure PKI helpers (no I/O, time passed in)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return encode_cert(self.cert)

    @property
    def key_pem(self) -> bytes:
        return encode_key(self.key)


def encode_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def encode_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def decode_certs(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order; CertificateError if there is none."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from exc
    if not certs:  # pragma: no cover - cryptography already raises for an empty bundle
        raise CertificateError("no certificate in PEM data")
    return certs


def decode_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """An ECDSA private key (the only kind mlgate generates)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"expected an ECDSA key, got {type(key).__name__}")
    return key


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def decode_key_pair(cert_pem: bytes, key_pem: bytes) -> KeyPair:
    """The first certificate of `cert_pem` with its key; CertificateError if they don't match."""
    cert = decode_certs(cert_pem)[0]
    key = decode_key(key_pem)
    if _public_der(cert.public_key()) != _public_der(key.public_key()):
        raise CertificateError("private key does not belong to the certificate")
    return KeyPair(cert, key)


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,  # ECDSA handshakes sign with the leaf key
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def generate_ca(common_name: str, valid_for: timedelta, *, now: datetime | None = None) -> KeyPair:
    """A self-signed ECDSA P-256 CA that may only sign leaves (path length 0)."""
    now = _aware(now or utcnow())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def _sans(
    dns_names: Sequence[str], ip_addresses: Sequence[str | IPAddress]
) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    return sans


def issue(
    ca: KeyPair,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str | IPAddress] = (),
    usages: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.SERVER_AUTH,),
    valid_for: timedelta = DEFAULT_LEAF_VALIDITY,
    now: datetime | None = None,
) -> KeyPair:
    """An ECDSA P-256 leaf signed by `ca`, for the given extended key usages.

    It never outlives the CA: a leaf valid past its issuer would be rejected by verifiers anyway.
    """
    now = _aware(now or utcnow())
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + valid_for, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    sans = _sans(dns_names, ip_addresses)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


def issue_serving(
    ca: KeyPair,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str | IPAddress] = (),
    valid_for: timedelta = DEFAULT_LEAF_VALIDITY,
    *,
    now: datetime | None = None,
) -> KeyPair:
    """A serverAuth certificate for the given names, signed by `ca`."""
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    # Verifiers only look at SANs; the CN is for humans and limited to 64 characters.
    common_name = dns_names[0] if dns_names and len(dns_names[0]) <= 64 else "mlgate-webhook"
    return issue(
        ca,
        common_name,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        valid_for=valid_for,
        now=now,
    )


def rotation_due(cert: x509.Certificate, now: datetime) -> bool:
    """Less than a third of the lifetime, or less than 30 days, remain."""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    remaining = cert.not_valid_after_utc - _aware(now)
    return remaining < max(lifetime / ROTATE_FRACTION, MIN_REMAINING)


def _issuer_of(leaf: x509.Certificate, cas: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for ca in cas:
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def _dns_covered(name: str, present: set[str]) -> bool:
    name = name.lower().rstrip(".")
    if name in present:
        return True
    # A wildcard covers exactly one leftmost label (RFC 6125), e.g. *.ns.svc covers mlgate.ns.svc.
    _, _, parent = name.partition(".")
    return bool(parent) and f"*.{parent}" in present


def missing_names(
    cert: x509.Certificate, dns_names: Sequence[str], ip_addresses: Sequence[str | IPAddress]
) -> list[str]:
    """The required names the certificate's SANs do not cover."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    present_dns = {n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)}
    present_ips = set(san.get_values_for_type(x509.IPAddress))
    missing = [n for n in dns_names if not _dns_covered(n, present_dns)]
    missing += [str(ip) for ip in ip_addresses if ipaddress.ip_address(ip) not in present_ips]
    return missing


def needs_rotation(
    cert_pem: bytes | None,
    ca_pem: bytes | None,
    now: datetime,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str | IPAddress] = (),
) -> str | None:
    """Why the serving certificate must be replaced, or None if it is fine.

    `ca_pem` may hold several CAs (overlap after a CA rotation); the leaf must be signed by one
    of them, and that one must not be due for rotation itself.
    """
    if not cert_pem:
        return "serving certificate missing"
    if not ca_pem:
        return "CA certificate missing"
    try:
        leaf = decode_certs(cert_pem)[0]
        cas = decode_certs(ca_pem)
    except CertificateError as exc:
        return f"unparsable certificate ({exc})"
    issuer = _issuer_of(leaf, cas)
    if issuer is None:
        return "serving certificate is not signed by the CA"
    if rotation_due(issuer, now):
        return f"CA expires {issuer.not_valid_after_utc:%Y-%m-%d}"
    if rotation_due(leaf, now):
        return f"serving certificate expires {leaf.not_valid_after_utc:%Y-%m-%d}"
    missing = missing_names(leaf, dns_names, ip_addresses)
    if missing:
        return f"serving certificate does not cover {', '.join(missing)}"
    return None


def service_dns_names(
    service: str, namespace: str, cluster_domain: str = "cluster.local"
) -> tuple[str, ...]:
    """The names the apiserver may use for a webhook Service (it dials `<svc>.<ns>.svc`)."""
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{cluster_domain}",
    )


def fingerprint(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())  # hash of hashes: no ambiguity at boundaries
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Pure rotation plan for the self-managed Secret


@dataclass(frozen=True)
class CertSpec:
    """What the self-managed certificates must look like (from `mlgate run` options)."""

    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...] = ()
    ca_validity: timedelta = DEFAULT_CA_VALIDITY
    leaf_validity: timedelta = DEFAULT_LEAF_VALIDITY
    ca_overlap: timedelta = DEFAULT_CA_OVERLAP
    ca_common_name: str = "mlgate-ca"

    def __post_init__(self) -> None:
        if not self.dns_names and not self.ip_addresses:
            raise ValueError("the serving certificate needs at least one DNS name or IP address")
        for ip in self.ip_addresses:
            ipaddress.ip_address(ip)  # ValueError names the bad address
        # A fresh certificate must not already be due, or every pass would rotate again.
        if self.leaf_validity < 2 * MIN_REMAINING:
            raise ValueError(f"leaf validity must be at least {2 * MIN_REMAINING.days} days")
        if self.ca_validity < 2 * self.leaf_validity:
            raise ValueError("CA validity must be at least twice the leaf validity")


class Action(enum.Enum):
    """What a pass does to the Secret, from least to most disruptive."""

    KEEP = "keep"
    PRUNE = "drop retired CAs from ca.crt"
    LEAF = "issue a new serving certificate"
    CA = "generate a new CA and serving certificate"


SecretData = dict[str, bytes]


def _current_ca(data: Mapping[str, bytes]) -> KeyPair:
    """ca.crt lists the signing CA first; ca.key is its key."""
    if CA_CERT not in data or CA_KEY not in data:
        raise CertificateError(f"{CA_CERT} or {CA_KEY} missing")
    return decode_key_pair(data[CA_CERT], data[CA_KEY])


def _still_trusted(
    old: x509.Certificate, current: x509.Certificate, now: datetime, overlap: timedelta
) -> bool:
    if old.fingerprint(hashes.SHA256()) == current.fingerprint(hashes.SHA256()):
        return False  # listed separately, first
    # The current CA's notBefore (minus the backdating) marks the rotation moment.
    rotated_at = current.not_valid_before_utc + CLOCK_SKEW
    return old.not_valid_after_utc > now and now < rotated_at + overlap


def _retained(
    data: Mapping[str, bytes], current: x509.Certificate, now: datetime, overlap: timedelta
) -> list[x509.Certificate]:
    try:
        previous = decode_certs(data[CA_CERT])
    except (KeyError, CertificateError):
        return []
    return [ca for ca in previous if _still_trusted(ca, current, now, overlap)]


def plan_secret(
    data: Mapping[str, bytes] | None, now: datetime, spec: CertSpec
) -> tuple[Action, str]:
    """The action the Secret needs and why."""
    now = _aware(now)
    if data is None:
        return Action.CA, "Secret does not exist"
    try:
        ca = _current_ca(data)
    except CertificateError as exc:
        return Action.CA, f"CA unusable: {exc}"
    if rotation_due(ca.cert, now):
        return Action.CA, f"CA expires {ca.cert.not_valid_after_utc:%Y-%m-%d}"
    reason = needs_rotation(data.get(TLS_CERT), ca.cert_pem, now, spec.dns_names, spec.ip_addresses)
    if reason is None:
        try:
            decode_key_pair(data[TLS_CERT], data.get(TLS_KEY, b""))
        except CertificateError as exc:
            reason = f"serving key unusable: {exc}"
    if reason is not None:
        return Action.LEAF, reason
    listed = len(decode_certs(data[CA_CERT]))
    if listed != 1 + len(_retained(data, ca.cert, now, spec.ca_overlap)):
        return Action.PRUNE, "a previous CA is past its overlap period or expired"
    return Action.KEEP, "certificates are valid"


def renew_secret(
    data: Mapping[str, bytes] | None, action: Action, now: datetime, spec: CertSpec
) -> SecretData:
    """The Secret's new data for `action` (which must not be KEEP)."""
    now = _aware(now)
    previous: Mapping[str, bytes] = data or {}
    if action is Action.CA:
        # The timestamp makes each CA's subject distinct, which helps humans and chain builders.
        ca = generate_ca(f"{spec.ca_common_name}@{int(now.timestamp())}", spec.ca_validity, now=now)
    else:
        ca = _current_ca(previous)
    trusted = [ca.cert, *_retained(previous, ca.cert, now, spec.ca_overlap)]
    if action is Action.PRUNE:
        leaf_pem, key_pem = previous[TLS_CERT], previous[TLS_KEY]
    else:
        leaf = issue_serving(ca, spec.dns_names, spec.ip_addresses, spec.leaf_validity, now=now)
        leaf_pem, key_pem = leaf.cert_pem, leaf.key_pem
    return {
        TLS_CERT: leaf_pem,
        TLS_KEY: key_pem,
        CA_CERT: b"".join(encode_cert(c) for c in trusted),
        CA_KEY: ca.key_pem,
    }


def with_ca_bundle(webhooks: Sequence[JSON], ca_pem: bytes) -> list[JSON] | None:
    """`webhooks` with every clientConfig.caBundle set to `ca_pem`, or None if all already are."""
    changed = False
    updated = copy.deepcopy(list(webhooks))
    for webhook in updated:
        client_config = webhook.setdefault("clientConfig", {})
        if _b64decode(client_config.get("caBundle")) != ca_pem:
            client_config["caBundle"] = base64.b64encode(ca_pem).decode()
            changed = True
    return updated if changed else None


def _b64decode(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# Files handed to the TLS server


@dataclass(frozen=True)
class Bundle:
    """What the TLS server serves: private copies of cert and key, plus the CA trust bundle."""

    cert_path: Path
    key_path: Path
    ca_pem: bytes  # PEM, possibly several CAs; empty when unknown (files mode without CA file)
    serial: int
    not_after: datetime
    fingerprint: str = field(repr=False)  # changes exactly when cert or key change


def _private_directory(directory: Path | None) -> Path:
    if directory is None:
        created = Path(tempfile.mkdtemp(prefix="mlgate-tls-"))  # created 0700
        # It holds the serving key: removed when the process ends (a SIGKILL leaves it, in a
        # directory only this user can read).
        atexit.register(shutil.rmtree, created, ignore_errors=True)
        return created
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory


def _write_private(path: Path, content: bytes) -> None:
    """Write 0600 and rename into place, so a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    tmp.replace(path)


def _publish(directory: Path, cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> Bundle:
    """Snapshot a validated cert/key pair for the TLS server."""
    leaf = decode_certs(cert_pem)[0]
    cert_path, key_path = directory / TLS_CERT, directory / TLS_KEY
    _write_private(cert_path, cert_pem)
    _write_private(key_path, key_pem)
    if ca_pem:
        _write_private(directory / CA_CERT, ca_pem)
    return Bundle(
        cert_path=cert_path,
        key_path=key_path,
        ca_pem=ca_pem,
        serial=leaf.serial_number,
        not_after=leaf.not_valid_after_utc,
        fingerprint=fingerprint(cert_pem, key_pem),
    )


OnChange = Callable[[Bundle], None]


def _notify(on_change: OnChange, bundle: Bundle) -> bool:
    try:
        on_change(bundle)
    except Exception:
        log.exception("reloading the serving certificate (serial %x) failed", bundle.serial)
        return False
    log.info(
        "serving certificate switched to serial %x (expires %s)", bundle.serial, bundle.not_after
    )
    return True


# --------------------------------------------------------------------------------------------------
# caBundle of the Validating- and MutatingWebhookConfiguration(s)


class SyncOutcome(enum.Enum):
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    MISSING = "missing"
    FAILED = "failed"


@dataclass(frozen=True)
class SyncResult:
    outcomes: dict[str, SyncOutcome]

    def names(self, outcome: SyncOutcome) -> list[str]:
        return [name for name, o in self.outcomes.items() if o is outcome]

    @property
    def failed(self) -> bool:
        """The apiserver refused or was unreachable: its caBundle may be stale."""
        return SyncOutcome.FAILED in self.outcomes.values()

    @property
    def in_step(self) -> bool:
        return all(
            o in (SyncOutcome.UPDATED, SyncOutcome.UNCHANGED) for o in self.outcomes.values()
        )


def mutating(name: str) -> str:
    """How MutatingWebhookConfiguration `name` is listed among the configurations whose caBundle
    is kept in step; a plain name is a ValidatingWebhookConfiguration (names hold no `/`)."""
    return f"{MUTATING_WEBHOOK_PLURAL}/{name}"


def _webhook_config(listed: str) -> tuple[str, str, str]:
    """(plural, name, kind) of a listed configuration."""
    plural, _, name = listed.rpartition("/")
    plural = plural or WEBHOOK_PLURAL
    return plural, name, f"{_WEBHOOK_KINDS.get(plural, plural)} {name}"


async def _sync_one(client: KubeClient, listed: str, ca_pem: bytes) -> SyncOutcome:
    plural, name, label = _webhook_config(listed)
    path = resource_path(WEBHOOK_API, plural, name=name)
    for _ in range(MAX_ATTEMPTS):
        config = await client.get_or_none(path)
        if config is None:
            log.warning("%s not found; will retry later", label)
            return SyncOutcome.MISSING
        webhooks = with_ca_bundle(config.get("webhooks") or [], ca_pem)
        if webhooks is None:
            return SyncOutcome.UNCHANGED
        # `webhooks` is a list, which a merge patch replaces whole; the resourceVersion makes the
        # read-modify-write safe (409 if anyone changed the object since we read it).
        body = {"metadata": {"resourceVersion": config["metadata"]["resourceVersion"]}}
        try:
            await client.patch(path, {**body, "webhooks": webhooks})
        except ApiError as exc:
            if exc.status != 409:
                raise
            log.info("%s changed meanwhile; re-reading", label)
            continue
        log.info("caBundle of %s updated", label)
        return SyncOutcome.UPDATED
    log.warning("%s keeps changing; will retry later", label)
    return SyncOutcome.FAILED


async def patch_ca_bundles(
    client: KubeClient, config_names: Sequence[str], ca_pem: bytes
) -> SyncResult:
    """Set `ca_pem` as caBundle of every webhook in the named configurations that differs
    (plain names: ValidatingWebhookConfigurations; `mutating(name)`: a mutating one)."""
    outcomes: dict[str, SyncOutcome] = {}
    for name in config_names:
        try:
            outcomes[name] = await _sync_one(client, name, ca_pem)
        except ApiError as exc:
            plural, _, label = _webhook_config(name)
            log.error(
                "cannot update caBundle of %s: %s%s",
                label,
                exc,
                f" (mlgate needs get/patch on {plural})" if exc.status == 403 else "",
            )
            outcomes[name] = SyncOutcome.FAILED
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error("apiserver unreachable while syncing caBundle of %s: %r", name, exc)
            outcomes[name] = SyncOutcome.FAILED
    return SyncResult(outcomes)


# --------------------------------------------------------------------------------------------------
# Self-managed mode: one Secret shared by all replicas


def _decode_secret_data(secret: JSON) -> SecretData:
    data: SecretData = {}
    for key, value in (secret.get("data") or {}).items():
        decoded = _b64decode(value)
        if decoded is not None:  # a corrupt entry counts as missing and gets rewritten
            data[key] = decoded
    return data


def _encode_secret_data(data: Mapping[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in data.items()}


class SecretCertificates:
    """CA + serving certificate in Secret `<namespace>/<name>`, shared by every replica.

    Replicas converge on one Secret through the apiserver: creation races are settled by 409
    AlreadyExists, rotation races by resourceVersion preconditions (409 Conflict); the loser
    re-reads and adopts the winner's certificates.
    """

    def __init__(
        self,
        namespace: str,
        secret_name: str,
        spec: CertSpec,
        *,
        directory: Path | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.namespace = namespace
        self.secret_name = secret_name
        self.spec = spec
        self._directory = directory
        self._clock = clock
        self._path = resource_path("v1", "secrets", namespace, secret_name)
        self._data: SecretData | None = None  # last known Secret content
        self._served: str | None = None  # fingerprint of the bundle the server was given

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.secret_name}"

    @property
    def ca_pem(self) -> bytes | None:
        """The trust bundle (ca.crt) as last read or written, None before the first pass."""
        return None if self._data is None else self._data[CA_CERT]

    async def ensure(self, client: KubeClient, now: datetime | None = None) -> Bundle:
        """Read, create or rotate the Secret and return the bundle to serve.

        Raises CertificateError (already worded for the operator) when the apiserver refuses.
        """
        data = await self._reconcile(client, _aware(now or self._clock()))
        bundle = self._publish(data)
        self._served = bundle.fingerprint
        return bundle

    async def sync_ca_bundle(
        self, client: KubeClient, webhook_configs: Sequence[str]
    ) -> SyncResult:
        """Put the Secret's ca.crt into the caBundle of the named webhook configurations."""
        if self._data is None:
            self._data = await self._reconcile(client, _aware(self._clock()))
        return await patch_ca_bundles(client, webhook_configs, self._data[CA_CERT])

    async def run_forever(
        self,
        client: KubeClient,
        webhook_configs: Sequence[str],
        on_change: OnChange,
        *,
        interval: float = 3600.0,
        retry_interval: float = 60.0,
    ) -> NoReturn:
        """Reconcile now and then every `interval` seconds (`retry_interval` after a problem).

        Cancel the task to stop; nothing is deleted.
        """
        while True:
            in_step = await self.reconcile_once(client, webhook_configs, on_change)
            await asyncio.sleep(interval if in_step else retry_interval)

    async def reconcile_once(
        self,
        client: KubeClient,
        webhook_configs: Sequence[str],
        on_change: OnChange,
        now: datetime | None = None,
    ) -> bool:
        """One pass: Secret, then caBundle, then the server. True when all is in step."""
        try:
            data = await self._reconcile(client, _aware(now or self._clock()))
        except CertificateError as exc:
            log.error("%s; keeping the current serving certificate", exc)
            return False
        result = await patch_ca_bundles(client, webhook_configs, data[CA_CERT])
        if fingerprint(data[TLS_CERT], data[TLS_KEY]) == self._served:
            return result.in_step
        if result.failed:
            # A leaf from a new CA must not be served before apiservers trust that CA.
            log.warning("new serving certificate waits until the caBundle update succeeds")
            return False
        bundle = self._publish(data)
        if not _notify(on_change, bundle):
            return False
        self._served = bundle.fingerprint
        return result.in_step

    def _publish(self, data: SecretData) -> Bundle:
        if self._directory is None or not self._directory.exists():
            self._directory = _private_directory(self._directory)
        return _publish(self._directory, data[TLS_CERT], data[TLS_KEY], data[CA_CERT])

    async def _reconcile(self, client: KubeClient, now: datetime) -> SecretData:
        for _ in range(MAX_ATTEMPTS):
            secret = await self._call("read", client.get_or_none(self._path))
            data = self._adoptable(secret)
            action, reason = plan_secret(data, now, self.spec)
            if action is Action.KEEP and data is not None:
                self._data = data
                return data
            new = renew_secret(data, action, now, self.spec)
            log.info("Secret %s: %s (%s)", self.label, action.value, reason)
            if await self._write(client, secret, new, reason, now):
                self._data = new
                return new
        raise CertificateError(
            f"Secret {self.label} kept changing during {MAX_ATTEMPTS} attempts; will retry"
        )

    def _adoptable(self, secret: JSON | None) -> SecretData | None:
        """The Secret's data if mlgate may manage it; CertificateError if it belongs elsewhere."""
        if secret is None:
            return None
        if secret.get("type") != KUBE_TLS_TYPE:
            raise CertificateError(
                f"Secret {self.label} has type {secret.get('type')!r}, not {KUBE_TLS_TYPE}; "
                "delete it or choose another --tls-secret"
            )
        data = _decode_secret_data(secret)
        labels = (secret.get("metadata") or {}).get("labels") or {}
        # Refuse to overwrite certificates someone else issued (e.g. cert-manager's Secret):
        # an empty placeholder is fine, filled Secrets must carry mlgate's label.
        if any(data.values()) and labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
            raise CertificateError(
                f"Secret {self.label} exists but lacks label {MANAGED_BY_LABEL}={MANAGED_BY}; "
                "refusing to overwrite it (use --cert-mode files for cert-manager certificates)"
            )
        return data

    async def _write(
        self, client: KubeClient, secret: JSON | None, data: SecretData, reason: str, now: datetime
    ) -> bool:
        """Create or replace the Secret; False if another replica got there first (409)."""
        body = self._body(secret, data, reason, now)
        try:
            if secret is None:
                await self._call("create", client.create(self._collection, body))
            else:
                await self._call("update", client.replace(self._path, body))
        except _Conflict:
            log.info(
                "Secret %s was written concurrently (another replica?); re-reading", self.label
            )
            return False
        return True

    @property
    def _collection(self) -> str:
        return resource_path("v1", "secrets", self.namespace)

    def _body(self, secret: JSON | None, data: SecretData, reason: str, now: datetime) -> JSON:
        # Replacing the object we read keeps its resourceVersion: the precondition for the PUT.
        body: JSON = (
            copy.deepcopy(secret)
            if secret is not None
            else {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": self.secret_name, "namespace": self.namespace},
                "type": KUBE_TLS_TYPE,
            }
        )
        metadata = body["metadata"]
        metadata.setdefault("labels", {})[MANAGED_BY_LABEL] = MANAGED_BY
        metadata.setdefault("annotations", {}).update(
            {ROTATED_AT_ANNOTATION: now.isoformat(timespec="seconds"), REASON_ANNOTATION: reason}
        )
        body["data"] = _encode_secret_data(data)
        body.pop("stringData", None)
        return body

    async def _call(self, verb: str, call: Awaitable[T]) -> T:
        """Await an apiserver call, turning failures into one clear CertificateError."""
        try:
            return await call
        except ApiError as exc:
            if exc.status == 409:
                raise _Conflict(f"Secret {self.label} was changed concurrently") from exc
            hint = (
                f" (mlgate needs get/create/update on secrets in namespace {self.namespace})"
                if exc.status == 403
                else ""
            )
            raise CertificateError(f"cannot {verb} Secret {self.label}: {exc}{hint}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CertificateError(
                f"apiserver unreachable trying to {verb} Secret {self.label}: {exc!r}"
            ) from exc


class _Conflict(CertificateError):
    """409 from the apiserver: someone else wrote first."""


# --------------------------------------------------------------------------------------------------
# Provided-files mode (cert-manager)


class FileCertificates:
    """Serve a mounted certificate/key (and optional CA) and follow their rotation.

    cert-manager rewrites the Secret, kubelet swaps the mounted files; polling the content hash
    catches that regardless of how the swap happens (symlink flip, in-place write).
    """

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        ca_file: Path | None = None,
        *,
        directory: Path | None = None,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.ca_file = ca_file
        self._directory = directory
        self._digest: str | None = None

    def load(self) -> Bundle:
        """Validate the files and snapshot them; CertificateError if unusable."""
        cert_pem, key_pem, ca_pem = self._read()
        try:
            leaf = decode_certs(cert_pem)[0]
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (CertificateError, ValueError, TypeError) as exc:
            raise CertificateError(f"{self.cert_file} / {self.key_file}: {exc}") from exc
        if _public_der(leaf.public_key()) != _public_der(key.public_key()):
            # Typical mid-rotation: one file already new, the other still old.
            raise CertificateError(f"{self.key_file} does not belong to {self.cert_file}")
        if ca_pem:
            decode_certs(ca_pem)
        if self._directory is None or not self._directory.exists():
            self._directory = _private_directory(self._directory)
        bundle = _publish(self._directory, cert_pem, key_pem, ca_pem)
        self._digest = fingerprint(cert_pem, key_pem, ca_pem)
        if leaf.not_valid_after_utc <= utcnow():
            log.error("serving certificate %s expired at %s", self.cert_file, bundle.not_after)
        return bundle

    def changed(self) -> bool:
        """Whether the files differ from what was last loaded (unreadable counts as unchanged)."""
        try:
            return fingerprint(*self._read()) != self._digest
        except CertificateError:
            return False

    def check(self, on_change: OnChange) -> bool:
        """Reload and notify if the files changed and are valid; True if the server switched."""
        if not self.changed():
            return False
        try:
            bundle = self.load()
        except CertificateError as exc:
            log.warning("certificate files changed but are not usable yet: %s; will retry", exc)
            return False
        return _notify(on_change, bundle)

    async def run_forever(self, on_change: OnChange, *, interval: float = 10.0) -> NoReturn:
        """Poll every `interval` seconds. Call `load()` first to get the initial bundle."""
        while True:
            await asyncio.sleep(interval)
            self.check(on_change)

    def _read(self) -> tuple[bytes, bytes, bytes]:
        try:
            cert_pem = self.cert_file.read_bytes()
            key_pem = self.key_file.read_bytes()
            ca_pem = self.ca_file.read_bytes() if self.ca_file else b""
        except OSError as exc:
            raise CertificateError(f"cannot read certificate files: {exc}") from exc
        return cert_pem, key_pem, ca_pem


# --------------------------------------------------------------------------------------------------
# TLS server context


def server_ssl_context(cert_path: Path | str, key_path: Path | str) -> ssl.SSLContext:
    """A TLS 1.2+ server context serving the given certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, cert_path, key_path)
    return context


def reload(context: ssl.SSLContext, cert_path: Path | str, key_path: Path | str) -> None:
    """Swap the certificate of a live context: new handshakes use it, open connections keep theirs.

    The pair is first loaded into a throwaway context, because a failed `load_cert_chain` can
    leave a context with the new certificate but no matching key.
    """
    _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_path, key_path)
    _load(context, cert_path, key_path)


def _load(context: ssl.SSLContext, cert_path: Path | str, key_path: Path | str) -> None:
    try:
        context.load_cert_chain(str(cert_path), str(key_path))
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(f"cannot load {cert_path} / {key_path}: {exc}") from exc
