"""Signed images through the real kube-apiserver: `mlgate run` verifies cosign signatures in a
real distribution registry on loopback (plain HTTP, named with --insecure-registry)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlgate.devcluster import Cluster
from mlgate.devrun import MlgateProcess, stand_in_crds
from tests.e2e.test_admission import apply, policy_doc, wait_policy, workload
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
    control_plane.kubectl("apply", "-f", str(REPO / "crds"), check=True)
    control_plane.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(stand_in_crds()))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=True
    )
    control_plane.kubectl("create", "namespace", "mlgate-system")
    log = tmp_path_factory.mktemp("mlgate-signatures") / "mlgate.log"
    registry = lab[1]
    with MlgateProcess(
        control_plane.kubeconfig,
        log,
        webhook_config=WEBHOOK_CONFIG,
        extra_args=["--insecure-registry", registry.host],
    ) as process:
        yield process
    control_plane.kubectl(
        "delete", "validatingwebhookconfiguration", WEBHOOK_CONFIG, "--ignore-not-found"
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
