"""Session fixtures: real registries on 127.0.0.1, skopeo, cosign, and keys.

Every test under tests/registry is marked ``registry``. The tools come from
`make registry-assets` (Debian's docker-registry and skopeo, cosign built from source); when
one is missing the tests fail saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlgate.devcluster import CertificateAuthority
from tests.registry.hostile import HostileRegistry
from tests.registry.lab import (
    Auth,
    CosignKey,
    DistributionRegistry,
    TokenService,
    ToolMissing,
    Tools,
    cosign_binary,
    new_private_key,
    tool,
)
from tests.registry.ocireg import ReferrersRegistry

REGISTRY_DIR = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if REGISTRY_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.registry)


@pytest.fixture(scope="session")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry-lab")


@pytest.fixture(scope="session")
def tools(lab_dir: Path) -> Tools:
    try:
        tool("docker-registry")
        return Tools(lab_dir / "tools", cosign_binary())
    except ToolMissing as exc:
        pytest.fail(f"registry tests need their tools: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def plain(lab_dir: Path, tools: Tools) -> Iterator[DistributionRegistry]:
    """distribution over plain HTTP, no auth: reachable only when named insecure."""
    registry = DistributionRegistry(lab_dir / "plain").start()
    tools.trust(registry)
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def tls_registry(lab_dir: Path, tools: Tools) -> Iterator[DistributionRegistry]:
    """distribution over HTTPS with a certificate from a CA generated for the session."""
    registry = DistributionRegistry(lab_dir / "tls", ca=CertificateAuthority("registry-ca")).start()
    tools.trust(registry)
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def basic_registry(lab_dir: Path, tools: Tools) -> Iterator[DistributionRegistry]:
    """distribution over HTTPS with htpasswd (basic) auth."""
    registry = DistributionRegistry(
        lab_dir / "basic", ca=CertificateAuthority("basic-ca"), basic=Auth("puller", "s3cret-pw")
    ).start()
    tools.trust(registry)
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def token_registry(lab_dir: Path, tools: Tools) -> Iterator[DistributionRegistry]:
    """distribution with bearer-token auth from a token service (as Docker Hub, GHCR, ...)."""
    service = TokenService(lab_dir, "robot", "t0ken-pw").start()
    registry = DistributionRegistry(lab_dir / "token", token=service).start()
    tools.trust(registry)
    yield registry
    registry.stop()
    service.stop()


@pytest.fixture(scope="session")
def referrers_registry(tools: Tools) -> Iterator[ReferrersRegistry]:
    """An OCI 1.1 registry with the referrers API (distribution 2.8 has none)."""
    registry = ReferrersRegistry().start()
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def trusted_key(tools: Tools) -> CosignKey:
    return tools.generate_key("trusted")


@pytest.fixture(scope="session")
def other_key(tools: Tools) -> CosignKey:
    return tools.generate_key("other")


@pytest.fixture(scope="session")
def rsa_key(tools: Tools) -> CosignKey:
    return tools.import_key("rsa", new_private_key("rsa"))


@pytest.fixture(scope="session")
def ed25519_key(tools: Tools) -> CosignKey:
    return tools.import_key("ed25519", new_private_key("ed25519"))


@pytest.fixture(scope="session")
def hostile() -> Iterator[HostileRegistry]:
    registry = HostileRegistry().start()
    yield registry
    registry.stop()
