"""Signed images through the real kube-apiserver: `mlgate run` verifies cosign signatures in a
real distribution registry on loopback (plain HTTP, named with --insecure-registry)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlgate.devcluster import Cluster
from mlgate.devrun import MlgateProcess
from tests.e2e.test_admission import apply, policy_doc, running_mlgate, wait_policy, workload
from tests.e2e.test_monitoring import REPORT_CRDS, results_become
from tests.registry.lab import (
    CosignKey,
    DistributionRegistry,
    ToolMissing,
    Tools,
    cosign_binary,
    tool,
)

pytestmark = pytest.mark.registry

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_CONFIG = "mlgate-signatures-e2e"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Tools, DistributionRegistry]]:
    workdir = tmp_path_factory.mktemp("signatures-lab")
    try:
        tool("docker-registry")
        tools = Tools(workdir / "tools", cosign_binary())
    except ToolMissing as exc:
        pytest.fail(f"signature e2e tests need their tools: {exc}", pytrace=False)
    registry = DistributionRegistry(workdir / "registry").start()
    tools.trust(registry)
    yield tools, registry
    registry.stop()


@pytest.fixture(scope="module")
def key(lab: tuple[Tools, DistributionRegistry]) -> CosignKey:
    return lab[0].generate_key("e2e-trusted")


@pytest.fixture(scope="module")
def mlgate(
    control_plane: Cluster,
    lab: tuple[Tools, DistributionRegistry],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MlgateProcess]:
    registry = lab[1]
    yield from running_mlgate(
        control_plane, tmp_path_factory, WEBHOOK_CONFIG, "--insecure-registry", registry.host
    )


@pytest.fixture
def signed_only(
    control_plane: Cluster,
    mlgate: MlgateProcess,
    lab: tuple[Tools, DistributionRegistry],
    key: CosignKey,
    namespace: str,
) -> Iterator[str]:
    """Enforce: every image of this namespace must be signed by `key` (inline in the policy)."""
    registry = lab[1]
    name = f"signed-{uuid.uuid4().hex[:8]}"
    signatures = [{"images": [f"{registry.host}/ml/*"], "keys": [{"publicKey": key.public_pem}]}]
    apply(
        control_plane, policy_doc(name, namespace, images={"signatures": signatures})
    ).check_returncode()
    wait_policy(control_plane, name)
    yield name
    control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def test_unsigned_denied_signed_admitted(
    control_plane: Cluster,
    lab: tuple[Tools, DistributionRegistry],
    key: CosignKey,
    signed_only: str,
    namespace: str,
) -> None:
    tools, registry = lab
    unsigned = tools.push(registry, "ml/serve-unsigned")
    signed = tools.push(registry, "ml/serve")
    tools.sign(registry, signed, key)
    bundled = tools.push(registry, "ml/serve-bundle")
    tools.sign(registry, bundled, key, bundle=True)

    out = apply(control_plane, workload("Deployment", "unsigned", namespace, unsigned.by_digest))
    assert out.returncode != 0
    assert 'admission webhook "workloads.mlgate.io" denied the request' in out.stderr
    assert "images.signature" in out.stderr, out.stderr
    assert f"no cosign signature found for {unsigned.by_digest}" in out.stderr, out.stderr

    for image in (signed.by_digest, signed.by_tag, bundled.by_digest):
        out = apply(
            control_plane, workload("Deployment", f"ok-{uuid.uuid4().hex[:6]}", namespace, image)
        )
        assert out.returncode == 0, out.stderr


def test_key_from_a_secret(
    control_plane: Cluster,
    mlgate: MlgateProcess,
    lab: tuple[Tools, DistributionRegistry],
    key: CosignKey,
    namespace: str,
) -> None:
    """The key Secret lacks the key: denied saying so; once it holds the key: admitted."""
    tools, registry = lab
    signed = tools.push(registry, "ml/secret-signed")
    tools.sign(registry, signed, key)
    secret = f"cosign-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl(
        "create", "secret", "generic", secret, "-n", "mlgate-system", "--from-literal=other=x",
        check=True,
    )  # fmt: skip
    name = f"secret-key-{uuid.uuid4().hex[:8]}"
    signatures = [
        {
            "images": [f"{registry.host}/ml/*"],
            "keys": [
                {"secretRef": {"namespace": "mlgate-system", "name": secret, "key": "cosign.pub"}}
            ],
        }
    ]
    apply(
        control_plane, policy_doc(name, namespace, images={"signatures": signatures})
    ).check_returncode()
    try:
        wait_policy(control_plane, name)
        out = apply(
            control_plane, workload("Deployment", "from-secret", namespace, signed.by_digest)
        )
        assert out.returncode != 0
        assert f"key Secret mlgate-system/{secret} has no key cosign.pub" in out.stderr, out.stderr

        pub = Path(tools.workdir) / f"{secret}.pub"
        pub.write_text(key.public_pem)
        manifest = control_plane.kubectl(
            "create", "secret", "generic", secret, "-n", "mlgate-system",
            f"--from-file=cosign.pub={pub}", "--dry-run=client", "-o", "yaml", check=True,
        ).stdout  # fmt: skip
        control_plane.kubectl("apply", "-f", "-", input=manifest, check=True)
        deadline = time.monotonic() + 30  # the Secret is re-read within its cache TTL
        while True:
            out = apply(
                control_plane, workload("Deployment", "from-secret", namespace, signed.by_digest)
            )
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert out.returncode == 0, out.stderr
    finally:
        control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


# ---------------------------------------------------------------------------------------------
# Digest pinning: the mutating webhook stores the digest the signature was verified for


def stored(cp: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    out = cp.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=True)
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def test_verified_tags_are_stored_pinned_and_reapplying_is_stable(
    control_plane: Cluster,
    lab: tuple[Tools, DistributionRegistry],
    key: CosignKey,
    signed_only: str,
    namespace: str,
) -> None:
    tools, registry = lab
    signed = tools.push(registry, "ml/pinned")
    tools.sign(registry, signed, key)
    pinned = f"{signed.by_tag}@{signed.digest}"

    deployment = workload("Deployment", "pinned", namespace, signed.by_tag)
    dry = control_plane.kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(deployment)
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
    apply(control_plane, deployment).check_returncode()
    first = stored(control_plane, "deployment", "pinned", namespace)
    assert first["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
    # Re-applying the same manifest (kubectl re-sends the tag, as it differs from the live
    # object) changes nothing: the same pin, no new generation, no rollout.
    again = apply(control_plane, deployment)
    assert again.returncode == 0, again.stderr
    later = stored(control_plane, "deployment", "pinned", namespace)
    assert later["metadata"]["generation"] == first["metadata"]["generation"]
    assert later["spec"] == first["spec"]
    # Server-side apply re-sends the tag: pinned again to the same value, nothing else changes.
    ssa = control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(deployment)
    )
    assert ssa.returncode == 0, ssa.stderr
    assert stored(control_plane, "deployment", "pinned", namespace)["spec"] == first["spec"]

    # Moving the tag to an unsigned image afterwards changes nothing that runs: the stored
    # reference names the signed digest, which still verifies.
    tools.push(registry, "ml/pinned", tag=signed.tag)
    apply(control_plane, workload("Pod", "pinned-pod", namespace, pinned)).check_returncode()
    pod = stored(control_plane, "pod", "pinned-pod", namespace)
    assert pod["spec"]["containers"][0]["image"] == pinned


def test_every_role_of_a_workload_is_pinned_at_its_own_path(
    control_plane: Cluster,
    lab: tuple[Tools, DistributionRegistry],
    key: CosignKey,
    signed_only: str,
    namespace: str,
) -> None:
    tools, registry = lab
    signed = tools.push(registry, "ml/trainer")
    tools.sign(registry, signed, key)
    spec = {"containers": [{"name": "pytorch", "image": signed.by_tag}]}
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "train", "namespace": namespace},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "template": {"spec": spec}},
                "Worker.x/y~z": {"replicas": 2, "template": {"spec": spec}},
            }
        },
    }
    apply(control_plane, job).check_returncode()
    roles = stored(control_plane, "pytorchjob", "train", namespace)["spec"]["pytorchReplicaSpecs"]
    for role in ("Master", "Worker.x/y~z"):
        image = roles[role]["template"]["spec"]["containers"][0]["image"]
        assert image == f"{signed.by_tag}@{signed.digest}", role


def test_unsigned_tags_are_not_pinned_and_mutation_can_be_turned_off(
    control_plane: Cluster,
    mlgate: MlgateProcess,
    lab: tuple[Tools, DistributionRegistry],
    key: CosignKey,
    namespace: str,
) -> None:
    tools, registry = lab
    unsigned = tools.push(registry, "ml/never-signed")
    signed = tools.push(registry, "ml/unpinned")
    tools.sign(registry, signed, key)
    name = f"no-pin-{uuid.uuid4().hex[:8]}"
    signatures = [{"images": [f"{registry.host}/ml/*"], "keys": [{"publicKey": key.public_pem}]}]
    images = {"signatures": signatures, "mutateDigest": False}
    apply(control_plane, policy_doc(name, namespace, images=images)).check_returncode()
    try:
        wait_policy(control_plane, name)
        out = apply(control_plane, workload("Deployment", "unsigned", namespace, unsigned.by_tag))
        assert out.returncode != 0
        assert 'admission webhook "workloads.mlgate.io" denied the request' in out.stderr
        assert "images.signature" in out.stderr, out.stderr
        out = apply(control_plane, workload("Deployment", "by-tag", namespace, signed.by_tag))
        assert out.returncode != 0
        assert "images.digest" in out.stderr and "mutateDigest: false" in out.stderr, out.stderr
        assert signed.digest in out.stderr, out.stderr
        out = apply(control_plane, workload("Deployment", "by-digest", namespace, signed.by_digest))
        assert out.returncode == 0, out.stderr
        image = stored(control_plane, "deployment", "by-digest", namespace)["spec"]["template"][
            "spec"
        ]["containers"][0]["image"]
        assert image == signed.by_digest
    finally:
        control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def test_running_image_signed_by_a_removed_key_is_reported(
    control_plane: Cluster,
    lab: tuple[Tools, DistributionRegistry],
    key: CosignKey,
    signed_only: str,
    namespace: str,
) -> None:
    """The background audit re-verifies running images: once the policy trusts another key
    only, a Deployment admitted with the old key's signature is a fail result."""
    cp = control_plane
    cp.kubectl("apply", "-f", str(REPORT_CRDS), check=True)
    cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=True)
    tools, registry = lab
    signed = tools.push(registry, "ml/serve-rotated")
    tools.sign(registry, signed, key)
    # Admitted: signed by the key the policy trusts.
    apply(cp, workload("Deployment", "running", namespace, signed.by_digest)).check_returncode()
    other = tools.generate_key("e2e-rotated")
    signatures = [{"images": [f"{registry.host}/ml/*"], "keys": [{"publicKey": other.public_pem}]}]
    apply(cp, policy_doc(signed_only, namespace, images={"signatures": signatures}))
    wait_policy(cp, signed_only)
    results_become(cp, namespace, [("Deployment/running", signed_only, "images.signature", "fail")])


