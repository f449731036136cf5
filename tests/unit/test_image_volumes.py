"""OCI image volumes (`volumes[].image.reference`) are images: every image rule judges them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlgate.api.compile import compile_policy, key_id, parse_resource
from mlgate.engine.decisions import Rule
from mlgate.engine.evaluate import evaluate
from mlgate.engine.policy import CompiledPolicy, Facts, ImageFact
from mlgate.engine.workloads import ContainerKind, WorkloadView, view
from mlgate.registry.verifier import VerifierOptions, make_verifier
from tests.unit.test_rules_images import TRUSTED_PEM

NOW = datetime(2026, 3, 1, tzinfo=UTC)
DIGEST = "sha256:" + "4f1c" * 16
GOOD = f"registry.example.com/ml/serve@{DIGEST}"
VOLUME_PATH = "spec.template.spec.volumes[1].image.reference"


def deployment(reference: Any, gpus: int = 0) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": gpus}} if gpus else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fraud-api", "namespace": "team-a"},
        "spec": {
            "replicas": 1,
            "template": {
                "spec": {
                    "containers": [{"name": "main", "image": GOOD, "resources": resources}],
                    "volumes": [
                        {"name": "scratch", "emptyDir": {}},
                        {"name": "weights", "image": {"reference": reference}},
                    ],
                }
            },
        },
    }


def policy(**spec: Any) -> CompiledPolicy:
    doc = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": "production-ml"},
        "spec": spec,
    }
    return compile_policy(parse_resource(doc))  # type: ignore[arg-type]


def judged(obj: dict[str, Any], *policies: CompiledPolicy, **facts: Any) -> set[tuple[str, str]]:
    decision = evaluate(policies, obj, Facts(now=NOW, **facts))
    return {(v.rule, v.path) for v in decision.violations}


def test_image_volume_is_viewed_as_an_image_without_resources_or_env() -> None:
    w = view(deployment("registry.example.com/ml/weights:1"))
    assert isinstance(w, WorkloadView)
    (volume,) = [c for c in w.pods[0].containers if c.kind is ContainerKind.IMAGE_VOLUME]
    assert volume.name == "weights"
    assert volume.image == "registry.example.com/ml/weights:1"
    assert volume.image_path == VOLUME_PATH
    assert volume.path == "spec.template.spec.volumes[1]"
    assert not volume.resources and volume.env == ()


def test_image_volume_without_a_reference_is_not_an_image() -> None:
    # Pod templates may leave the reference to a controller, as they may a container's image.
    w = view(deployment(None))
    assert isinstance(w, WorkloadView)
    assert [c.image for c in w.pods[0].containers if c.kind is ContainerKind.IMAGE_VOLUME] == [None]
    assert judged(deployment(None), policy(images={"allowedRegistries": []})) == {
        (Rule.IMAGES_REGISTRY, "spec.template.spec.containers[0].image")
    }


def test_image_volume_from_another_registry_is_denied() -> None:
    p = policy(images={"allowedRegistries": ["registry.example.com/ml/*"]})
    assert judged(deployment("docker.io/evil/weights:1"), p) == {
        (Rule.IMAGES_REGISTRY, VOLUME_PATH)
    }
    assert judged(deployment(f"registry.example.com/ml/weights@{DIGEST}"), p) == set()


def test_image_volume_must_be_pinned_and_not_latest() -> None:
    p = policy(images={"requireDigest": True, "disallowTags": ["latest"]})
    assert judged(deployment("registry.example.com/ml/weights"), p) == {
        (Rule.IMAGES_DIGEST, VOLUME_PATH),
        (Rule.IMAGES_TAG, VOLUME_PATH),
    }


def test_invalid_image_volume_reference_is_a_violation() -> None:
    p = policy(images={"requireDigest": True})
    assert judged(deployment("UPPER/case::x"), p) == {(Rule.IMAGES_REGISTRY, VOLUME_PATH)}


def test_image_volume_signature_is_required_and_checked_against_its_fact() -> None:
    p = policy(
        images={
            "signatures": [
                {"images": ["registry.example.com/ml/*"], "keys": [{"publicKey": TRUSTED_PEM}]}
            ]
        }
    )
    reference = f"registry.example.com/ml/weights@{DIGEST}"
    signed = ImageFact(digest=DIGEST, verified_by=frozenset({key_id(TRUSTED_PEM)}))
    facts = {GOOD: signed, reference: ImageFact(error="no signatures found")}
    assert judged(deployment(reference), p, images=facts) == {(Rule.IMAGES_SIGNATURE, VOLUME_PATH)}
    assert judged(deployment(reference), p, images={GOOD: signed, reference: signed}) == set()
    # An image volume no signature entry covers is refused, as a container image would be.
    assert judged(deployment("ghcr.io/other/weights:1"), p, images={GOOD: signed}) == {
        (Rule.IMAGES_SIGNATURE, VOLUME_PATH)
    }


def test_image_volume_counts_no_gpus_and_triggers_no_egress_or_model_rule() -> None:
    p = policy(
        gpu={"maxPerPod": 1},
        egress={},
        models={"requireApproved": True},
    )
    assert judged(deployment(f"registry.example.com/ml/weights@{DIGEST}", gpus=1), p) == set()


def test_image_volumes_of_a_bare_pod_and_of_an_inference_service_are_judged() -> None:
    p = policy(images={"allowedRegistries": ["registry.example.com/ml/*"]})
    volume = {"name": "w", "image": {"reference": "docker.io/evil/w:1"}}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team-a"},
        "spec": {"containers": [{"name": "main", "image": GOOD}], "volumes": [volume]},
    }
    assert judged(pod, p) == {(Rule.IMAGES_REGISTRY, "spec.volumes[0].image.reference")}
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "m", "namespace": "team-a"},
        "spec": {"predictor": {"model": {"image": GOOD}, "volumes": [volume]}},
    }
    assert judged(isvc, p) == {(Rule.IMAGES_REGISTRY, "spec.predictor.volumes[0].image.reference")}


def test_the_signature_verifier_plans_image_volumes_too() -> None:
    p = policy(
        images={
            "signatures": [
                {"images": ["registry.example.com/ml/*"], "keys": [{"publicKey": TRUSTED_PEM}]}
            ]
        }
    )
    reference = f"registry.example.com/ml/weights@{DIGEST}"
    w = view(deployment(reference))
    assert isinstance(w, WorkloadView)
    verifier = make_verifier(VerifierOptions())
    assert set(verifier.plan((p,), w)) == {GOOD, reference}
