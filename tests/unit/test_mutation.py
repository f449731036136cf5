"""Digest pinning: the engine's plan, field paths as JSON pointers, and /mutate on a real socket.

The JSONPatch answers are applied with a small RFC 6902 applier written here from the RFC, so a
wrong pointer cannot be confirmed by the code that produced it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mlgate.api.compile import compile_policy, key_id, parse_resource
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.state import PolicyState
from mlgate.engine import images
from mlgate.engine.decisions import Rule
from mlgate.engine.pinning import InvalidPath, json_pointer
from mlgate.engine.policy import CompiledPolicy, ImageFact
from mlgate.engine.workloads import WorkloadView, field, view
from mlgate.metrics import Metrics
from mlgate.webhook.admission import Admission
from mlgate.webhook.config import (
    IMAGES_MUTATING_WEBHOOK,
    mutating_webhook_configuration,
    webhook_configuration,
    workload_rules,
)
from mlgate.webhook.server import Webhook
from tests.unit.factories import deployment, policy, review

SIGNED = "registry.example.com/ml/serve:1.4"
SIGNED_DIGEST = "sha256:" + "4f1c" * 16
SIDECAR = "registry.example.com/ml/proxy:2"
SIDECAR_DIGEST = "sha256:" + "9a0b" * 16
UNSIGNED = "registry.example.com/ml/unsigned:1"
PINNED = f"registry.example.com/ml/serve@{SIGNED_DIGEST}"
IMPLICIT_LATEST = "registry.example.com/ml/serve"


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


PEM = _pem()
TRUSTED = key_id(PEM)
# What the registry would say: tag (or digest) -> the digest it names and who signed it.
REGISTRY = {
    SIGNED: ImageFact(SIGNED_DIGEST, frozenset({TRUSTED})),
    PINNED: ImageFact(SIGNED_DIGEST, frozenset({TRUSTED})),
    f"{SIGNED}@{SIGNED_DIGEST}": ImageFact(SIGNED_DIGEST, frozenset({TRUSTED})),
    SIDECAR: ImageFact(SIDECAR_DIGEST, frozenset({TRUSTED})),
    f"{SIDECAR}@{SIDECAR_DIGEST}": ImageFact(SIDECAR_DIGEST, frozenset({TRUSTED})),
    IMPLICIT_LATEST: ImageFact(SIGNED_DIGEST, frozenset({TRUSTED})),
    f"{IMPLICIT_LATEST}:latest@{SIGNED_DIGEST}": ImageFact(SIGNED_DIGEST, frozenset({TRUSTED})),
    UNSIGNED: ImageFact(
        "sha256:" + "0" * 64, error="no signature by a trusted key was found on sha256:000..."
    ),
}


def signatures(**extra: Any) -> dict[str, Any]:
    return {
        "signatures": [{"images": ["registry.example.com/ml/*"], "keys": [{"publicKey": PEM}]}],
        **extra,
    }


class Registry:
    """The verifier's contract: facts by image string; counts the verifications asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(
        self, _: tuple[CompiledPolicy, ...], workload: WorkloadView
    ) -> Mapping[str, ImageFact]:
        found = {c.image for pod in workload.pods for c in pod.containers if c.image}
        self.asked += sorted(found)
        return {image: REGISTRY[image] for image in found if image in REGISTRY}


def make_webhook(*policies: dict[str, Any]) -> Webhook:
    state = PolicyState()
    for body in policies:
        assert state.upsert(body).ok
    state.set_namespace("ml-prod", {"mlgate.io/governed": "true"})
    state.set_namespace("ml-free", {})
    webhook = Webhook(Admission(state, GpuLedger(), verify_images=Registry()), Metrics())
    webhook.ready.set()
    return webhook