def test_oci_models_are_signed_images_that_must_come_pinned(
    control_plane: Cluster,
    lab: tuple[Tools, DistributionRegistry],
    key: CosignKey,
    signed_only: str,
    namespace: str,
) -> None:
    """KServe `oci://` storage URIs (modelcars) fall under the image signature rules."""
    tools, registry = lab
    server = tools.push(registry, "ml/kserve-server")
    tools.sign(registry, server, key)
    model = tools.push(registry, "ml/fraud-model")
    tools.sign(registry, model, key)
    unsigned = tools.push(registry, "ml/unsigned-model")

    def isvc(name: str, uri: str) -> dict[str, Any]:
        doc = workload("InferenceService", name, namespace, server.by_digest)
        # A custom predictor (one naming a model format needs a ServingRuntime): KServe's
        # storage initializer fetches its component-level storageUri the same way.
        doc["spec"]["predictor"]["storageUri"] = uri
        return doc

    out = apply(control_plane, isvc("pinned-model", f"oci://{model.by_digest}"))
    assert out.returncode == 0, out.stderr
    out = apply(control_plane, isvc("tagged-model", f"oci://{model.by_tag}"))
    assert out.returncode != 0
    assert "images.digest" in out.stderr and "spec.predictor.storageUri" in out.stderr
    assert f"(it resolves to {model.digest} now)" in out.stderr, out.stderr
    out = apply(control_plane, isvc("unsigned-model", f"oci://{unsigned.by_digest}"))
    assert out.returncode != 0
    assert "images.signature" in out.stderr, out.stderr
    assert f"no cosign signature found for {unsigned.by_digest}" in out.stderr, out.stderr
