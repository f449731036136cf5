"""Revision-pinned references, revision matching and the evidence policies demand of approvals."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlgate.api.compile import key_id
from mlgate.engine.decisions import Rule
from mlgate.engine.provenance import covers, immutability_problem, split
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
def test_covers(approved: str, wanted: str, expected: bool) -> None:
    assert covers(approved, wanted) is expected


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
KEY_ID = "sha256:" + "34" * 32
SCAN = {"scanner": "picklescan", "version": "1.0.5", "result": "clean"}
URI = "s3://models/fraud-detector/v3"


def _signature(signer: str = KEY_ID, method: str = "key") -> dict[str, str]:
    return {"method": method, "signer": signer}


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


def test_require_signature_any_signer() -> None:
    r = rules(requireSignature={})
    [finding] = check(inference_service(URI), (approval(),), r)
    assert "lacks a verified OMS signature" in finding.message
    assert check(inference_service(URI), (approval(signature=_signature()),), r) == []


def test_require_signature_by_allowed_keys_and_identities() -> None:
    allowed = key_id(KEY_PEM)
    r = rules(
        requireSignature={
            "keys": [{"publicKey": KEY_PEM}],
            "identities": [{"identity": "ml@acme.com", "issuer": "https://idp.acme.com"}],
        }
    )
    ok_key = approval(signature=_signature(allowed))
    ok_identity = approval(
        signature={**_signature("ml@acme.com", "sigstore"), "issuer": "https://idp.acme.com"}
    )
    assert check(inference_service(URI), (ok_key,), r) == []
    assert check(inference_service(URI), (ok_identity,), r) == []
    wrong_issuer = approval(
        signature={**_signature("ml@acme.com", "sigstore"), "issuer": "https://evil.example"}
    )
    for bad in (approval(signature=_signature()), wrong_issuer):
        [finding] = check(inference_service(URI), (bad,), r)
        assert "a signature by an allowed key or identity" in finding.message


def test_message_lists_every_missing_piece_and_another_approval_can_satisfy() -> None:
    r = rules(requireDigest=True, requireScan=True, requireSignature={})
    [finding] = check(inference_service(URI), (approval(),), r)
    for missing in ("content digest", "clean unsafe-serialisation scan", "OMS signature"):
        assert missing in finding.message
    full = approval("full", digest=DIGEST, scan=SCAN, signature=_signature())
    assert check(inference_service(URI), (approval(), full), r) == []