def run(webhook: Webhook, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with TestClient(TestServer(webhook.app())) as client:
            answer = await client.post(path, data=json.dumps(body).encode())
            assert answer.status == 200
            result: dict[str, Any] = (await answer.json())["response"]
            return result

    return asyncio.run(main())


# --- a JSON Patch applier (RFC 6902 test/replace over RFC 6901 pointers) ----------------------


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _parent(doc: Any, pointer: str) -> tuple[Any, str | int]:
    assert pointer.startswith("/"), pointer
    *walk, last = [_unescape(t) for t in pointer[1:].split("/")]
    node = doc
    for token in walk:
        node = node[int(token)] if isinstance(node, list) else node[token]
    key: str | int = int(last) if isinstance(node, list) else last
    return node, key


def _exists(node: Any, key: str | int) -> bool:
    return key in node if isinstance(node, dict) else int(key) < len(node)


def apply_patch(doc: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["allowed"] is True and answer["patchType"] == "JSONPatch"
    result = copy.deepcopy(doc)
    for op in json.loads(base64.b64decode(answer["patch"])):
        node, key = _parent(result, op["path"])
        assert op["op"] == "add" or _exists(node, key), op  # RFC 6902: test/replace need it
        if op["op"] == "test":
            assert node[key] == op["value"], op
        elif op["op"] == "add" and isinstance(node, dict):
            node[key] = op["value"]
        else:
            assert op["op"] == "replace", op
            node[key] = op["value"]
    return result


def mutate(webhook: Webhook, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return run(webhook, "/mutate", review(obj, **kwargs))


def image_at(obj: dict[str, Any], pointer: str) -> Any:
    node, key = _parent(obj, pointer)
    assert _exists(node, key), pointer
    return node[key]


# --- field paths as JSON pointers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "pointer"),
    [
        ("spec.containers[0].image", "/spec/containers/0/image"),
        (
            field("spec.pytorchReplicaSpecs", "Worker.x") + ".template.spec.containers[1].image",
            "/spec/pytorchReplicaSpecs/Worker.x/template/spec/containers/1/image",
        ),
        (field("spec.x", "a/b~c") + ".image", "/spec/x/a~1b~0c/image"),
        (field("spec.x", 'q"]uote') + ".image", '/spec/x/q"]uote/image'),
        (field("spec.x", "line\nbreak ü") + ".image", "/spec/x/line\nbreak ü/image"),
        (
            "spec.template.spec.volumes[3].image.reference",
            "/spec/template/spec/volumes/3/image/reference",
        ),
        (field("spec.mpiReplicaSpecs", "0") + ".template", "/spec/mpiReplicaSpecs/0/template"),
    ],
)
def test_field_paths_become_json_pointers(path: str, pointer: str) -> None:
    assert json_pointer(path) == pointer


@pytest.mark.parametrize(
    "path", ["", ".spec", "spec..image", 'spec["open', "spec[x]", "spec[0]image", 'spec["a"]b']
)
def test_paths_field_cannot_produce_are_refused(path: str) -> None:
    with pytest.raises(InvalidPath):
        json_pointer(path)


# --- /mutate ----------------------------------------------------------------------------------


def test_verified_tag_is_pinned_to_its_verified_digest_and_only_the_image_changes() -> None:
    webhook = make_webhook(policy(images=signatures()))
    obj = deployment(image=SIGNED)
    answer = mutate(webhook, obj)
    pinned = apply_patch(obj, answer)
    container = pinned["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{SIGNED}@{SIGNED_DIGEST}"
    container["image"] = SIGNED
    assert pinned == obj  # nothing but the image field
    # The pinned object is what the validating webhook then judges: it verifies that digest.
    assert run(webhook, "/validate", review(apply_patch(obj, answer)))["allowed"] is True


def test_reinvocation_and_reapplying_change_nothing() -> None:
    webhook = make_webhook(policy(images=signatures()))
    obj = deployment(image=SIGNED)
    pinned = apply_patch(obj, mutate(webhook, obj))
    again = mutate(webhook, pinned)
    assert again["allowed"] is True and "patch" not in again
    # An update that re-submits the tag (kubectl replace, server-side apply) is pinned alike.
    update = mutate(webhook, obj, operation="UPDATE", old=pinned)
    assert apply_patch(obj, update) == pinned


def test_dry_run_gets_the_same_patch() -> None:
    webhook = make_webhook(policy(images=signatures()))
    obj = deployment(image=SIGNED)
    real, dry = mutate(webhook, obj), mutate(webhook, obj, dry_run=True)
    assert dry["patch"] == real["patch"]


def test_images_already_pinned_by_digest_are_left_alone() -> None:
    webhook = make_webhook(policy(images=signatures()))
    for image in (PINNED, f"{SIGNED}@{SIGNED_DIGEST}"):
        answer = mutate(webhook, deployment(image=image))
        assert answer["allowed"] is True and "patch" not in answer


def test_every_container_kind_is_pinned_by_its_own_path() -> None:
    webhook = make_webhook(policy(images=signatures()))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml-prod"},
        "spec": {
            "initContainers": [
                {"name": "fetch", "image": SIDECAR},
                {"name": "proxy", "image": SIDECAR, "restartPolicy": "Always"},
            ],
            "containers": [{"name": "a", "image": PINNED}, {"name": "b", "image": SIGNED}],
            "ephemeralContainers": [{"name": "debug", "image": SIGNED}],
        },
    }
    pinned = apply_patch(pod, mutate(webhook, pod, resource="pods"))
    spec = pinned["spec"]
    assert [c["image"] for c in spec["initContainers"]] == [f"{SIDECAR}@{SIDECAR_DIGEST}"] * 2
    assert [c["image"] for c in spec["containers"]] == [PINNED, f"{SIGNED}@{SIGNED_DIGEST}"]
    assert spec["ephemeralContainers"][0]["image"] == f"{SIGNED}@{SIGNED_DIGEST}"


def test_image_volumes_are_pinned_like_containers() -> None:
    """An OCI image volume is an image: a tag verified at admission must not move afterwards."""
    webhook = make_webhook(policy(images=signatures()))
    obj = deployment(image=PINNED)
    obj["spec"]["template"]["spec"]["volumes"] = [
        {"name": "weights", "image": {"reference": SIGNED, "pullPolicy": "IfNotPresent"}}
    ]
    pinned = apply_patch(obj, mutate(webhook, obj))
    volume = pinned["spec"]["template"]["spec"]["volumes"][0]
    assert volume == {
        "name": "weights",
        "image": {"reference": f"{SIGNED}@{SIGNED_DIGEST}", "pullPolicy": "IfNotPresent"},
    }
    assert pinned["spec"]["template"]["spec"]["containers"][0]["image"] == PINNED


def test_roles_with_quoted_keys_are_patched_where_they_are() -> None:
    webhook = make_webhook(policy(images=signatures()))
    template = {"spec": {"containers": [{"name": "pytorch", "image": SIGNED}]}}
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "train", "namespace": "ml-prod"},
        "spec": {
            "pytorchReplicaSpecs": {
                "Worker.template": {"replicas": 1, "template": copy.deepcopy(template)},
                "a/b~c": {"replicas": 1, "template": copy.deepcopy(template)},
            }
        },
    }
    pinned = apply_patch(job, mutate(webhook, job, resource="pytorchjobs"))
    for role in ("Worker.template", "a/b~c"):
        spec = pinned["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]
        assert spec["containers"][0]["image"] == f"{SIGNED}@{SIGNED_DIGEST}"


def test_container_shaped_fields_are_pinned() -> None:
    webhook = make_webhook(policy(images=signatures()))
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "fraud", "namespace": "ml-prod"},
        "spec": {"predictor": {"model": {"image": SIGNED}, "my.framework": {"image": SIDECAR}}},
    }
    answer = mutate(webhook, isvc, resource="inferenceservices")
    pinned = apply_patch(isvc, answer)
    assert pinned["spec"]["predictor"]["model"]["image"] == f"{SIGNED}@{SIGNED_DIGEST}"
    assert image_at(pinned, "/spec/predictor/my.framework/image") == f"{SIDECAR}@{SIDECAR_DIGEST}"


