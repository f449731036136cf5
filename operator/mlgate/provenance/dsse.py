"""Re-verifying a recorded OMS key signature: the sigstore bundle's DSSE envelope, its key and the
subject it signs.

An ApprovedModel records its signer, and whoever can write ApprovedModels could write any
signer. So `mlgate approve-model` also stores the bundle and the public key, and mlgate checks,
whenever it reads the approval, that the envelope's signature verifies with that key and that the
signed in-toto statement names the approval's digest as its subject. Only then does the signer
count. This is pure computation over the stored data (no files, no network): the same check as
model-signing's key verifier (PAE of DSSE v1, ECDSA with the curve's hash).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

IN_TOTO = "application/vnd.in-toto+json"
_CURVE_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    256: hashes.SHA256,
    384: hashes.SHA384,
    521: hashes.SHA512,
}


class InvalidBundle(ValueError):
    """The bundle does not prove a signature by the key over the digest; the message says why."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding, what the signature covers."""
    return b"DSSEv1 %d %s %d %s" % (
        len(payload_type),
        payload_type.encode(),
        len(payload),
        payload,
    )


def _envelope(bundle: str) -> tuple[str, bytes, bytes]:
    try:
        envelope: Any = json.loads(bundle)["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
        return str(envelope["payloadType"]), payload, signature
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as exc:
        raise InvalidBundle(f"not a sigstore bundle with a DSSE envelope ({exc})") from None


def _verify(pem: str, payload_type: str, payload: bytes, signature: bytes) -> None:
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidBundle(f"unreadable public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.key_size not in _CURVE_HASHES:
        raise InvalidBundle("OMS key signatures use ECDSA P-256, P-384 or P-521 keys")
    algorithm = _CURVE_HASHES[key.curve.key_size]()
    try:
        key.verify(signature, pae(payload_type, payload), ec.ECDSA(algorithm))
    except InvalidSignature:
        raise InvalidBundle("the envelope's signature does not verify with the key") from None


def signed_subject(bundle: str, pem: str) -> str:
    """The `sha256:<hex>` subject that `bundle` proves `pem`'s key signed, or InvalidBundle."""
    payload_type, payload, signature = _envelope(bundle)
    if payload_type != IN_TOTO:
        raise InvalidBundle(f"payload type {payload_type!r} is not an in-toto statement")
    _verify(pem, payload_type, payload, signature)
    try:
        statement = json.loads(payload)
        return f"sha256:{statement['subject'][0]['digest']['sha256']}"
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidBundle(f"the signed statement names no sha256 subject ({exc})") from None
