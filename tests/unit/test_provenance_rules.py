"""Revision-pinned references, revision matching and the evidence policies demand of approvals."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import model_signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlgate.api.compile import key_id
from mlgate.controller.state import PolicyState
from mlgate.engine.decisions import Rule
from mlgate.engine.model_provenance import immutability_problem
from mlgate.engine.model_uris import identity, split
from mlgate.engine.policy import Approval
from mlgate.provenance.artifacts import digest
from tests.unit.test_rules_models import STORAGE, approval, check, inference_service, rules

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"
OCI = "sha256:" + "ab" * 32
KEY_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.mark.parametrize(
    ("uri", "name", "revision"),
    [
        (f"hf://acme/m@{COMMIT}", "hf://acme/m", COMMIT),
        (f"hf://acme/m:{COMMIT}", "hf://acme/m", COMMIT),  # KServe's form
        ("hf://acme/m@main", "hf://acme/m@main", None),  # a branch moves
        ("hf://acme/m:v1", "hf://acme/m:v1", None),
        ("hf://acme/m", "hf://acme/m", None),
        ("s3://b/k?versionId=3HL4kqt", "s3://b/k", "3HL4kqt"),
        ("s3://b/k?x=1&versionId=v9", "s3://b/k", "v9"),
        ("s3://b/k?versionId=", "s3://b/k?versionId=", None),
        ("gs://b/o#1712345678", "gs://b/o", "1712345678"),
        ("gs://b/o#latest", "gs://b/o#latest", None),
        (f"oci://reg.io/ml/m:1@{OCI}", "oci://reg.io/ml/m:1", OCI),
        ("oci://reg.io/ml/m:1", "oci://reg.io/ml/m:1", None),
        ("pvc://models/fraud", "pvc://models/fraud", None),
        ("https://example.com/m.bin", "https://example.com/m.bin", None),
    ],
)
def test_split(uri: str, name: str, revision: str | None) -> None:
    parts = split(uri)
    assert (parts.name, parts.revision) == (name, revision)


@pytest.mark.parametrize(
    ("approved", "wanted", "expected"),
    [
        (f"hf://acme/m@{COMMIT}", f"hf://acme/m@{COMMIT}", True),
        (f"hf://acme/m@{COMMIT}", f"hf://acme/m:{COMMIT}", True),  # same revision, other form
        (f"hf://acme/m@{COMMIT}", f"hf://acme/m@{OTHER}", False),
        (f"hf://acme/m@{COMMIT}", "hf://acme/m", False),  # the moving name is another thing
        ("hf://acme/m", f"hf://acme/m@{COMMIT}", False),  # could be any old, unvetted commit
        (f"hf://acme/m@{COMMIT}", f"hf://evil/m@{COMMIT}", False),
        ("s3://b/k?versionId=v1", "s3://b/k?versionId=v2", False),
        ("s3://b/k?versionId=v1", "s3://b/k?versionId=v1", True),
        ("gs://b/o#1", "gs://b/o#2", False),
        (f"oci://reg.io/ml/m@{OCI}", f"oci://reg.io/ml/m:v1@{OCI}", True),  # tag is a label
        (f"oci://reg.io/ml/m@{OCI}", f"oci://reg.io/ml/other@{OCI}", False),
        (f"oci://reg.io:5000/ml/m@{OCI}", f"oci://reg.io/ml/m@{OCI}", False),
    ],
)
def test_an_approval_covers_the_same_identity(approved: str, wanted: str, expected: bool) -> None:
    # Compiled approvals hold their URIs' identities; a reference matches by set lookup.
    held = Approval("a", "m", "1", frozenset({approved, "s3://other/model"})).identities
    assert (identity(wanted) in held) is expected


def test_immutability_problem_names_the_fix() -> None:
    assert immutability_problem(f"hf://acme/m@{COMMIT}") is None
    problem = immutability_problem("hf://acme/m@main")
    assert problem is not None and "hf://<org>/<model>@<40-hex commit hash>" in problem
    s3 = immutability_problem("s3://b/k")
    assert s3 is not None and "?versionId=" in s3
    pvc = immutability_problem("pvc://models/fraud")
    assert pvc is not None and "scheme cannot" in pvc


def test_require_immutable_denies_a_mutable_reference_with_the_fix() -> None:
    pinned = approval(uris=[f"hf://acme/fraud@{COMMIT}", "hf://acme/fraud"])
    r = rules(requireImmutable=True)
    assert check(inference_service(f"hf://acme/fraud@{COMMIT}"), (pinned,), r) == []
    [finding] = check(inference_service("hf://acme/fraud"), (pinned,), r)
    assert finding.rule is Rule.MODELS_IMMUTABLE and finding.path == STORAGE
    assert "@<40-hex commit hash>" in finding.message


def test_a_pinned_approval_never_matches_another_revision() -> None:
    pinned = approval(uris=[f"hf://acme/fraud@{COMMIT}"])
    [finding] = check(inference_service(f"hf://acme/fraud:{OTHER}"), (pinned,))
    assert finding.rule is Rule.MODELS_APPROVAL
    assert check(inference_service(f"hf://acme/fraud:{COMMIT}"), (pinned,)) == []


# --- evidence --------------------------------------------------------------------------------

DIGEST = "sha256:" + "12" * 32
SCAN = {"scanner": "picklescan", "version": "1.0.5", "result": "clean"}
URI = "s3://models/fraud-detector/v3"


@dataclass(frozen=True)
class Signed:
    """A model signed with OMS: its digest and the signature records approve-model writes."""

    digest: str
    pem: str  # the signing key's public half
    record: dict[str, str]  # key signature, bundle and key stored

    def approval(self, name: str = "signed", **spec: Any) -> Approval:
        return approval(name, digest=self.digest, signature=self.record, **spec)


def _key(tmp: Path, name: str) -> tuple[Path, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp / f"{name}.key"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, public.decode()


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Signed:
    tmp = tmp_path_factory.mktemp("signed")
    model = tmp / "fraud"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    key, pem = _key(tmp, "release")
    bundle = tmp / "fraud.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=key).sign(model, bundle)
    record = {
        "method": "key",
        "signer": key_id(pem),
        "publicKey": pem,
        "bundle": bundle.read_text(),
    }
    return Signed(digest(model), pem, record)


def _identity(identity: str, issuer: str) -> dict[str, str]:
    return {"method": "sigstore", "signer": identity, "issuer": issuer}


def test_approval_without_digest_does_not_count_under_require_digest() -> None:
    r = rules(requireDigest=True)
    [finding] = check(inference_service(URI), (approval(),), r)
    assert "lacks a content digest" in finding.message
    assert check(inference_service(URI), (approval(digest=DIGEST),), r) == []


@pytest.mark.parametrize(
    ("scan", "shown"),
    [
        (None, "none recorded"),
        ({**SCAN, "result": "dangerous", "allowedUnsafeReason": "vendor"}, "dangerous"),
        ({**SCAN, "result": "suspicious"}, "suspicious"),
    ],
)
def test_require_scan_wants_a_clean_scan(scan: dict[str, str] | None, shown: str) -> None:
    r = rules(requireScan=True)
    a = approval(**({"scan": scan} if scan else {}))
    [finding] = check(inference_service(URI), (a,), r)
    assert f"a clean unsafe-serialisation scan (scan: {shown})" in finding.message
    assert check(inference_service(URI), (approval(scan=SCAN),), r) == []


def test_require_signature_any_signer(signed: Signed) -> None:
    r = rules(requireSignature={})
    [finding] = check(inference_service(URI), (approval(),), r)
    assert "lacks a verified OMS signature" in finding.message
    assert check(inference_service(URI), (signed.approval(),), r) == []


def test_require_signature_by_allowed_keys_and_identities(signed: Signed) -> None:
    r = rules(
        requireSignature={
            "keys": [{"publicKey": signed.pem}],
            "identities": [{"identity": "ml@acme.com", "issuer": "https://idp.acme.com"}],
        }
    )
    ok_identity = approval(signature=_identity("ml@acme.com", "https://idp.acme.com"))
    assert check(inference_service(URI), (signed.approval(),), r) == []
    assert check(inference_service(URI), (ok_identity,), r) == []
    wrong_issuer = approval(signature=_identity("ml@acme.com", "https://evil.example"))
    other_key = rules(requireSignature={"keys": [{"publicKey": KEY_PEM}]})
    for bad, policy_rules in ((wrong_issuer, r), (signed.approval(), other_key)):
        [finding] = check(inference_service(URI), (bad,), policy_rules)
        assert "a signature by an allowed key or identity" in finding.message


def _forged(signed: Signed, **record: str) -> dict[str, str]:
    return {**signed.record, **record}


def test_a_recorded_key_signer_counts_only_with_its_proof(signed: Signed) -> None:
    """Whoever writes ApprovedModels cannot claim a signer: the bundle is re-verified."""
    r = rules(requireSignature={"keys": [{"publicKey": signed.pem}]})
    envelope = json.loads(signed.record["bundle"])
    envelope["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(b"\x00" * 70).decode()
    cases = {
        "needs its bundle and publicKey": {"method": "key", "signer": key_id(signed.pem)},
        "publicKey is not the key named as signer": _forged(signed, publicKey=KEY_PEM),
        "does not verify with the key": _forged(signed, bundle=json.dumps(envelope)),
        "not a sigstore bundle": _forged(signed, bundle="{}"),
    }
    for why, record in cases.items():
        [finding] = check(inference_service(URI), (approval(signature=record, digest=DIGEST),), r)
        assert "the recorded one does not count" in finding.message and why in finding.message
    # A genuine bundle over other files does not vouch for this digest.
    other = approval(signature=signed.record, digest=DIGEST)
    [finding] = check(inference_service(URI), (other,), r)
    assert f"the bundle signs {signed.digest}, not the approval's digest {DIGEST}" in (
        finding.message
    )


def test_message_lists_every_missing_piece_and_another_approval_can_satisfy(
    signed: Signed,
) -> None:
    r = rules(requireDigest=True, requireScan=True, requireSignature={})
    [finding] = check(inference_service(URI), (approval(),), r)
    for missing in ("content digest", "clean unsafe-serialisation scan", "OMS signature"):
        assert missing in finding.message
    full = signed.approval("full", scan=SCAN)
    assert check(inference_service(URI), (approval(), full), r) == []


def test_a_rejected_signature_is_named_in_the_approvals_status(signed: Signed) -> None:
    state = PolicyState()
    forged = {"method": "key", "signer": key_id(signed.pem)}
    body = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ApprovedModel",
        "metadata": {"name": "forged", "generation": 1},
        "spec": {"model": "m", "version": "1", "digest": DIGEST, "signature": forged},
    }
    result = state.upsert(body)
    assert result.ok and "its recorded signature does not count" in result.message
    body["spec"]["signature"] = signed.record
    body["spec"]["digest"] = signed.digest
    assert state.upsert(body).message == "compiled and in force"