def test_an_unverified_image_is_never_pinned_and_validation_refuses_it() -> None:
    webhook = make_webhook(policy(images=signatures()))
    obj = deployment(image=UNSIGNED)
    obj["spec"]["template"]["spec"]["containers"].append({"name": "b", "image": SIGNED})
    patched = apply_patch(obj, mutate(webhook, obj))
    images_ = [c["image"] for c in patched["spec"]["template"]["spec"]["containers"]]
    assert images_ == [UNSIGNED, f"{SIGNED}@{SIGNED_DIGEST}"]
    answer = run(webhook, "/validate", review(patched))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert "images.signature at spec.template.spec.containers[0].image" in message
    assert "no signature by a trusted key" in message and "containers[1]" not in message


def test_a_verified_tag_that_reaches_validation_unpinned_is_refused() -> None:
    """A tag moved to a signed image between the mutating and the validating call, or a missing
    MutatingWebhookConfiguration, must not let a tag through by tag."""
    webhook = make_webhook(policy(images=signatures()))
    answer = run(webhook, "/validate", review(deployment(image=SIGNED)))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert "images.digest at spec.template.spec.containers[0].image" in message
    assert f"pins it as {SIGNED}@{SIGNED_DIGEST}" in message
    # A policy that does not pin (Warn never changes a workload) does not require it.
    warn = make_webhook(policy(mode="Warn", images=signatures()))
    assert run(warn, "/validate", review(deployment(image=SIGNED)))["allowed"] is True


