"""approve-model and verify-model on real model files the tests write.

The malicious pickles are only ever written and scanned: nothing here unpickles them.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import model_signing
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from model_signing._signing.signing import Payload

from mlgate.api.compile import compile_approval, key_id
from mlgate.api.models import ApprovedModel
from mlgate.cli import main
from mlgate.provenance.artifacts import digest, scan


class RunsACommand:
    """Pickles to `os.system(...)`: what a poisoned checkpoint does when loaded."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch /tmp/mlgate-pwned",))


EVIL = pickle.dumps(RunsACommand(), protocol=2)


def safetensors(tensors: dict[str, list[float]]) -> bytes:
    """The safetensors format by hand: u64 header length, JSON header, little-endian data."""
    header: dict[str, Any] = {}
    data = b""
    for name, values in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {
            "dtype": "F32",
            "shape": [len(values)],
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + data


def torch_checkpoint(path: Path, data_pkl: bytes) -> Path:
    """A torch.save-style zip: <name>/data.pkl, <name>/version, <name>/data/0."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/data/0", struct.pack("<4f", 1, 2, 3, 4))
    return path


def model_dir(root: Path, order: tuple[str, ...] = ("config", "weights", "tokenizer")) -> Path:
    """A directory model, its files written in `order` (the digest must not depend on it)."""
    model = root / "fraud"
    files = {
        "config": ("config.json", b'{"model_type": "bert"}'),
        "weights": ("model.safetensors", safetensors({"w": [0.5, 1.5], "b": [2.0]})),
        "tokenizer": ("tok/vocab.pkl", pickle.dumps({"hello": 1, "world": 2}, protocol=4)),
    }
    for key in order:
        name, content = files[key]
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(content)
    return model


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- scan ------------------------------------------------------------------------------------


def test_clean_files_scan_clean(tmp_path: Path) -> None:
    (tmp_path / "data.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    (tmp_path / "model.safetensors").write_bytes(safetensors({"w": [1.0]}))
    torch_checkpoint(tmp_path / "model.pt", pickle.dumps({"epoch": 3}, protocol=2))
    result = scan(tmp_path)
    assert (result.result, result.files) == ("clean", 2)  # safetensors holds no pickle
    assert result.scanner == "picklescan" and result.version


@pytest.mark.parametrize("name", ["payload.pkl", "weights.bin.part", "README"])
def test_a_pickle_that_runs_a_command_is_dangerous_under_any_name(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / name).write_bytes(EVIL)
    result = scan(tmp_path / name)
    assert result.result == "dangerous"
    assert any("system" in f for f in result.findings)


@pytest.mark.parametrize("name", ["model.pt", "pytorch_model.bin", "checkpoint"])
def test_a_malicious_pickle_inside_a_torch_checkpoint_is_dangerous(
    tmp_path: Path, name: str
) -> None:
    torch_checkpoint(tmp_path / name, EVIL)
    assert scan(tmp_path / name).result == "dangerous"


# --- digest ----------------------------------------------------------------------------------


def test_digest_is_stable_and_equals_model_signing_subject(tmp_path: Path) -> None:
    first = model_dir(tmp_path / "a")
    second = model_dir(tmp_path / "b", order=("tokenizer", "weights", "config"))
    subject = Payload(model_signing.hashing.hash(first)).statement.pb.subject[0]
    assert digest(first) == digest(first) == digest(second)
    assert digest(first) == f"sha256:{subject.digest['sha256']}"


def test_download_metadata_does_not_change_the_digest(tmp_path: Path) -> None:
    model = model_dir(tmp_path)
    before = digest(model)
    metadata = model / ".cache" / "huggingface" / "download"
    metadata.mkdir(parents=True)
    (metadata / "model.safetensors.metadata").write_text("0123abc\netag\n1764460000.0\n")
    assert digest(model) == before
    (model / ".cache" / "other.bin").write_bytes(b"not metadata")
    assert digest(model) != before


def test_digest_changes_with_any_byte(tmp_path: Path) -> None:
    model = model_dir(tmp_path)
    before = digest(model)
    (model / "config.json").write_bytes(b'{"model_type": "bert "}')
    assert digest(model) != before


# --- approve-model ---------------------------------------------------------------------------


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, Path]:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "signer.key"
    pub = tmp_path / "signer.pub"
    pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pem, pub


def test_approve_a_signed_directory_model(
    tmp_path: Path, key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = model_dir(tmp_path)
    signature = tmp_path / "fraud.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=key[0]).sign(
        model, signature
    )
    code, out, err = run(
        capsys,
        "approve-model",
        str(model),
        "--version=3",
        "--uri=hf://acme/fraud@0123456789abcdef0123456789abcdef01234567",
        f"--signature={signature}",
        f"--public-key={key[1]}",
    )
    assert code == 0, err
    doc = yaml.safe_load(out)
    approved = ApprovedModel.model_validate(doc)
    assert approved.metadata.name == "fraud-3"
    assert approved.spec.digest == digest(model)
    assert approved.spec.scan is not None and approved.spec.scan.result == "clean"
    assert approved.spec.signature is not None
    assert approved.spec.signature.signer == key_id(key[1].read_text())
    # mlgate re-verifies the stored bundle whenever it reads the approval.
    compiled = compile_approval(approved)
    assert compiled.signer is not None and compiled.signer.key_id == key_id(key[1].read_text())
    assert compiled.signature_problem is None


def test_a_signature_over_other_files_refuses(
    tmp_path: Path, key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = model_dir(tmp_path)
    signature = tmp_path / "fraud.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=key[0]).sign(
        model, signature
    )
    (model / "extra.py").write_text("import os\n")
    code, _, err = run(
        capsys, "approve-model", str(model), "--version=3", f"--signature={signature}",
        f"--public-key={key[1]}",
    )  # fmt: skip
    assert code == 1
    assert "does not verify" in err and "extra.py" in err


def test_unsafe_checkpoint_is_refused_unless_allowed_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m"
    model.mkdir()
    torch_checkpoint(model / "pytorch_model.bin", EVIL)
    code, out, err = run(capsys, "approve-model", str(model), "--version=1")
    assert (code, out) == (1, "")
    assert "dangerous" in err and "--allow-unsafe --reason" in err
    code, _, err = run(capsys, "approve-model", str(model), "--version=1", "--allow-unsafe")
    assert code == 2 and "--reason" in err
    output = tmp_path / "approved.yaml"
    code, _, err = run(
        capsys, "approve-model", str(model), "--version=1", "--allow-unsafe",
        "--reason=vendor checkpoint, runs in a sandbox", f"--output={output}",
    )  # fmt: skip
    assert code == 0, err
    scan_record = yaml.safe_load(output.read_text())["spec"]["scan"]
    assert scan_record["result"] == "dangerous"
    assert scan_record["allowedUnsafeReason"] == "vendor checkpoint, runs in a sandbox"
    assert not Path("/tmp/mlgate-pwned").exists()


def test_approve_a_missing_path_fails_with_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "approve-model", str(tmp_path / "nope"), "--version=1")
    assert code == 1 and "nope" in err and "Traceback" not in err


# --- verify-model ----------------------------------------------------------------------------


def test_verify_model_clean_tampered_extended_and_symlinked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = model_dir(tmp_path)
    approved = digest(model)
    code, out, _ = run(capsys, "verify-model", f"--digest={approved}", str(model))
    assert code == 0 and "verified" in out

    (model / "extra.bin").write_bytes(EVIL)  # extended
    code, _, err = run(capsys, "verify-model", f"--digest={approved}", str(model))
    assert code == 1 and "NOT VERIFIED" in err
    (model / "extra.bin").unlink()

    original = (model / "config.json").read_bytes()
    (model / "config.json").write_bytes(b'{"model_type": "evil"}')  # tampered
    code, _, err = run(capsys, "verify-model", f"--digest={approved}", str(model))
    assert code == 1 and "NOT VERIFIED" in err
    (model / "config.json").write_bytes(original)

    (model / "tok" / "vocab.pkl").unlink()  # missing
    code, _, err = run(capsys, "verify-model", f"--digest={approved}", str(model))
    assert code == 1
    (model / "tok" / "vocab.pkl").symlink_to(tmp_path / "elsewhere.pkl")
    (tmp_path / "elsewhere.pkl").write_bytes(pickle.dumps({"hello": 1, "world": 2}, protocol=4))
    code, _, err = run(capsys, "verify-model", f"--digest={approved}", str(model))
    assert code == 1 and "symlink" in err


def test_verify_model_needs_a_digest(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "verify-model", "/mnt/models")
    assert code == 2 and "--digest" in err


@pytest.mark.parametrize(
    "trust",
    [
        (),
        ("--trust-root=t.json", "--identity=ml@acme.com"),  # no issuer
        ("--public-key=k.pub", "--certificate-chain=ca.pem"),  # two ways at once
    ],
)
def test_a_signature_needs_exactly_one_complete_way_to_verify_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trust: tuple[str, ...]
) -> None:
    model = model_dir(tmp_path)
    for command in (("approve-model", "--version=1"), ("verify-model",)):
        code, _, err = run(capsys, *command, str(model), "--signature=s.sig", *trust)
        assert code == 2 and "exactly one" in err


def test_an_unreadable_trust_root_is_reported_not_raised(
    tmp_path: Path, key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = model_dir(tmp_path)
    signature = tmp_path / "fraud.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=key[0]).sign(
        model, signature
    )
    (tmp_path / "trust.json").write_text("{}")
    code, _, err = run(
        capsys, "approve-model", str(model), "--version=1", f"--signature={signature}",
        f"--trust-root={tmp_path / 'trust.json'}", "--identity=ml@acme.com",
        "--issuer=https://idp.acme.com",
    )  # fmt: skip
    assert code == 1 and "does not verify" in err and "Traceback" not in err


# --- certificate-chain signatures --------------------------------------------------------------


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    email: str | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=issuer is not None,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=issuer is None,
                crl_sign=issuer is None,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if email:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_certificate_chain_signature_records_the_signing_identity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("ML signing CA", ca_key, None)
    leaf = _certificate("release", leaf_key, ("ML signing CA", ca_key), "ml-release@acme.com")
    pem = serialization.Encoding.PEM
    ca_file = _pem_file(tmp_path / "ca.pem", ca.public_bytes(pem))
    leaf_file = _pem_file(tmp_path / "leaf.pem", leaf.public_bytes(pem))
    key_file = _pem_file(
        tmp_path / "leaf.key",
        leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    model = model_dir(tmp_path)
    signature = tmp_path / "fraud.sig"
    model_signing.signing.Config().use_certificate_signer(
        private_key=key_file, signing_certificate=leaf_file, certificate_chain=[ca_file]
    ).sign(model, signature)
    code, out, err = run(
        capsys, "approve-model", str(model), "--version=3", f"--signature={signature}",
        f"--certificate-chain={ca_file}",
    )  # fmt: skip
    assert code == 0, err
    assert yaml.safe_load(out)["spec"]["signature"] == {
        "method": "certificate",
        "signer": "ml-release@acme.com",
    }
    other_ca = _certificate("Other CA", ec.generate_private_key(ec.SECP256R1()), None)
    other = _pem_file(tmp_path / "other.pem", other_ca.public_bytes(pem))
    code, _, err = run(
        capsys, "approve-model", str(model), "--version=3", f"--signature={signature}",
        f"--certificate-chain={other}",
    )  # fmt: skip
    assert code == 1 and "does not verify" in err
