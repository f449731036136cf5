"""OCI model artifacts (KServe `oci://` modelcars) under the image rules, and their digest bound
to the approval's."""

from __future__ import annotations

from typing import Any

from mlgate.api.compile import compile_policy, parse_resource
from mlgate.engine import images
from mlgate.engine.decisions import Rule
from mlgate.engine.pinning import plan
from mlgate.engine.policy import Facts, ImageFact, ImageRules
from tests.unit.factories import policy
from tests.unit.test_mutation import TRUSTED, signatures
from tests.unit.test_rules_models import NOW, approval, check, inference_service

DIGEST = "sha256:" + "5e" * 32
OTHER = "sha256:" + "6f" * 32
REPO = "registry.example.com/ml/fraud-model"


def image_rules(**spec: Any) -> ImageRules:
    compiled = compile_policy(parse_resource(policy(images=spec)))
    assert compiled.images is not None
    return compiled.images


def test_an_oci_model_comes_from_an_allowed_registry() -> None:
    rules = image_rules(allowedRegistries=["registry.example.com/ml/*"])
    ok = inference_service(f"oci://{REPO}@{DIGEST}")
    bad = inference_service("oci://evil.example/models/fraud@" + DIGEST)
    assert images.check(rules, ok, None) == []
    [finding] = images.check(rules, bad, None)
    assert finding.rule is Rule.IMAGES_REGISTRY
    assert finding.path == "spec.predictor.model.storageUri"


def test_a_signed_oci_model_must_come_pinned_and_verify() -> None:
    rules = image_rules(**signatures())
    tagged = inference_service(f"oci://{REPO}:3")
    facts = {f"{REPO}:3": ImageFact(DIGEST, frozenset({TRUSTED}))}
    [finding] = images.check(rules, tagged, facts)
    assert finding.rule is Rule.IMAGES_DIGEST
    assert f"oci://{REPO}@sha256:<digest> (it resolves to {DIGEST} now)" in finding.message
    # Never pinned by the mutating webhook: its approval names a revision.
    assert plan((compile_policy(parse_resource(policy(images=signatures()))),), tagged,
                Facts(now=NOW, images=facts)) == []  # fmt: skip
    pinned = inference_service(f"oci://{REPO}@{DIGEST}")
    verified = {f"{REPO}@{DIGEST}": ImageFact(DIGEST, frozenset({TRUSTED}))}
    assert images.check(rules, pinned, verified) == []
    unsigned = {f"{REPO}@{DIGEST}": ImageFact(DIGEST, error="no signature by a trusted key")}
    [finding] = images.check(rules, pinned, unsigned)
    assert finding.rule is Rule.IMAGES_SIGNATURE


def test_the_oci_digest_must_be_the_approvals() -> None:
    approved = approval(uris=[f"oci://{REPO}@{DIGEST}"])
    assert check(inference_service(f"oci://{REPO}:3@{DIGEST}"), (approved,)) == []
    [finding] = check(inference_service(f"oci://{REPO}@{OTHER}"), (approved,))
    assert finding.rule is Rule.MODELS_APPROVAL
    [finding] = check(inference_service(f"oci://{REPO}:3"), (approved,))
    assert finding.rule is Rule.MODELS_APPROVAL
