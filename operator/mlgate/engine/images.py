"""Image rules: registry allowlist, digest pinning, disallowed tags, signature facts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.policy import ImageFact, ImageRules, SignatureRule
from mlgate.engine.references import InvalidReference, Reference, matches_any, parse
from mlgate.engine.workloads import ContainerKind, ContainerView, WorkloadView

OCI_MODEL = "oci://"


def _artifact(image: str, path: str, kind: ContainerKind) -> ContainerView:
    return ContainerView(
        path=path,
        name="",
        kind=kind,
        image=image,
        image_path=path,
        resources={},
        resources_path=path,
        env=(),
    )


def oci_models(view: WorkloadView) -> Iterator[ContainerView]:
    """`oci://` model references of the kind's own fields (KServe runs them as modelcars): OCI
    model artifacts are judged by the image rules like any image."""
    for ref in view.model_refs:
        value = ref.value.strip()
        if value.startswith(OCI_MODEL):
            yield _artifact(value[len(OCI_MODEL) :], ref.path, ContainerKind.MODEL)


def images_of(view: WorkloadView) -> Iterator[ContainerView]:
    for pod in view.pods:
        for container in pod.containers:
            if container.image is not None:
                yield container
    yield from oci_models(view)


# The rules below append to `into` rather than yield: every image of every workload goes
# through them, nearly always finding nothing, and a generator each would cost more than that.


def _registry(rules: ImageRules, ref: Reference, c: ContainerView, into: list[Finding]) -> None:
    if rules.allowed_registries is not None and not matches_any(rules.allowed_registries, ref):
        allowed = ", ".join(p.source for p in rules.allowed_registries) or "(none)"
        into.append(
            Finding(
                Rule.IMAGES_REGISTRY,
                c.image_path,
                f"image {c.image!r} resolves to {ref.repository}, which is not in an allowed "
                f"registry; use an image from: {allowed}",
            )
        )


def _pinning(rules: ImageRules, ref: Reference, c: ContainerView, into: list[Finding]) -> None:
    if rules.require_digest and ref.digest is None:
        into.append(
            Finding(
                Rule.IMAGES_DIGEST,
                c.image_path,
                f"image {c.image!r} is not pinned by digest; reference it as "
                f"{ref.repository}@sha256:<digest>",
            )
        )
    if not rules.disallow_tags:
        return
    tag = ref.effective_tag
    if tag is not None and tag.lower() in rules.disallow_tags:
        implicit = " (implicit when no tag is given)" if ref.tag is None else ""
        into.append(
            Finding(
                Rule.IMAGES_TAG,
                c.image_path,
                f"image {c.image!r} uses disallowed tag {tag!r}{implicit}; use a versioned tag "
                "or a digest",
            )
        )


def signature_entries(rules: tuple[SignatureRule, ...], ref: Reference) -> list[SignatureRule]:
    return [entry for entry in rules if matches_any(entry.images, ref)]


def _signature_problem(
    entries: list[SignatureRule], ref: Reference, fact: ImageFact | None
) -> str | None:
    if not entries:
        return "no signature rule covers this image, so it cannot be trusted"
    if fact is None:
        return "no signature verification result was available"
    if fact.error is not None:
        return fact.error
    if fact.digest is None:  # a signature over no known digest vouches for nothing
        return "the verification result names no digest"
    if ref.digest is not None and fact.digest != ref.digest:
        return f"the verified digest {fact.digest} is not the pinned digest {ref.digest}"
    trusted = frozenset().union(*(e.key_ids for e in entries))
    if not fact.verified_by & trusted:
        return "no signature by a trusted key was found"
    return None


def _unpinnable_tag(
    rules: ImageRules, ref: Reference, c: ContainerView, fact: ImageFact | None
) -> Iterator[Finding]:
    """Without digest mutation a verified tag could be moved to another image after admission,
    so signatures hold only for images already pinned by digest. `oci://` model references are
    never rewritten (their approvals name revisions), so they must come pinned."""
    model = c.kind is ContainerKind.MODEL
    if (rules.mutate_digest and not model) or rules.require_digest or ref.digest is not None:
        return  # pinned at admission, or already reported by the digest rule
    resolved = f" (it resolves to {fact.digest} now)" if fact and fact.digest else ""
    if model:
        yield Finding(
            Rule.IMAGES_DIGEST,
            c.image_path,
            f"OCI model {OCI_MODEL}{c.image} is referenced by tag only, so the tag could be "
            "moved to an unsigned artifact after admission; reference it by digest as "
            f"{OCI_MODEL}{ref.repository}@sha256:<digest>{resolved}",
        )
        return
    yield Finding(
        Rule.IMAGES_DIGEST,
        c.image_path,
        f"image {c.image!r} is referenced by tag only, and this policy verifies signatures "
        "without pinning tags (images.mutateDigest: false), so the tag could be moved to an "
        f"unsigned image after admission; reference it by digest as "
        f"{ref.repository}@sha256:<digest>{resolved}, or set images.mutateDigest: true",
    )


def signature_findings(
    rules: ImageRules, ref: Reference, c: ContainerView, facts: Mapping[str, ImageFact] | None
) -> Iterator[Finding]:
    if rules.signatures is None:
        return
    entries = signature_entries(rules.signatures, ref)
    if entries:
        yield from _unpinnable_tag(
            rules, ref, c, None if facts is None else facts.get(c.image or "")
        )
    if entries and facts is None:
        return  # only a caller with registry access can judge it; `unverified` notes it
    # An image no entry covers is refused whatever a registry would say, so say it offline too.
    fact = None if facts is None else facts.get(c.image or "")
    problem = _signature_problem(entries, ref, fact)
    if problem is not None:
        yield Finding(
            Rule.IMAGES_SIGNATURE,
            c.image_path,
            f"image {c.image!r} is not verifiably signed: {problem}; sign it with a trusted "
            "cosign key (cosign sign --key ...)",
        )


def check(
    rules: ImageRules, view: WorkloadView, facts: Mapping[str, ImageFact] | None
) -> list[Finding]:
    """Findings for every container image; `facts` None means signatures were not verified."""
    findings: list[Finding] = []
    for c in images_of(view):
        try:
            ref = parse(c.image or "")
        except InvalidReference as exc:
            findings.append(
                Finding(Rule.IMAGES_REGISTRY, c.image_path, f"invalid image {c.image!r}: {exc}")
            )
            continue
        _registry(rules, ref, c, findings)
        _pinning(rules, ref, c, findings)
        if rules.signatures is not None:
            findings.extend(signature_findings(rules, ref, c, facts))
    return findings


def unverified(rules: ImageRules, view: WorkloadView) -> list[str]:
    """Images whose signatures a caller without registry access could not judge."""
    if rules.signatures is None:
        return []
    return [
        f"{c.image_path}: {c.image} (signature not verified offline)"
        for c in images_of(view)
        if _covered(rules.signatures, c.image or "")
    ]


def _covered(entries: tuple[SignatureRule, ...], image: str) -> bool:
    try:
        return bool(signature_entries(entries, parse(image)))
    except InvalidReference:
        return False