def test_policies_that_do_not_pin() -> None:
    tag = deployment(image=SIGNED)
    for webhook in (
        make_webhook(policy(mode="Warn", images=signatures())),
        make_webhook(policy(mode="Audit", images=signatures())),
        make_webhook(policy(images=signatures(mutateDigest=False))),
        make_webhook(policy(images={"requireDigest": False})),
    ):
        answer = mutate(webhook, tag)
        assert answer["allowed"] is True and "patch" not in answer


def test_ungoverned_exempt_and_unchanged_requests_are_not_patched() -> None:
    webhook = make_webhook(policy(images=signatures()))
    for namespace in ("ml-free", "kube-system", "mlgate-system"):
        answer = mutate(webhook, deployment(image=SIGNED, namespace=namespace))
        assert answer["allowed"] is True and "patch" not in answer
    legacy = deployment(image=SIGNED)
    relabelled = copy.deepcopy(legacy)
    relabelled["metadata"]["labels"] = {"team": "fraud"}
    # A metadata-only update must not roll a legacy workload out just to pin it.
    answer = mutate(webhook, relabelled, operation="UPDATE", old=legacy)
    assert answer["allowed"] is True and "patch" not in answer


def test_mutation_off_denies_tag_only_references_in_validation() -> None:
    webhook = make_webhook(policy(images=signatures(mutateDigest=False)))
    answer = run(webhook, "/validate", review(deployment(image=SIGNED)))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert "images.digest at spec.template.spec.containers[0].image" in message
    assert "mutateDigest: false" in message and SIGNED_DIGEST in message
    pinned = run(webhook, "/validate", review(deployment(image=f"{SIGNED}@{SIGNED_DIGEST}")))
    assert pinned["allowed"] is True


def test_no_pinning_policy_means_no_registry_round_trip() -> None:
    webhook = make_webhook(policy(images={"requireDigest": False}))
    assert mutate(webhook, deployment(image=SIGNED))["allowed"] is True
    registry = webhook.admission.verify_images
    assert isinstance(registry, Registry) and registry.asked == []


# --- the configuration ------------------------------------------------------------------------


def test_mutating_configuration_routes_what_validation_routes() -> None:
    client = {"url": "https://127.0.0.1:8443/mutate"}
    config = mutating_webhook_configuration("mlgate", client, "mlgate-system")
    (hook,) = config["webhooks"]
    (workloads, *_) = webhook_configuration("mlgate", {}, "mlgate-system")["webhooks"]
    assert config["kind"] == "MutatingWebhookConfiguration"
    assert hook["name"] == IMAGES_MUTATING_WEBHOOK
    # The same kinds, but never /status: kubelets' status writes must not wait for pinning.
    assert hook["rules"] == workload_rules()
    assert workloads["rules"] == workload_rules(status=True)
    assert not any(r.endswith("/status") for rule in hook["rules"] for r in rule["resources"])
    assert hook["namespaceSelector"] == workloads["namespaceSelector"]
    assert hook["clientConfig"] == client
    assert (hook["sideEffects"], hook["failurePolicy"], hook["reinvocationPolicy"]) == (
        "None",
        "Fail",
        "IfNeeded",
    )


