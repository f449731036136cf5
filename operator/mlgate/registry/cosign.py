"""Cosign signature formats, verified with public keys: pure functions over bytes, no I/O.

Two formats are understood, both as written by `cosign sign --key`:

- classic: a manifest tagged `sha256-<hex>.sig` whose layers are simple-signing payloads
  (`application/vnd.dev.cosign.simplesigning.v1+json`), each with its signature in the
  annotation `dev.cosignproject.cosign/signature` (base64 of a signature over the payload bytes);
- sigstore bundle (`--new-bundle-format`): a referrer manifest whose layer is a sigstore bundle
  holding a DSSE envelope over an in-toto statement with the image digest as its subject and the
  predicate type `https://sigstore.dev/cosign/sign/v1`.

A signature vouches only for the digest its payload names; which repositories a key may vouch
for is the policy's business. Payloads are parsed strictly (duplicate JSON keys, wrong types and
unknown critical types are rejected) so no parser differential can make one payload mean two
things.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from mlgate.registry import ed25519ph

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
BUNDLE_MEDIA_TYPES = frozenset(
    {
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
    }
)
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
INTOTO_STATEMENT_TYPES = frozenset(
    {"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"}
)
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


class Problem(IntEnum):
    """Why one signature does not vouch for the image; higher is more telling.

    When no signature verifies, the most telling problem is reported: a signature that verifies
    with a trusted key but says the wrong thing explains more than one that does not verify.
    """

    UNSUPPORTED = 1  # a format mlgate cannot check (keyless, message signatures)
    BAD_SIGNATURE = 2  # no trusted key verifies it: another key, or altered bytes
    MALFORMED = 3  # verifies, but the payload is not a valid signature payload
    WRONG_TYPE = 4  # verifies, but its type is not an image signature
    DIGEST_MISMATCH = 5  # verifies, but signs another digest


@dataclass(frozen=True, slots=True)
class TrustedKey:
    id: str  # the policy's key id: sha256:<hex of DER> or secret:<ns>/<name>/<key>
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    fingerprint: str  # sha256 hex of the DER SubjectPublicKeyInfo: what the key *is*

    @property
    def hint(self) -> str:
        """The key hint a sigstore bundle carries: base64 of the SHA-256 of the DER key."""
        return base64.b64encode(bytes.fromhex(self.fingerprint)).decode()


class KeyError_(ValueError):  # noqa: N801 - KeyError is taken by the builtin
    """The key material cannot be used; the message says why."""


def load_key(key_id: str, pem: str | bytes) -> TrustedKey:
    """A public key from PEM (ECDSA P-256/P-384/P-521, RSA >= 2048 bits, Ed25519)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyError_(f"not a PEM public key ({exc})") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
            raise KeyError_(f"unsupported elliptic curve {key.curve.name}")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise KeyError_(f"RSA key of {key.key_size} bits is too weak (2048 at least)")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyError_(f"unsupported key type {type(key).__name__}")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TrustedKey(key_id, key, hashlib.sha256(der).hexdigest())


