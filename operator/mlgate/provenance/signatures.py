"""OpenSSF Model Signing (OMS) signatures verified offline with the `model-signing` library.

Three ways to trust a signer, none of which needs the network:
- a public key (the signature's DSSE envelope verifies with it): the signer is recorded as the
  key's id, `sha256:<hex of its DER SubjectPublicKeyInfo>` (the same id policies give keys);
- a certificate chain (the signing certificate chains to the given roots): the signer is the
  leaf certificate's identity (its SAN email or URI, else its subject);
- a sigstore bundle with a trust root file (ClientTrustConfig JSON), an identity and its OIDC
  issuer: verified against that trust root, transparency log proof included.

model-signing checks the signed manifest against the files too, so a verified signature also
proves the files are the signed ones; its subject digest is then the approval's digest.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from model_signing import verifying

from mlgate.api.compile import key_id
from mlgate.engine.policy import Signer


class SignatureError(ValueError):
    """The signature does not verify, or its inputs cannot be read; the message says which."""


@dataclass(frozen=True, slots=True)
class Trust:
    """How to verify: exactly one of public_key, certificates, or trust_root with identity."""

    public_key: Path | None = None
    certificates: tuple[Path, ...] = ()
    trust_root: Path | None = None
    identity: str | None = None
    issuer: str | None = None

    @property
    def given(self) -> bool:
        """Whether exactly one way to verify is given, completely."""
        ways = [
            self.public_key is not None,
            bool(self.certificates),
            self.trust_root is not None and bool(self.identity) and bool(self.issuer),
        ]
        return sum(ways) == 1


MISSING_TRUST = (
    "say how to verify the signature: --public-key, --certificate-chain, or --trust-root with "
    "--identity and --issuer (exactly one)"
)


def _config(trust: Trust) -> tuple[verifying.Config, Signer]:
    config = verifying.Config()
    if trust.public_key is not None:
        pem = trust.public_key.read_text(encoding="utf-8")
        return config.use_elliptic_key_verifier(public_key=trust.public_key), Signer(
            "key", key_id=key_id(pem)
        )
    if trust.certificates:
        config = config.use_certificate_verifier(certificate_chain=trust.certificates)
        return config, Signer("certificate")
    if trust.trust_root is not None and trust.identity and trust.issuer:
        config = config.use_sigstore_verifier(
            identity=trust.identity, oidc_issuer=trust.issuer, trust_config=trust.trust_root
        )
        return config, Signer("sigstore", identity=trust.identity, issuer=trust.issuer)
    raise SignatureError(MISSING_TRUST)


def _leaf_identity(signature: Path) -> str:
    """The identity of a certificate-signed bundle's signing (leaf) certificate."""
    bundle = json.loads(signature.read_text(encoding="utf-8"))
    chain = bundle["verificationMaterial"]["x509CertificateChain"]["certificates"]
    leaf = x509.load_der_x509_certificate(base64.b64decode(chain[0]["rawBytes"]))
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return leaf.subject.rfc4514_string()
    names = san.get_values_for_type(x509.RFC822Name) + san.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    return names[0] if names else leaf.subject.rfc4514_string()


def _subject(signature: Path) -> str:
    """The digest the signature's in-toto statement names as its subject."""
    bundle = json.loads(signature.read_text(encoding="utf-8"))
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return f"sha256:{statement['subject'][0]['digest']['sha256']}"


def verify(model: Path, signature: Path, trust: Trust, digest: str) -> Signer:
    """Verify `signature` over the files of `model`, whose OMS digest is `digest`; the verified
    signer, or SignatureError."""
    try:
        config, signer = _config(trust)
        config.verify(model, signature)
        if _subject(signature) != digest:
            raise SignatureError(
                f"signature {signature} signs subject {_subject(signature)}, not the files' "
                f"digest {digest}: it was made with another hashing configuration (shards, "
                "blake2/3); sign with model-signing's default (files, sha256)"
            )
        if signer.method == "certificate":
            return Signer("certificate", identity=_leaf_identity(signature))
    except SignatureError:
        raise
    except OSError as exc:
        raise SignatureError(f"{exc.filename or signature}: {exc.strerror or exc}") from None
    except Exception as exc:
        # protobuf and OpenSSL errors; each means "not verified", with its message
        raise SignatureError(f"signature {signature} does not verify: {exc}") from None
    return signer