def test_mutation_off_is_judged_offline_too_and_never_reported_twice() -> None:

    def findings(**spec: Any) -> list[tuple[Rule, str]]:
        compiled = compile_policy(parse_resource(policy(images=signatures(**spec))))
        assert compiled.images is not None
        item = view(deployment(image=SIGNED))
        assert isinstance(item, WorkloadView)
        return [(f.rule, f.message) for f in images.check(compiled.images, item, None)]

    ((rule, message),) = findings(mutateDigest=False)
    assert rule is Rule.IMAGES_DIGEST and "referenced by tag only" in message
    assert [r for r, _ in findings(mutateDigest=False, requireDigest=True)] == [Rule.IMAGES_DIGEST]
    assert findings() == []


def test_mutation_fails_closed_before_policies_are_loaded() -> None:
    webhook = make_webhook(policy(images=signatures()))
    webhook.ready.clear()
    answer = mutate(webhook, deployment(image=SIGNED))
    assert answer["allowed"] is False and "patch" not in answer
    assert "has not loaded its policies" in answer["status"]["message"]


def test_debugging_a_legacy_pod_holds_only_the_new_container_to_its_pin() -> None:
    """On pods/ephemeralcontainers the apiserver keeps the old containers whatever was patched:
    a tag-only container admitted before the policy does not block `kubectl debug`."""
    webhook = make_webhook(policy(images=signatures()))
    legacy = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "legacy", "namespace": "ml-prod"},
        "spec": {"containers": [{"name": "app", "image": SIGNED}]},
    }
    debug = copy.deepcopy(legacy)
    debug["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": SIDECAR}]
    kwargs: dict[str, Any] = {
        "operation": "UPDATE",
        "old": legacy,
        "resource": "pods",
        "sub_resource": "ephemeralcontainers",
    }
    patched = apply_patch(debug, mutate(webhook, debug, **kwargs))
    assert patched["spec"]["ephemeralContainers"][0]["image"] == f"{SIDECAR}@{SIDECAR_DIGEST}"
    stored = copy.deepcopy(legacy)  # what the apiserver keeps: old containers, new debugger
    stored["spec"]["ephemeralContainers"] = patched["spec"]["ephemeralContainers"]
    assert run(webhook, "/validate", review(stored, **kwargs))["allowed"] is True
    unpinned = run(webhook, "/validate", review(debug, **kwargs))
    assert unpinned["allowed"] is False
    assert "spec.ephemeralContainers[0].image" in unpinned["status"]["message"]
    assert "spec.containers[0]" not in unpinned["status"]["message"]


def test_pinning_never_changes_another_rules_verdict() -> None:
    """`mlgate check` judges the manifest as written; the cluster must judge it alike."""
    implicit = IMPLICIT_LATEST
    no_latest = make_webhook(policy(images=signatures(disallowTags=["latest"])))
    obj = deployment(image=implicit)
    pinned = apply_patch(obj, mutate(no_latest, obj))
    image = pinned["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{implicit}:latest@{SIGNED_DIGEST}"
    answer = run(no_latest, "/validate", review(pinned))
    assert answer["allowed"] is False and "images.tag" in answer["status"]["message"]
    # Under an Enforce requireDigest a tag is refused as submitted, not pinned into compliance.
    digest_only = make_webhook(policy(images=signatures(requireDigest=True)))
    assert "patch" not in mutate(digest_only, deployment(image=SIGNED))
    answer = run(digest_only, "/validate", review(deployment(image=SIGNED)))
    assert answer["allowed"] is False
    assert "is not pinned by digest" in answer["status"]["message"]
    # A Warn requireDigest does not stop an Enforce policy from pinning.
    both = make_webhook(
        policy(images=signatures()),
        policy("digests-wanted", mode="Warn", images={"requireDigest": True}),
    )
    assert "patch" in mutate(both, deployment(image=SIGNED))
