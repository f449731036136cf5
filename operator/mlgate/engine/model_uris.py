"""Model URIs as what they identify: the mutable name and the revision a URI pins.

A reference is immutable when it names one revision of its content, in the form its storage
uses. A table maps each scheme to how a pin is written; `split` turns a URI into the mutable
name and the pin (None when unpinned). Approvals match by `identity`, built from these parts: a
revision only ever matches the same revision. An approval of the mutable name covers the mutable
reference (and its equivalent spellings), never a revision the workload picks, which could be any
old, unvetted one; an approval of a revision covers that revision only, in either spelling
(`hf://o/m@<commit>` and KServe's `hf://o/m:<commit>`; an OCI digest whatever tag labels it).

Nothing here reads policies, so compiled approvals (engine.policy) hold their URIs' identities,
computed once when an ApprovedModel changes rather than on every admission.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mlgate.engine.memo import text_cache

_HEX_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_OCI_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_GCS_GENERATION = re.compile(r"[0-9]+")
_S3_VERSION = re.compile(r"(?:^|&)versionId=([^&]+)")


@dataclass(frozen=True, slots=True)
class Split:
    """A model URI as its mutable name and the revision it pins (None: not pinned)."""

    name: str
    revision: str | None
    # The form of a pin this scheme takes, for the message that asks for one.
    fix: str | None = None


def _hf(uri: str) -> Split:
    """`hf://org/model@<commit>` (the Hub's revision syntax) and KServe's `hf://org/model:<hash>`.
    A branch or tag (`@main`, `@v1`) moves, so only a full commit hash pins."""
    fix = "pin the commit: hf://<org>/<model>@<40-hex commit hash>"
    body = uri[len("hf://") :]
    for sep in ("@", ":"):
        name, found, rev = body.rpartition(sep)
        if found and "/" in name and _HEX_COMMIT.fullmatch(rev):
            return Split(f"hf://{name}", rev, fix)
    return Split(uri, None, fix)


def _s3(uri: str) -> Split:
    name, _, query = uri.partition("?")
    version = _S3_VERSION.search(query)
    fix = "pin the object version: s3://<bucket>/<key>?versionId=<version>"
    if version is None:
        return Split(uri, None, fix)
    return Split(name.rstrip("/"), version.group(1), fix)


def _gs(uri: str) -> Split:
    name, _, generation = uri.partition("#")
    fix = "pin the object generation: gs://<bucket>/<object>#<generation>"
    if not _GCS_GENERATION.fullmatch(generation):
        return Split(uri, None, fix)
    return Split(name.rstrip("/"), generation, fix)


def _oci(uri: str) -> Split:
    """`oci://repo[:tag]@sha256:<hex>`: a digest pins; the tag beside it is only a label."""
    name, found, digest = uri.rpartition("@")
    fix = "pin the manifest digest: oci://<registry>/<repository>@sha256:<digest>"
    if found and _OCI_DIGEST.fullmatch(digest):
        return Split(name, digest, fix)
    return Split(uri, None, fix)


PINNING: dict[str, Callable[[str], Split]] = {
    "hf://": _hf,
    "s3://": _s3,
    "gs://": _gs,
    "oci://": _oci,
}


def split(uri: str) -> Split:
    """The name and pinned revision of a model URI. Schemes without revisions (pvc://, https://)
    are never immutable: what a volume or web server holds can change."""
    text = uri.rstrip("/")
    for prefix, parse in PINNING.items():
        if text.startswith(prefix):
            return parse(text)
    return Split(text, None)


def _repository(oci_name: str) -> str:
    """An OCI name without its tag: a digest identifies the content whatever tag labels it."""
    last = oci_name.rfind("/")
    colon = oci_name.rfind(":")
    return oci_name[:colon] if colon > last else oci_name


# (name, revision): an approval matches a reference when their URIs' identities are equal.
Identity = tuple[str, str | None]


@text_cache(maxsize=4096, max_length=1024)
def identity(uri: str) -> Identity:
    """The (name, revision) an approval of `uri` approves and a reference to `uri` asks for."""
    parts = split(uri)
    if parts.name.startswith("oci://"):
        return _repository(parts.name), parts.revision
    return parts.name, parts.revision
