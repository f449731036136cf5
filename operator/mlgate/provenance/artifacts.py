"""A model's content digest, its unsafe-serialisation scan and its OMS signature (file I/O).

Digest: the subject of an OpenSSF Model Signing (OMS) statement, computed by the `model-signing`
library itself: each regular file is hashed (SHA-256), and the digest is the SHA-256 of those
digests in file-name order. So an approval's `digest` equals the subject of a signature over the
same files, and a single file approved alone equals the directory a server downloads it into.
Symbolic links are refused (model-signing's default), so nothing outside the model is hashed.
Besides model-signing's default `.git*` paths, download metadata is left out: huggingface_hub
writes `.cache/huggingface/` (etags, timestamps) into the directory it downloads a repository
to, which would make every download differ from the approved files.

Scan: picklescan (the scanner Hugging Face runs on the Hub) over every file that a loader may
unpickle: by extension (.pkl, .pt, .bin, .joblib, .npy, .zip ...) or because it starts like a
pickle (protocol 2+) or a zip archive, which covers torch checkpoints (archive/data.pkl) under
any name. Files are only read, never unpickled.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from model_signing import hashing, manifest
from picklescan import scanner

SCANNER = "picklescan"
# Extensions picklescan treats as pickles, torch checkpoints, numpy arrays or archives.
_SCANNED_SUFFIXES = frozenset(
    {".pkl", ".pickle", ".joblib", ".dat", ".data", ".pt", ".pth", ".bin", ".ckpt", ".npy"}
    | {".npz", ".zip", ".7z", ".pt2", ".mar", ".keras"}
)
_PICKLE_MAGIC = tuple(bytes([0x80, proto]) for proto in range(2, 6))
_ZIP_MAGIC = b"PK\x03\x04"


# Written by downloaders next to the model, different on every download; no loader reads it.
DOWNLOAD_METADATA = (".cache/huggingface",)


class ArtifactError(ValueError):
    """The model cannot be read: missing, a symlink, a special file. The message names it."""


def _manifest(path: Path) -> manifest.Manifest:
    try:
        config = hashing.Config().set_ignored_paths(paths=DOWNLOAD_METADATA)
        return config.hash(path)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: {exc}") from None


def root_digest(files: manifest.Manifest) -> str:
    """The OMS subject digest: SHA-256 over the file digests in name order (as
    model_signing's signing.Payload computes it)."""
    hasher = hashlib.sha256()
    for resource in files.resource_descriptors():
        hasher.update(resource.digest.digest_value)
    return f"sha256:{hasher.hexdigest()}"


def digest(path: Path) -> str:
    """The OMS digest of a model file or directory."""
    return root_digest(_manifest(path))


# ---------------------------------------------------------------------------------------------
# Unsafe-serialisation scan


@dataclass(frozen=True, slots=True)
class Scan:
    scanner: str
    version: str
    result: str  # clean | suspicious | dangerous | error
    findings: tuple[str, ...] = ()  # "file: module.name (dangerous)" and read errors
    files: int = 0  # files scanned

    @property
    def clean(self) -> bool:
        return self.result == "clean"


@dataclass
class _Tally:
    findings: list[str] = field(default_factory=list)
    dangerous: bool = False
    suspicious: bool = False
    error: bool = False
    files: int = 0


def _regular_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _loadable(path: Path) -> bool:
    """Whether a loader may unpickle this file: by its name or its first bytes."""
    if path.suffix.lower() in _SCANNED_SUFFIXES:
        return True
    with path.open("rb") as stream:
        head = stream.read(4)
    return head.startswith(_PICKLE_MAGIC) or head == _ZIP_MAGIC


def _scan_file(path: Path, label: str, tally: _Tally) -> None:
    try:
        with path.open("rb") as stream:
            result = scanner.scan_bytes(stream, label, path.suffix.lower())
    except (OSError, ValueError, RuntimeError, zipfile.BadZipFile, EOFError) as exc:
        tally.error = True
        tally.findings.append(f"{label}: cannot be scanned: {exc}")
        return
    tally.files += 1
    tally.error = tally.error or result.scan_err
    if result.scan_err:
        tally.findings.append(f"{label}: not a readable pickle, so it cannot be vetted")
    for found in result.globals:
        if found.safety is scanner.SafetyLevel.Innocuous:
            continue
        level = found.safety.value
        tally.dangerous = tally.dangerous or found.safety is scanner.SafetyLevel.Dangerous
        tally.suspicious = tally.suspicious or found.safety is scanner.SafetyLevel.Suspicious
        tally.findings.append(f"{label}: imports {found.module}.{found.name} ({level})")


def scan(path: Path) -> Scan:
    """Scan every file a loader may unpickle; anything but `clean` refuses approval."""
    tally = _Tally()
    base = path if path.is_dir() else path.parent
    try:
        for file in _regular_files(path):
            if _loadable(file):
                _scan_file(file, str(file.relative_to(base)), tally)
    except OSError as exc:
        raise ArtifactError(f"{exc.filename or path}: {exc.strerror or exc}") from None
    result = (
        "dangerous"
        if tally.dangerous
        else "error"
        if tally.error
        else "suspicious"
        if tally.suspicious
        else "clean"
    )
    return Scan(SCANNER, version(SCANNER), result, tuple(sorted(set(tally.findings))), tally.files)
