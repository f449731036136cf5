"""Signatures made by the real cosign verify: both formats, every key type, every transport."""

from __future__ import annotations

import pytest

from mlgate.engine.references import parse
from tests.registry.helpers import (
    FakeSecrets,
    deployment,
    inline,
    judge,
    policy,
    trusted,
    verifier,
)
from tests.registry.lab import CosignKey, DistributionRegistry, Tools
from tests.registry.ocireg import ReferrersRegistry


@pytest.mark.parametrize("key_name", ["trusted_key", "rsa_key", "ed25519_key"])
@pytest.mark.parametrize("bundle", [False, True], ids=["classic", "bundle"])
async def test_cosign_signature_verifies(
    request: pytest.FixtureRequest,
    tools: Tools,
    plain: DistributionRegistry,
    key_name: str,
    bundle: bool,
) -> None:
    key: CosignKey = request.getfixturevalue(key_name)
    image = tools.push(plain, f"ml/{key.name}-{'bundle' if bundle else 'classic'}")
    tools.sign(plain, image, key, bundle=bundle)
    # cosign itself agrees. (Its bundle verification needs the public TUF root, out of reach
    # offline; and `cosign verify --key` loads Ed25519 keys as pure Ed25519, so it rejects the
    # Ed25519ph signatures its own `sign` makes.)
    if not bundle and key.name != "ed25519":
        assert tools.verify(plain, image.by_digest, key).returncode == 0
    async with verifier(insecure=[plain.host]) as v:
        for reference in (image.by_digest, image.by_tag):
            report = await v.verify(parse(reference), [trusted(key)])
            assert report.ok, report
            assert report.digest == image.digest
            assert report.verified_by == {trusted(key).id}
            assert [f.format for f in report.found] == ["bundle" if bundle else "cosign"]


async def test_both_formats_and_several_keys(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey, rsa_key: CosignKey
) -> None:
    image = tools.push(plain, "ml/two-signers")
    tools.sign(plain, image, trusted_key)
    tools.sign(plain, image, rsa_key, bundle=True)
    async with verifier(insecure=[plain.host]) as v:
        report = await v.verify(parse(image.by_digest), [trusted(trusted_key), trusted(rsa_key)])
    assert report.verified_by == {trusted(trusted_key).id, trusted(rsa_key).id}


async def test_bundle_stored_as_oci_referrer(
    tools: Tools, referrers_registry: ReferrersRegistry, trusted_key: CosignKey
) -> None:
    """On a registry with the referrers API cosign writes no fallback tag; we query the API."""
    image = tools.push(referrers_registry, "ml/referred")  # type: ignore[arg-type]
    tools.sign(referrers_registry, image, trusted_key, bundle=True)  # type: ignore[arg-type]
    tags = {tag for repo, tag in referrers_registry.tags if repo == "ml/referred"}
    assert tags == {"v1"}, "cosign used the referrers API, not the fallback tag"
    queries = referrers_registry.referrer_queries
    async with verifier(insecure=[referrers_registry.host]) as v:
        report = await v.verify(parse(image.by_digest), [trusted(trusted_key)])
    assert report.ok, report
    assert referrers_registry.referrer_queries > queries
    assert [f.format for f in report.found] == ["bundle"]


async def test_multi_arch_index_is_verified_by_its_own_digest(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    image = tools.push(plain, "ml/multiarch", arches=("amd64", "arm64"))
    tools.sign(plain, image, trusted_key)
    async with verifier(insecure=[plain.host]) as v:
        report = await v.verify(parse(image.by_tag), [trusted(trusted_key)])
    assert report.ok and report.digest == image.digest


async def test_tls_registry_with_a_ca_bundle(
    tools: Tools, tls_registry: DistributionRegistry, trusted_key: CosignKey
) -> None:
    image = tools.push(tls_registry, "ml/tls")
    tools.sign(tls_registry, image, trusted_key)
    async with verifier(ca_file=str(tls_registry.ca_file)) as v:
        report = await v.verify(parse(image.by_tag), [trusted(trusted_key)])
    assert report.ok, report
    async with verifier() as v:  # system CAs only: the private CA is not trusted
        report = await v.verify(parse(image.by_digest), [trusted(trusted_key)])
    assert not report.ok
    assert "TLS failed" in (report.error or "") and "--registry-ca-file" in (report.error or "")


async def test_plain_http_only_when_named_insecure(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    image = tools.push(plain, "ml/plain-http")
    tools.sign(plain, image, trusted_key)
    async with verifier() as v:
        report = await v.verify(parse(image.by_digest), [trusted(trusted_key)])
    assert not report.ok
    assert f"registry {plain.host} unreachable" in (report.error or "")


@pytest.mark.parametrize("registry_name", ["basic_registry", "token_registry"])
async def test_auth_from_pull_secrets(
    request: pytest.FixtureRequest, tools: Tools, trusted_key: CosignKey, registry_name: str
) -> None:
    """Basic (htpasswd) and bearer-token auth, credentials from dockerconfigjson Secrets: the
    workload's imagePullSecrets or the configured list."""
    registry: DistributionRegistry = request.getfixturevalue(registry_name)
    assert registry.auth is not None
    image = tools.push(registry, "ml/private")
    tools.sign(registry, image, trusted_key)
    secrets = FakeSecrets()
    secrets.put(
        "ml", "regcred", {".dockerconfigjson": registry.auth.dockerconfigjson(registry.host)}
    )
    secrets.put(
        "mlgate-system",
        "shared",
        {".dockerconfigjson": registry.auth.dockerconfigjson(registry.host)},
    )
    wrong = registry.auth.__class__(registry.auth.user, "wrong")
    secrets.put("ml", "stale", {".dockerconfigjson": wrong.dockerconfigjson(registry.host)})
    policies = [policy([f"{registry.host}/ml/*"], [inline(trusted_key)])]
    insecure = [] if registry.tls else [registry.host]
    ca = str(registry.ca_file) if registry.ca_file else None

    async with verifier(insecure=insecure, ca_file=ca, secrets=secrets) as v:
        allowed, _, _ = await judge(
            v, policies, deployment([image.by_digest], pull_secrets=["regcred"])
        )
        assert allowed
        allowed, message, _ = await judge(v, policies, deployment([image.by_tag]))
        assert not allowed
        assert "refused access" in message and "no pull secret provides credentials" in message
        allowed, message, _ = await judge(
            v, policies, deployment([image.by_tag], pull_secrets=["stale"])
        )
        assert not allowed
        assert "refused access" in message and "credentials are not accepted" in message
    async with verifier(
        insecure=insecure, ca_file=ca, secrets=secrets, pull_secrets=(("mlgate-system", "shared"),)
    ) as v:
        allowed, _, _ = await judge(v, policies, deployment([image.by_tag]))
        assert allowed
