"""Model provenance: revision-pinned (immutable) references and the evidence approvals carry.

How a URI pins a revision, and how approvals match references by it, is engine.model_uris.
"""

from __future__ import annotations

from mlgate.engine.model_uris import split
from mlgate.engine.policy import Approval, ModelRules, SignatureRequirement


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
