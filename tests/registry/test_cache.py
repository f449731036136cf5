"""Caching, single-flight and invalidation, against the real registry."""

from __future__ import annotations

import asyncio

from mlgate.engine.references import parse
from tests.registry.helpers import (
    Clock,
    FakeSecrets,
    deployment,
    inline,
    judge,
    policy,
    secret_key,
    trusted,
    verifier,
)
from tests.registry.lab import CosignKey, DistributionRegistry, Tools


async def test_eight_containers_one_verification(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    image = tools.push(plain, "ml/eight")
    tools.sign(plain, image, trusted_key)
    policies = [policy([f"{plain.host}/ml/*"], [inline(trusted_key)])]
    # The same image eight times, also written differently (by tag and by digest).
    images = [image.by_digest] * 6 + [image.by_tag] * 2
    async with verifier(insecure=[plain.host]) as v:
        allowed, message, facts = await judge(v, policies, deployment(images))
        assert allowed, message
        assert set(facts) == {image.by_digest, image.by_tag}
        assert v.registry_verifications == 1


async def test_concurrent_identical_lookups_share_one_round_trip(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    image = tools.push(plain, "ml/concurrent")
    tools.sign(plain, image, trusted_key)
    policies = [policy([f"{plain.host}/ml/*"], [inline(trusted_key)])]
    async with verifier(insecure=[plain.host]) as v:
        results = await asyncio.gather(
            *(judge(v, policies, deployment([image.by_digest])) for _ in range(50))
        )
        assert all(allowed for allowed, _, _ in results)
        assert v.registry_verifications == 1
        # Warm: answered from the cache, no registry involved.
        plain.stop()
        try:
            allowed, _, _ = await judge(v, policies, deployment([image.by_digest]))
            assert allowed
        finally:
            plain.start()
        assert v.registry_verifications == 1


async def test_success_and_failure_ttls(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    image = tools.push(plain, "ml/ttl")
    key = [trusted(trusted_key)]
    clock = Clock()
    async with verifier(
        insecure=[plain.host], clock=clock, success_ttl=600.0, failure_ttl=15.0
    ) as v:
        ref = parse(image.by_digest)
        assert not (await v.verify(ref, key)).ok  # unsigned yet
        tools.sign(plain, image, trusted_key)
        clock.advance(10)
        assert not (await v.verify(ref, key)).ok, "a failure is cached for failure_ttl"
        clock.advance(6)
        assert (await v.verify(ref, key)).ok, "and re-checked after it"
        assert v.registry_verifications == 2
        clock.advance(599)
        assert (await v.verify(ref, key)).ok
        assert v.registry_verifications == 2, "a success is cached for success_ttl"
        clock.advance(2)
        assert (await v.verify(ref, key)).ok
        assert v.registry_verifications == 3


async def test_tag_resolution_is_trusted_only_briefly(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    first = tools.push(plain, "ml/retag")
    tools.sign(plain, first, trusted_key)
    clock = Clock()
    policies = [policy([f"{plain.host}/ml/*"], [inline(trusted_key)])]
    async with verifier(insecure=[plain.host], clock=clock, tag_ttl=30.0) as v:
        allowed, _, facts = await judge(v, policies, deployment([first.by_tag]))
        assert allowed and facts[first.by_tag].digest == first.digest
        moved = tools.push(plain, "ml/retag")  # the tag now names an unsigned image
        clock.advance(31)
        allowed, message, facts = await judge(v, policies, deployment([first.by_tag]))
        assert not allowed and f"no cosign signature found for {moved.by_digest}" in message


async def test_key_rotation_in_the_policy_invalidates(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey, other_key: CosignKey
) -> None:
    image = tools.push(plain, "ml/rotate-policy")
    tools.sign(plain, image, trusted_key)
    before = [policy([f"{plain.host}/ml/*"], [inline(trusted_key)])]
    after = [policy([f"{plain.host}/ml/*"], [inline(other_key)])]
    async with verifier(insecure=[plain.host]) as v:
        assert (await judge(v, before, deployment([image.by_digest])))[0]
        allowed, message, _ = await judge(v, after, deployment([image.by_digest]))
        assert not allowed and "none verifies with the trusted key(s)" in message
        assert v.registry_verifications == 2
        assert (await judge(v, before, deployment([image.by_digest])))[0]


async def test_key_rotation_in_a_secret_invalidates(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey, other_key: CosignKey
) -> None:
    image = tools.push(plain, "ml/rotate-secret")
    tools.sign(plain, image, trusted_key)
    secrets = FakeSecrets()
    secrets.put("mlgate-system", "keys", {"cosign.pub": trusted_key.public_pem})
    policies = [policy([f"{plain.host}/ml/*"], [secret_key("mlgate-system", "keys")])]
    clock = Clock()
    async with verifier(insecure=[plain.host], secrets=secrets, clock=clock, secret_ttl=10.0) as v:
        assert (await judge(v, policies, deployment([image.by_digest])))[0]
        reads = secrets.reads
        assert (await judge(v, policies, deployment([image.by_digest])))[0]
        assert secrets.reads == reads, "the Secret is cached for secret_ttl"
        secrets.put("mlgate-system", "keys", {"cosign.pub": other_key.public_pem})
        clock.advance(11)
        allowed, message, _ = await judge(v, policies, deployment([image.by_digest]))
        assert not allowed and "none verifies with the trusted key(s)" in message
        del secrets.secrets[("mlgate-system", "keys")]
        clock.advance(11)
        allowed, message, _ = await judge(v, policies, deployment([image.by_digest]))
        assert not allowed and "key Secret mlgate-system/keys not found" in message


async def test_only_covered_images_of_governing_policies_are_verified(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    image = tools.push(plain, "ml/scope")
    policies = [policy([f"{plain.host}/ml/*"], [inline(trusted_key)], namespace="governed")]
    async with verifier(insecure=[plain.host]) as v:
        facts = await v(tuple(policies), deployment([image.by_digest], namespace="elsewhere"))
        assert facts == {}
        facts = await v(tuple(policies), deployment(["docker.io/library/nginx:1.27"], "governed"))
        assert facts == {}  # not covered by an entry: the engine denies, nothing to look up
        assert v.registry_verifications == 0
