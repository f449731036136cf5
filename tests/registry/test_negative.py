"""Every way an image can fail to verify is denied, with a reason that says which way.

Each case goes through the verifier and the engine as the webhook does: the decision must deny
and its message must carry the reason.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator

import pytest

from mlgate.engine.references import parse
from tests.registry.helpers import (
    FakeSecrets,
    deployment,
    inline,
    judge,
    policy,
    secret_key,
    trusted,
    verifier,
)
from tests.registry.hostile import HostileRegistry
from tests.registry.lab import (
    CosignKey,
    DistributionRegistry,
    Tools,
    simplesigning_payload,
)


def sig_tag(digest: str, suffix: str = ".sig") -> str:
    return digest.replace(":", "-") + suffix


async def denied_with(
    registry: DistributionRegistry, key: CosignKey, image: str, *reasons: str
) -> str:
    """Judge a one-container Deployment under a policy trusting `key`; it must be denied with
    every one of `reasons` in the message."""
    policies = [policy([f"{registry.host}/ml/*"], [inline(key)])]
    async with verifier(insecure=[registry.host]) as v:
        allowed, message, _ = await judge(v, policies, deployment([image]))
    assert not allowed, f"{image} was admitted"
    for reason in reasons:
        assert reason in message, f"{reason!r} not in {message!r}"
    return message


async def test_unsigned(tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey) -> None:
    image = tools.push(plain, "ml/unsigned")
    await denied_with(
        plain, trusted_key, image.by_digest, f"no cosign signature found for {image.by_digest}"
    )


@pytest.mark.parametrize("bundle", [False, True], ids=["classic", "bundle"])
async def test_signed_by_another_key(
    tools: Tools,
    plain: DistributionRegistry,
    trusted_key: CosignKey,
    other_key: CosignKey,
    bundle: bool,
) -> None:
    image = tools.push(plain, "ml/other-key")
    tools.sign(plain, image, other_key, bundle=bundle)
    await denied_with(plain, trusted_key, image.by_digest, "none verifies with the trusted key(s)")


@pytest.mark.parametrize("bundle", [False, True], ids=["classic", "bundle"])
async def test_signature_over_a_different_digest(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey, bundle: bool
) -> None:
    """A genuine signature of image A, planted where B's signatures are looked up."""
    signed = tools.push(plain, "ml/sig-copy")
    tools.sign(plain, signed, trusted_key, bundle=bundle)
    target = tools.push(plain, "ml/sig-copy", tag="v2")
    suffix = "" if bundle else ".sig"
    stolen = plain.get_manifest("ml/sig-copy", sig_tag(signed.digest, suffix))
    plain.put_manifest("ml/sig-copy", sig_tag(target.digest, suffix), stolen)
    await denied_with(
        plain,
        trusted_key,
        target.by_digest,
        f"names digest {signed.digest}, not the image's digest {target.digest}",
    )