_CURVE_HASHES: Mapping[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


def _ecdsa_der(key: ec.EllipticCurvePublicKey, signature: bytes) -> bytes:
    """Signers emit ASN.1 DER; accept the raw r||s form (IEEE P1363) some tools write too."""
    size = (key.curve.key_size + 7) // 8
    if len(signature) == 2 * size and signature[0] != 0x30:
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        return encode_dss_signature(r, s)
    return signature


def verify_signature(key: TrustedKey, signature: bytes, message: bytes) -> bool:
    """Whether `signature` over `message` verifies with `key`, as sigstore's verifiers do:
    ECDSA with SHA-256 (or the curve's own hash), RSA PKCS#1 v1.5 or PSS with SHA-256,
    Ed25519 over the message itself or Ed25519ph over its SHA-512 (cosign's default)."""
    k = key.key
    try:
        if isinstance(k, ed25519.Ed25519PublicKey):
            try:
                k.verify(signature, message)
                return True
            except InvalidSignature:  # cosign signs with Ed25519ph (pre-hashed) by default
                raw = k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                return ed25519ph.verify(raw, message, signature)
        if isinstance(k, ec.EllipticCurvePublicKey):
            der = _ecdsa_der(k, signature)
            candidates: list[hashes.HashAlgorithm] = [hashes.SHA256()]
            own = _CURVE_HASHES.get(k.curve.name, hashes.SHA256)
            if own is not hashes.SHA256:
                candidates.append(own())
            for algorithm in candidates:
                try:
                    k.verify(der, message, ec.ECDSA(algorithm))
                    return True
                except InvalidSignature:
                    continue
            return False
        try:
            k.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return True
        except InvalidSignature:
            k.verify(
                signature,
                message,
                padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO),
                hashes.SHA256(),
            )
            return True
    except (InvalidSignature, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Strict JSON


class Malformed(ValueError):
    """A payload that is not what its format requires."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise Malformed(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise Malformed(f"non-standard JSON constant {name}")


def strict_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise Malformed(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not a JSON object")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{what} is missing or not a string")
    return value


def b64decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise Malformed(f"{what} is missing or not a string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:  # protojson and some signers use the URL-safe alphabet
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise Malformed(f"{what} is not base64") from None


# ---------------------------------------------------------------------------------------------
# Verdicts


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement of one signature: which trusted keys it proves, or why it proves nothing."""

    verified_by: frozenset[str] = frozenset()  # key ids
    problem: Problem | None = None
    detail: str = ""


def _claims_verdict(keys: Sequence[TrustedKey], check: Malformed | None, detail: str) -> Verdict:
    ids = frozenset(k.id for k in keys)
    if check is None:
        return Verdict(verified_by=ids)
    if isinstance(check, DigestMismatch):
        return Verdict(problem=Problem.DIGEST_MISMATCH, detail=str(check))
    if isinstance(check, WrongType):
        return Verdict(problem=Problem.WRONG_TYPE, detail=str(check))
    return Verdict(problem=Problem.MALFORMED, detail=f"{detail}: {check}")


class DigestMismatch(Malformed):
    pass


class WrongType(Malformed):
    pass


def _verifying_keys(
    keys: Sequence[TrustedKey], signature: bytes, message: bytes
) -> list[TrustedKey]:
    return [k for k in keys if verify_signature(k, signature, message)]


def check_simplesigning_payload(payload: bytes, digest: str) -> None:
    """Raise unless `payload` is a cosign simple-signing payload for exactly `digest`."""
    doc = _object(strict_json(payload), "the payload")
    critical = _object(doc.get("critical"), "critical")
    kind = _string(critical.get("type"), "critical.type")
    if kind != COSIGN_SIGNATURE_TYPE:
        raise WrongType(
            f"the payload's critical.type is {kind!r}, not {COSIGN_SIGNATURE_TYPE!r}: it is "
            "not a container image signature"
        )
    image = _object(critical.get("image"), "critical.image")
    named = _string(image.get("docker-manifest-digest"), "critical.image.docker-manifest-digest")
    identity = critical.get("identity")
    if identity is not None:
        _object(identity, "critical.identity")
    optional = doc.get("optional")
    if optional is not None:
        _object(optional, "optional")
    if named != digest:
        raise DigestMismatch(
            f"a signature by a trusted key names digest {named}, not the image's digest {digest}: "
            "it signs another image (was the tag moved after signing?)"
        )


def verify_simplesigning(
    keys: Sequence[TrustedKey], payload: bytes, signature_b64: Any, digest: str
) -> Verdict:
    """One classic cosign signature: a layer's payload and its signature annotation."""
    try:
        signature = b64decode(signature_b64, f"annotation {SIGNATURE_ANNOTATION}")
    except Malformed as exc:
        return Verdict(problem=Problem.MALFORMED, detail=f"malformed signature: {exc}")
    verifying = _verifying_keys(keys, signature, payload)
    if not verifying:
        return Verdict(problem=Problem.BAD_SIGNATURE)
    try:
        check_simplesigning_payload(payload, digest)
    except Malformed as exc:
        return _claims_verdict(verifying, exc, "malformed signature payload")
    return _claims_verdict(verifying, None, "")


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: what a DSSE signature actually signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def check_statement(payload: bytes, digest: str) -> None:
    """Raise unless `payload` is an in-toto statement of a cosign image signature of `digest`."""
    doc = _object(strict_json(payload), "the in-toto statement")
    statement_type = _string(doc.get("_type"), "_type")
    if statement_type not in INTOTO_STATEMENT_TYPES:
        raise Malformed(f"_type {statement_type!r} is not an in-toto statement")
    predicate = _string(doc.get("predicateType"), "predicateType")
    if predicate != COSIGN_SIGN_PREDICATE:
        raise WrongType(
            f"the statement's predicateType is {predicate!r}, not {COSIGN_SIGN_PREDICATE!r}: "
            "it is an attestation, not an image signature"
        )
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise Malformed("the statement has no subject")
    algorithm, _, hexdigest = digest.partition(":")
    named: list[str] = []
    for i, subject in enumerate(subjects):
        digests = _object(_object(subject, f"subject[{i}]").get("digest"), f"subject[{i}].digest")
        value = digests.get(algorithm)
        if value is not None:
            named.append(f"{algorithm}:{_string(value, f'subject[{i}].digest.{algorithm}')}")
    if f"{algorithm}:{hexdigest}" in named:
        return
    if not named:
        raise Malformed(f"no subject has a {algorithm} digest")
    raise DigestMismatch(
        f"a signature by a trusted key names digest {', '.join(named)}, not the image's digest "
        f"{digest}: it signs another image (was the tag moved after signing?)"
    )


def verify_bundle(keys: Sequence[TrustedKey], bundle: bytes, digest: str) -> Verdict:
    """One sigstore bundle (cosign --new-bundle-format): a DSSE envelope signed by a key."""
    try:
        doc = _object(strict_json(bundle), "the bundle")
        material = doc.get("verificationMaterial")
        keyless = isinstance(material, dict) and (
            "certificate" in material or "x509CertificateChain" in material
        )
        if "dsseEnvelope" not in doc:
            if "messageSignature" in doc:
                return Verdict(
                    problem=Problem.UNSUPPORTED,
                    detail="a sigstore bundle holds a message signature; image signatures are "
                    "DSSE envelopes (cosign sign --new-bundle-format)",
                )
            raise Malformed("the bundle has no DSSE envelope")
        envelope = _object(doc["dsseEnvelope"], "dsseEnvelope")
        payload_type = _string(envelope.get("payloadType"), "dsseEnvelope.payloadType")
        payload = b64decode(envelope.get("payload"), "dsseEnvelope.payload")
        signatures = envelope.get("signatures")
        if not isinstance(signatures, list) or not signatures:
            raise Malformed("the DSSE envelope has no signatures")
        raw = [
            b64decode(_object(s, "signature").get("sig"), "dsseEnvelope.signatures[].sig")
            for s in signatures[:16]
        ]
    except Malformed as exc:
        return Verdict(problem=Problem.MALFORMED, detail=f"malformed sigstore bundle: {exc}")
    message = pae(payload_type, payload)
    verifying = {k.id: k for sig in raw for k in _verifying_keys(keys, sig, message)}
    if not verifying:
        if keyless:
            return Verdict(
                problem=Problem.UNSUPPORTED,
                detail="a keyless (certificate) sigstore bundle; mlgate verifies key-based "
                "signatures (cosign sign --key)",
            )
        return Verdict(problem=Problem.BAD_SIGNATURE)
    try:
        if payload_type != INTOTO_PAYLOAD_TYPE:
            raise Malformed(f"payloadType {payload_type!r} is not {INTOTO_PAYLOAD_TYPE!r}")
        check_statement(payload, digest)
    except Malformed as exc:
        return _claims_verdict(list(verifying.values()), exc, "malformed sigstore bundle")
    return _claims_verdict(list(verifying.values()), None, "")
