"""Digest pinning: which image fields to rewrite to the digest their signature was verified for.

A tag is a movable pointer: verified at admission, it can be moved to an unsigned image before
(or after) a node pulls it. Rewriting `repo:tag` to `repo:tag@sha256:<verified>` makes the image
that was verified the image that runs, as sigstore's policy-controller and Kyverno's
`mutateDigest` do. The engine decides what to pin; the webhook renders it as a JSONPatch.

Only Enforce policies with `images.signatures` and `images.mutateDigest` (the default) pin, and
only images that verified for every such policy covering them: an image that did not verify is
never pinned, and the validating webhook refuses it. Images already pinned by digest are left as
they are (their digest is what gets verified), which also makes pinning idempotent.

Pinning never changes another rule's verdict, so `mlgate check` and the cluster agree: under an
Enforce `requireDigest` a tag is refused as submitted, not pinned; and the tag stays in the
pinned reference (`latest` when none was given), so `disallowTags` judges what was asked for.

Validation runs after every mutating webhook, so a tag a pinning policy covers must not reach it
unpinned: `unpinned` refuses one that verifies there. That closes the gap of a tag that failed
to verify when the mutating webhook asked and verifies a moment later (moved back and forth, or a
cache entry expiring in between), and of a mutating configuration that is missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from mlgate.engine.decisions import Finding, Mode, Rule, Violation, attribute
from mlgate.engine.images import images_of, signature_entries, signature_findings
from mlgate.engine.policy import CompiledPolicy, Facts, ImageRules
from mlgate.engine.references import InvalidReference, Reference, parse
from mlgate.engine.scope import governing
from mlgate.engine.workloads import ContainerKind, ContainerView, WorkloadView


@dataclass(frozen=True, slots=True)
class Pin:
    path: str  # field path of the image, as ContainerView.image_path spells it
    image: str  # as submitted
    pinned: str  # the same reference with the verified digest appended
    policies: tuple[str, ...]  # the pinning policies covering it


# Requests whose object is the workload itself, so a patch of its images takes effect (a /scale
# request carries a Scale; a /status write cannot change the spec).
PINNED_SUBRESOURCES = frozenset({"", "ephemeralcontainers"})


def pinning_rules(policy: CompiledPolicy) -> ImageRules | None:
    """The image rules of a policy that pins verified tags, or None if it pins nothing."""
    rules = policy.images
    if policy.mode is not Mode.ENFORCE or rules is None:
        return None
    return rules if rules.signatures is not None and rules.mutate_digest else None


def _tag_only(c: ContainerView) -> Reference | None:
    if c.kind is ContainerKind.MODEL:
        return None  # never rewritten: its approval names a revision (engine.images)
    try:
        ref = parse(c.image or "")
    except InvalidReference:
        return None  # the registry rule refuses it
    return ref if ref.digest is None else None


def plan(policies: tuple[CompiledPolicy, ...], view: WorkloadView, facts: Facts) -> list[Pin]:
    """The pins for `view`; `facts.images` must hold the verification results (None: nothing
    was verified, so nothing can be pinned)."""
    if facts.images is None:
        return []
    governed = governing(policies, view.namespace, facts.namespace_labels, view.kind, view.labels)
    if any(p.mode is Mode.ENFORCE and p.images and p.images.require_digest for p in governed):
        return []  # every tag is refused as submitted (images.digest)
    pinners = [(p, rules) for p in governed if (rules := pinning_rules(p)) is not None]
    pins: list[Pin] = []
    for c in images_of(view) if pinners else ():
        ref = _tag_only(c)
        if ref is None:
            continue
        covering = [
            (p.name, r) for p, r in pinners if r.signatures and signature_entries(r.signatures, ref)
        ]
        fact = facts.images.get(c.image or "")
        if not covering or fact is None or fact.digest is None:
            continue
        if any(next(signature_findings(r, ref, c, facts.images), None) for _, r in covering):
            continue  # not verified: never pinned, and the validating webhook refuses it
        names = tuple(name for name, _ in covering)
        tag = "" if ref.tag else f":{ref.effective_tag}"
        pins.append(Pin(c.image_path, c.image or "", f"{c.image}{tag}@{fact.digest}", names))
    return pins


def unpinned(
    policies: tuple[CompiledPolicy, ...],
    view: WorkloadView,
    facts: Facts,
    before: WorkloadView | None = None,
) -> list[Violation]:
    """At validation, after the mutating webhook: verified tags it should have pinned.

    An image an UPDATE leaves where it was (`before`: the old object) is not new: it was judged
    when it came in, and on a subresource such as pods/ephemeralcontainers the apiserver keeps
    the old containers whatever the mutating webhook patched.
    """
    kept = {(c.image_path, c.image) for c in images_of(before)} if before else set()
    return [
        v
        for pin in plan(policies, view, facts)
        if (pin.path, pin.image) not in kept
        for name in pin.policies
        for v in attribute(
            name,
            Mode.ENFORCE,
            [
                Finding(
                    Rule.IMAGES_DIGEST,
                    pin.path,
                    f"image {pin.image!r} verified by tag but reached validation without its "
                    f"digest; mlgate's mutating webhook pins it as {pin.pinned}: reference the "
                    "image by digest, or retry (mlgate routes its mutating webhook within "
                    "seconds of a pinning policy coming into force) and check that its "
                    "MutatingWebhookConfiguration is installed",
                )
            ],
        )
    ]


# ---------------------------------------------------------------------------------------------
# Field paths as JSON pointers (RFC 6901)


class InvalidPath(ValueError):
    """A field path that workloads.field() cannot have produced."""


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"\[(\d+)\]")
_DECODER = json.JSONDecoder()


def _tokens(path: str) -> Iterator[str]:
    """The keys and indices of a path such as `spec.x["a.b"].containers[0].image`."""
    pos = 0
    while pos < len(path):
        if path.startswith('["', pos):
            key, end = _DECODER.raw_decode(path, pos + 1)
            if not isinstance(key, str) or not path.startswith("]", end):
                raise InvalidPath(f"unterminated quoted key at {pos} in {path!r}")
            yield key
            pos = end + 1
            continue
        if index := _INDEX.match(path, pos):
            yield index.group(1)
            pos = index.end()
            continue
        start = pos + 1 if pos and path.startswith(".", pos) else pos
        plain = _PLAIN_KEY.match(path, start)
        if plain is None or (pos and start == pos):
            raise InvalidPath(f"unexpected {path[pos : pos + 10]!r} at {pos} in {path!r}")
        yield plain.group()
        pos = plain.end()


def json_pointer(path: str) -> str:
    """The JSON pointer of a field path, e.g. `spec.containers[0].image` -> /spec/containers/0/
    image; quoted keys are unquoted and `~` and `/` escaped as RFC 6901 requires."""
    try:
        tokens = list(_tokens(path))
    except ValueError as exc:
        raise InvalidPath(f"cannot read field path {path!r}: {exc}") from exc
    if not tokens:
        raise InvalidPath("empty field path")
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)