async def test_tampered_payload(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    """The payload is edited after signing (here: a claim added), the signature kept."""
    image = tools.push(plain, "ml/tampered")
    tools.sign(plain, image, trusted_key)
    manifest = plain.get_manifest("ml/tampered", sig_tag(image.digest))
    layer = manifest["layers"][0]
    payload = json.loads(plain.get_blob("ml/tampered", layer["digest"]))
    payload["optional"] = {"approved-by": "mallory"}
    forged = json.dumps(payload).encode()
    layer.update(digest=plain.put_blob("ml/tampered", forged), size=len(forged))
    plain.put_manifest("ml/tampered", sig_tag(image.digest), manifest)
    await denied_with(
        plain, trusted_key, image.by_digest, "none verifies", "its payload was altered"
    )


async def test_wrong_critical_type(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    """Signed by the trusted key (cosign sign-blob, attached with cosign attach signature), but
    it does not claim to be an image signature."""
    image = tools.push(plain, "ml/wrong-type")
    payload = simplesigning_payload(image, kind="cosign container image attestation")
    tools.attach_signature(plain, image, payload, tools.sign_blob(trusted_key, payload))
    await denied_with(
        plain,
        trusted_key,
        image.by_digest,
        "critical.type is 'cosign container image attestation', not "
        "'cosign container image signature'",
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json at all", "malformed signature payload: not JSON"),
        (b'{"critical": {"type": "cosign container image signature"}}', "critical.image is not"),
        (
            b'{"critical": {"type": "cosign container image signature", "image": '
            b'{"docker-manifest-digest": "sha256:X"}, "image": {"docker-manifest-digest": '
            b'"sha256:Y"}}}',
            "duplicate JSON key 'image'",
        ),
    ],
    ids=["not-json", "no-image", "duplicate-keys"],
)
async def test_malformed_payload(
    tools: Tools,
    plain: DistributionRegistry,
    trusted_key: CosignKey,
    payload: bytes,
    reason: str,
) -> None:
    image = tools.push(plain, "ml/malformed")
    tools.attach_signature(plain, image, payload, tools.sign_blob(trusted_key, payload))
    await denied_with(plain, trusted_key, image.by_digest, reason)


async def test_tag_moved_after_signing(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    signed = tools.push(plain, "ml/moving")
    tools.sign(plain, signed, trusted_key)
    moved = tools.push(plain, "ml/moving")  # same tag, other content
    assert moved.by_tag == signed.by_tag and moved.digest != signed.digest
    await denied_with(
        plain, trusted_key, moved.by_tag, f"no cosign signature found for {moved.by_digest}"
    )
    # The pinned, signed digest still verifies: a signature vouches for its digest only.
    async with verifier(insecure=[plain.host]) as v:
        assert (await v.verify(parse(signed.by_digest), [trusted(trusted_key)])).ok


async def test_look_alike_repositories(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    """Signed by the trusted key, but outside the repositories the key may vouch for."""
    port = plain.host.split(":")[1]
    evil = tools.push(plain, "ml-evil/serve")
    tools.sign(plain, evil, trusted_key)
    policies = [policy([f"{plain.host}/ml/*"], [inline(trusted_key)])]
    for image in (evil.by_digest, f"localhost:{port}/ml-evil/serve@{evil.digest}"):
        async with verifier(insecure=[plain.host, f"localhost:{port}"]) as v:
            allowed, message, _ = await judge(v, policies, deployment([image]))
            assert not allowed
            assert "no signature rule covers this image" in message
            assert v.registry_verifications == 0


async def test_secret_with_the_key_missing(
    tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    image = tools.push(plain, "ml/secret-key")
    tools.sign(plain, image, trusted_key)
    secrets = FakeSecrets()
    secrets.put("mlgate-system", "cosign-keys", {"other.pub": trusted_key.public_pem})
    cases = [
        (
            secret_key("mlgate-system", "cosign-keys"),
            "key Secret mlgate-system/cosign-keys has no key cosign.pub",
        ),
        (secret_key("mlgate-system", "absent"), "key Secret mlgate-system/absent not found"),
        (secret_key("mlgate-system", "cosign-keys", "other.pub"), None),
    ]
    for key, reason in cases:
        policies = [policy([f"{plain.host}/ml/*"], [key])]
        async with verifier(insecure=[plain.host], secrets=secrets) as v:
            allowed, message, facts = await judge(v, policies, deployment([image.by_digest]))
        if reason is None:
            assert allowed, message
            assert facts[image.by_digest].verified_by == {
                "secret:mlgate-system/cosign-keys/other.pub"
            }
        else:
            assert not allowed and reason in message, message


# ---------------------------------------------------------------------------------------------
# A hostile registry


@pytest.fixture(scope="module")
def armed(
    hostile: HostileRegistry, tools: Tools, trusted_key: CosignKey
) -> Iterator[HostileRegistry]:
    hostile.prepare(lambda payload: base64.b64decode(tools.sign_blob(trusted_key, payload)))
    yield hostile


HOSTILE_CASES = [
    ("fail500/x", "answered HTTP 500"),
    ("hang/x", "timeout: registry"),
    ("drip/x", "timeout: registry"),
    ("huge/x", "67108864 bytes, more than the 4194304-byte limit"),
    ("chunked/x", "larger than the 4194304-byte limit"),
    ("many/x", "lists 5000 signatures; only the first 64 were examined"),
    ("lying/x", "the content was altered"),
]


@pytest.mark.parametrize(("repo", "reason"), HOSTILE_CASES, ids=[c[0] for c in HOSTILE_CASES])
async def test_hostile_registry(
    armed: HostileRegistry, trusted_key: CosignKey, repo: str, reason: str
) -> None:
    policies = [policy([f"{armed.host}/*"], [inline(trusted_key)])]
    async with verifier(insecure=[armed.host]) as v:
        started = time.monotonic()
        allowed, message, _ = await judge(v, policies, deployment([armed.image(repo)]))
        elapsed = time.monotonic() - started
    assert not allowed
    assert reason in message, message
    assert elapsed < 3.5, f"{repo} took {elapsed:.1f}s, beyond the verification deadline"


async def test_hostile_registry_stalls_no_other_request(
    armed: HostileRegistry,
    tools: Tools,
    plain: DistributionRegistry,
    trusted_key: CosignKey,
) -> None:
    """While every hostile repository is being verified at once, a good image on a healthy
    registry (and one on the hostile host itself) verifies without waiting for them."""
    good = tools.push(plain, "ml/healthy")
    tools.sign(plain, good, trusted_key)
    policies = [
        policy([f"{armed.host}/*", f"{plain.host}/ml/*"], [inline(trusted_key)], name="all")
    ]
    timings: dict[str, float] = {}

    async def timed(label: str, image: str) -> tuple[bool, str]:
        started = time.monotonic()
        allowed, message, _ = await judge(v, policies, deployment([image]))
        timings[label] = time.monotonic() - started
        return allowed, message

    async with verifier(insecure=[armed.host, plain.host], request_timeout=2.0) as v:
        hostile_jobs = [timed(repo, armed.image(repo)) for repo, _ in HOSTILE_CASES]
        # Let the hostile requests get going first.
        hostile_task = asyncio.gather(*hostile_jobs)
        await asyncio.sleep(0.05)
        ok_plain = await timed("healthy", good.by_digest)
        ok_hostile_host = await timed("ok/x", armed.image("ok/x"))
        results = await hostile_task
    assert ok_plain[0], ok_plain[1]
    assert ok_hostile_host[0], ok_hostile_host[1]
    assert not any(allowed for allowed, _ in results)
    assert timings["healthy"] < 1.0, timings
    assert timings["ok/x"] < 1.0, timings
    assert timings["hang/x"] > 1.9, timings  # it really was hanging meanwhile
