"""Model provenance: revision-pinned (immutable) references and the evidence approvals carry.

A reference is immutable when it names one revision of its content, in the form its storage
uses. A table maps each scheme to how a pin is written; `split` turns a URI into the mutable
name and the pin (None when unpinned). Approvals match by these parts, and a revision only ever
matches the same revision: an approval of the mutable name covers the mutable reference (and its
equivalent spellings), never a revision the workload picks, which could be any old, unvetted one;
an approval of a revision covers that revision only, in either spelling (`hf://o/m@<commit>` and
KServe's `hf://o/m:<commit>`; an OCI digest whatever tag labels it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mlgate.engine.policy import Approval, ModelRules, SignatureRequirement

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


def covers(approved_uri: str, wanted_uri: str) -> bool:
    """Whether an approval of `approved_uri` approves the reference `wanted_uri`."""
    approved, wanted = split(approved_uri), split(wanted_uri)
    if wanted.revision != approved.revision:
        return False
    if approved.name.startswith("oci://"):
        return _repository(approved.name) == _repository(wanted.name)
    return approved.name == wanted.name


def immutability_problem(uri: str) -> str | None:
    """Why a URI does not pin one revision, with the form of a pin; None when it does."""
    parts = split(uri)
    if parts.revision is not None:
        return None
    if parts.fix is None:
        return (
            f"model {uri!r} does not pin a revision and its scheme cannot: use a revision-pinned "
            "reference (hf://...@<commit>, s3://...?versionId=, gs://...#<generation>, "
            "oci://...@sha256:)"
        )
    return f"model {uri!r} follows whatever its name points to next; {parts.fix}"


# ---------------------------------------------------------------------------------------------
# Evidence


def missing_evidence(approval: Approval, rules: ModelRules) -> list[str]:
    """The evidence an approval lacks for these rules, each in words for the message."""
    missing = []
    if rules.require_digest and approval.digest is None:
        missing.append("a content digest (mlgate approve-model)")
    if rules.require_scan and approval.scan_result != "clean":
        found = approval.scan_result or "none recorded"
        missing.append(f"a clean unsafe-serialisation scan (scan: {found})")
    if rules.require_signature is not None:
        problem = _signature_problem(approval, rules.require_signature)
        if problem:
            missing.append(problem)
    return missing


def _signature_problem(approval: Approval, wanted: SignatureRequirement) -> str | None:
    signer = approval.signer
    if signer is None and approval.signature_problem:
        problem = approval.signature_problem
        return f"a verified OMS signature (the recorded one does not count: {problem})"
    if signer is None:
        return "a verified OMS signature (approve-model --signature)"
    if not wanted.key_ids and not wanted.identities:
        return None
    if signer.key_id is not None and signer.key_id in wanted.key_ids:
        return None
    if signer.identity is not None and any(
        identity == signer.identity and (issuer is None or issuer == signer.issuer)
        for identity, issuer in wanted.identities
    ):
        return None
    return f"a signature by an allowed key or identity (signed by {signer.describe()})"
