"""Image rules: registry allowlist, digest pinning, disallowed tags and signature facts."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mlgate.api.compile import compile_policy, key_id, parse_resource
from mlgate.engine import images
from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.policy import ImageFact, ImageRules, KeyRef, SignatureRule
from mlgate.engine.references import compile_pattern
from mlgate.engine.workloads import WorkloadView, view

DIGEST = "sha256:" + "4f1c" * 16
OTHER_DIGEST = "sha256:" + "9a0b" * 16


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


TRUSTED_PEM = _pem()
UNTRUSTED_PEM = _pem()
TRUSTED = key_id(TRUSTED_PEM)
UNTRUSTED = key_id(UNTRUSTED_PEM)
SECRET_KEY = "secret:mlgate-system/cosign-keys/cosign.pub"


def rules(**images_spec: Any) -> ImageRules:
    doc = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": "production-ml"},
        "spec": {"images": images_spec},
    }
    compiled = compile_policy(parse_resource(doc))
    assert compiled.images is not None
    return compiled.images


def deployment(*images_: str, init: tuple[dict[str, Any], ...] = ()) -> WorkloadView:
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fraud-api", "namespace": "team-a"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "fraud-api"}},
            "template": {
                "metadata": {"labels": {"app": "fraud-api"}},
                "spec": {
                    "initContainers": list(init),
                    "containers": [
                        {"name": f"c{i}", "image": image, "ports": [{"containerPort": 8080}]}
                        for i, image in enumerate(images_)
                    ],
                },
            },
        },
    }
    result = view(obj)
    assert isinstance(result, WorkloadView)
    return result


IMAGE_0 = "spec.template.spec.containers[0].image"
IMAGE_1 = "spec.template.spec.containers[1].image"

REGISTRIES = ["registry.example.com/ml/*", "ghcr.io/acme/*"]


# --- registry allowlist ----------------------------------------------------------------------


def test_allowed_images_pass() -> None:
    r = rules(allowedRegistries=REGISTRIES)
    w = deployment("registry.example.com/ml/fraud:1.4", f"ghcr.io/acme/sidecar@{DIGEST}")
    assert images.check(r, w, None) == []


def test_registry_violation_is_exact() -> None:
    r = rules(allowedRegistries=REGISTRIES)
    w = deployment("registry.example.com/ml/fraud:1.4", "evil.example/ghcr.io/acme/x:1")
    assert images.check(r, w, None) == [
        Finding(
            Rule.IMAGES_REGISTRY,
            IMAGE_1,
            "image 'evil.example/ghcr.io/acme/x:1' resolves to evil.example/ghcr.io/acme/x, "
            "which is not in an allowed registry; use an image from: "
            "registry.example.com/ml/*, ghcr.io/acme/*",
        )
    ]


@pytest.mark.parametrize(
    "image",
    [
        "nginx",
        "acme/x:1",
        "ghcr.io/acme-evil/x:1",
        "ghcr.io.evil.com/acme/x:1",
        "registry.example.com:5000/ml/x:1",
        "registry.example.com/mlops/x:1",
    ],
)
def test_look_alike_registries_are_denied(image: str) -> None:
    findings = images.check(rules(allowedRegistries=REGISTRIES), deployment(image), None)
    assert [(f.rule, f.path) for f in findings] == [(Rule.IMAGES_REGISTRY, IMAGE_0)]


def test_empty_allowlist_denies_everything() -> None:
    findings = images.check(rules(allowedRegistries=[]), deployment("ghcr.io/acme/x:1"), None)
    assert [f.message for f in findings] == [
        "image 'ghcr.io/acme/x:1' resolves to ghcr.io/acme/x, which is not in an allowed "
        "registry; use an image from: (none)"
    ]


def test_no_allowlist_allows_any_registry() -> None:
    assert images.check(rules(requireDigest=False), deployment("quay.io/any/x:1"), None) == []


def test_init_sidecar_and_ephemeral_images_are_judged() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "debug-me", "namespace": "team-a"},
        "spec": {
            "initContainers": [
                {"name": "fetch", "image": "busybox:1.36"},
                {"name": "proxy", "image": "envoyproxy/envoy:v1.30", "restartPolicy": "Always"},
            ],
            "containers": [{"name": "app", "image": "ghcr.io/acme/app:1"}],
            "ephemeralContainers": [{"name": "debugger", "image": "ghcr.io/evil/shell:1"}],
        },
    }
    w = view(obj)
    assert isinstance(w, WorkloadView)
    findings = images.check(rules(allowedRegistries=["ghcr.io/acme/*"]), w, None)
    assert [(f.rule, f.path) for f in findings] == [
        (Rule.IMAGES_REGISTRY, "spec.initContainers[0].image"),
        (Rule.IMAGES_REGISTRY, "spec.initContainers[1].image"),
        (Rule.IMAGES_REGISTRY, "spec.ephemeralContainers[0].image"),
    ]


@pytest.mark.parametrize(
    "image", ["", "ghcr.io/Acme/x", "ghcr.io/acme/x@sha256:123", "ghcr.io/acme/x:l\u0430test"]
)
def test_invalid_images_are_violations_not_crashes(image: str) -> None:
    findings = images.check(rules(allowedRegistries=["ghcr.io/acme/*"]), deployment(image), None)
    assert len(findings) == 1
    assert findings[0].rule is Rule.IMAGES_REGISTRY
    assert findings[0].path == IMAGE_0
    assert findings[0].message.startswith(f"invalid image {image!r}: ")


def test_invalid_image_is_a_violation_even_without_allowlist() -> None:
    findings = images.check(rules(requireDigest=True), deployment("Not An Image"), None)
    assert [f.rule for f in findings] == [Rule.IMAGES_REGISTRY]


# --- digests and tags ------------------------------------------------------------------------


def test_require_digest() -> None:
    r = rules(requireDigest=True)
    w = deployment("ghcr.io/acme/x:1", f"ghcr.io/acme/y@{DIGEST}")
    assert images.check(r, w, None) == [
        Finding(
            Rule.IMAGES_DIGEST,
            IMAGE_0,
            "image 'ghcr.io/acme/x:1' is not pinned by digest; reference it as "
            "ghcr.io/acme/x@sha256:<digest>",
        )
    ]


def test_tag_and_digest_counts_as_pinned() -> None:
    assert (
        images.check(rules(requireDigest=True), deployment(f"ghcr.io/acme/x:1@{DIGEST}"), None)
        == []
    )


def test_implicit_latest_is_a_disallowed_tag() -> None:
    assert images.check(rules(disallowTags=["latest"]), deployment("ghcr.io/acme/x"), None) == [
        Finding(
            Rule.IMAGES_TAG,
            IMAGE_0,
            "image 'ghcr.io/acme/x' uses disallowed tag 'latest' (implicit when no tag is "
            "given); use a versioned tag or a digest",
        )
    ]


@pytest.mark.parametrize(
    "image", ["ghcr.io/acme/x:latest", "ghcr.io/acme/x:LATEST", "ghcr.io/acme/x:Latest"]
)
def test_disallowed_tags_ignore_case(image: str) -> None:
    findings = images.check(rules(disallowTags=["latest"]), deployment(image), None)
    assert [(f.rule, f.path) for f in findings] == [(Rule.IMAGES_TAG, IMAGE_0)]
    assert "(implicit" not in findings[0].message


def test_policy_tags_are_case_insensitive_too() -> None:
    findings = images.check(
        rules(disallowTags=["Latest"]), deployment("ghcr.io/acme/x:latest"), None
    )
    assert [f.rule for f in findings] == [Rule.IMAGES_TAG]


def test_tag_with_digest_is_still_judged_by_its_tag() -> None:
    # The digest pins the image, but the manifest still says `latest`: the tag rule is literal.
    findings = images.check(
        rules(disallowTags=["latest"], requireDigest=True),
        deployment(f"ghcr.io/acme/x:latest@{DIGEST}"),
        None,
    )
    assert [(f.rule, f.path) for f in findings] == [(Rule.IMAGES_TAG, IMAGE_0)]


def test_digest_only_has_no_implicit_latest() -> None:
    assert (
        images.check(rules(disallowTags=["latest"]), deployment(f"ghcr.io/acme/x@{DIGEST}"), None)
        == []
    )


def test_other_tags_pass() -> None:
    r = rules(disallowTags=["latest", "dev"])
    assert (
        images.check(r, deployment("ghcr.io/acme/x:1.2.3", "ghcr.io/acme/y:latest-1"), None) == []
    )


# --- signatures ------------------------------------------------------------------------------


def signed_rules(**extra: Any) -> ImageRules:
    return rules(
        signatures=[
            {"images": ["registry.example.com/ml/*"], "keys": [{"publicKey": TRUSTED_PEM}]},
            {
                "images": ["ghcr.io/acme/*"],
                "keys": [
                    {
                        "secretRef": {
                            "namespace": "mlgate-system",
                            "name": "cosign-keys",
                            "key": "cosign.pub",
                        }
                    }
                ],
            },
        ],
        **extra,
    )


PINNED = f"registry.example.com/ml/fraud@{DIGEST}"
SIGNATURE_HINT = "; sign it with a trusted cosign key (cosign sign --key ...)"


def _signature_messages(image: str, facts: dict[str, ImageFact]) -> list[str]:
    findings = images.check(signed_rules(), deployment(image), facts)
    assert all(f.rule is Rule.IMAGES_SIGNATURE and f.path == IMAGE_0 for f in findings)
    return [f.message for f in findings]


def test_verified_by_trusted_key_passes() -> None:
    facts = {PINNED: ImageFact(digest=DIGEST, verified_by=frozenset({TRUSTED}))}
    assert _signature_messages(PINNED, facts) == []


def test_verified_by_trusted_secret_key_passes() -> None:
    image = "ghcr.io/acme/x:1"
    facts = {image: ImageFact(digest=DIGEST, verified_by=frozenset({SECRET_KEY}))}
    assert _signature_messages(image, facts) == []


def test_verified_by_one_of_several_keys_passes() -> None:
    facts = {PINNED: ImageFact(digest=DIGEST, verified_by=frozenset({UNTRUSTED, TRUSTED}))}
    assert _signature_messages(PINNED, facts) == []


def test_image_without_covering_entry() -> None:
    image = f"quay.io/other/x@{DIGEST}"
    facts = {image: ImageFact(digest=DIGEST, verified_by=frozenset({TRUSTED}))}
    assert _signature_messages(image, facts) == [
        f"image {image!r} is not verifiably signed: no signature rule covers this image, so it "
        f"cannot be trusted{SIGNATURE_HINT}"
    ]


def test_missing_fact() -> None:
    assert _signature_messages(PINNED, {}) == [
        f"image {PINNED!r} is not verifiably signed: no signature verification result was "
        f"available{SIGNATURE_HINT}"
    ]


def test_facts_are_keyed_by_the_image_as_written() -> None:
    # A fact for another spelling of the image does not vouch for this one.
    facts = {"docker.io/library/nginx:1": ImageFact(DIGEST, frozenset({TRUSTED}))}
    findings = images.check(
        rules(signatures=[{"images": ["nginx"], "keys": [{"publicKey": TRUSTED_PEM}]}]),
        deployment("nginx:1"),
        facts,
    )
    assert [f.rule for f in findings] == [Rule.IMAGES_SIGNATURE]


def test_fact_error() -> None:
    facts = {PINNED: ImageFact(error="registry.example.com: connection refused")}
    assert _signature_messages(PINNED, facts) == [
        f"image {PINNED!r} is not verifiably signed: registry.example.com: connection "
        f"refused{SIGNATURE_HINT}"
    ]


def test_fact_error_wins_over_a_verification() -> None:
    facts = {PINNED: ImageFact(DIGEST, frozenset({TRUSTED}), error="signature expired")}
    assert len(_signature_messages(PINNED, facts)) == 1


def test_digest_mismatch_between_pin_and_fact() -> None:
    facts = {PINNED: ImageFact(digest=OTHER_DIGEST, verified_by=frozenset({TRUSTED}))}
    assert _signature_messages(PINNED, facts) == [
        f"image {PINNED!r} is not verifiably signed: the verified digest {OTHER_DIGEST} is not "
        f"the pinned digest {DIGEST}{SIGNATURE_HINT}"
    ]


def test_fact_without_digest_does_not_verify() -> None:
    # A signature "verified" over no known digest vouches for nothing.
    image = "registry.example.com/ml/fraud:1.4"
    facts = {image: ImageFact(digest=None, verified_by=frozenset({TRUSTED}))}
    assert _signature_messages(image, facts) == [
        f"image {image!r} is not verifiably signed: the verification result names no digest"
        f"{SIGNATURE_HINT}"
    ]


def test_verified_by_untrusted_key() -> None:
    facts = {PINNED: ImageFact(digest=DIGEST, verified_by=frozenset({UNTRUSTED}))}
    assert _signature_messages(PINNED, facts) == [
        f"image {PINNED!r} is not verifiably signed: no signature by a trusted key was found"
        f"{SIGNATURE_HINT}"
    ]


def test_unsigned() -> None:
    facts = {PINNED: ImageFact(digest=DIGEST)}
    assert len(_signature_messages(PINNED, facts)) == 1


def test_key_of_another_entry_is_not_trusted() -> None:
    # ghcr.io/acme/* trusts only the Secret key; the inline key of the other entry is no good.
    image = "ghcr.io/acme/x:1"
    facts = {image: ImageFact(digest=DIGEST, verified_by=frozenset({TRUSTED}))}
    assert len(_signature_messages(image, facts)) == 1


def test_empty_signature_list_trusts_nothing() -> None:
    r = rules(signatures=[])
    facts = {PINNED: ImageFact(digest=DIGEST, verified_by=frozenset({TRUSTED}))}
    findings = images.check(r, deployment(PINNED), facts)
    assert [f.rule for f in findings] == [Rule.IMAGES_SIGNATURE]


def test_offline_check_skips_signatures_and_notes_them() -> None:
    r = signed_rules()
    w = deployment(PINNED, "ghcr.io/acme/x:1")
    assert images.check(r, w, None) == []
    assert images.unverified(r, w) == [
        f"{IMAGE_0}: {PINNED} (signature not verified offline)",
        f"{IMAGE_1}: ghcr.io/acme/x:1 (signature not verified offline)",
    ]
    assert images.unverified(rules(requireDigest=True), w) == []


def test_every_image_rule_reports_separately() -> None:
    r = signed_rules(
        allowedRegistries=["ghcr.io/acme/*"], requireDigest=True, disallowTags=["latest"]
    )
    image = "evil.example/x"
    findings = images.check(r, deployment(image), {})
    assert [f.rule for f in findings] == [
        Rule.IMAGES_REGISTRY,
        Rule.IMAGES_DIGEST,
        Rule.IMAGES_TAG,
        Rule.IMAGES_SIGNATURE,
    ]
    assert {f.path for f in findings} == {IMAGE_0}


def test_uncovered_image_is_a_violation_even_offline() -> None:
    """No entry covers ghcr.io: the cluster would deny it whatever a registry says."""
    rules = ImageRules(
        signatures=(
            SignatureRule(
                images=(compile_pattern("registry.example.com/ml/*"),),
                keys=(KeyRef(id="sha256:abc"),),
            ),
        )
    )
    digest = "@sha256:" + "c" * 64
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {
            "containers": [
                {"name": "a", "image": "ghcr.io/acme/x" + digest},
                {"name": "b", "image": "registry.example.com/ml/y" + digest},
            ]
        },
    }
    item = view(pod)
    assert isinstance(item, WorkloadView)
    findings = images.check(rules, item, None)
    assert [(f.rule, f.path) for f in findings] == [
        ("images.signature", "spec.containers[0].image")
    ]
    assert "no signature rule covers this image" in findings[0].message
    assert images.unverified(rules, item) == [
        f"spec.containers[1].image: registry.example.com/ml/y{digest} "
        "(signature not verified offline)"
    ]
