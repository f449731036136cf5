"""The pure parts of the registry adapter: payloads, bundles, keys, auth, caches (no I/O)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from mlgate.engine.policy import KeyRef
from mlgate.registry import ed25519ph
from mlgate.registry.auth import Credential, parse_challenge, parse_docker_config
from mlgate.registry.cache import SingleFlight, TtlCache
from mlgate.registry.cosign import (
    KeyError_,
    Problem,
    TrustedKey,
    load_key,
    pae,
    verify_bundle,
    verify_simplesigning,
)
from mlgate.registry.keys import KeyResolver, Secrets
from mlgate.registry.wiring import parse_pull_secret
from tests.registry.helpers import Clock, FakeSecrets

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def payload(digest: str = DIGEST, kind: str = "cosign container image signature") -> bytes:
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": "registry.example.com/ml/serve"},
                "image": {"docker-manifest-digest": digest},
                "type": kind,
            },
            "optional": None,
        }
    ).encode()


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def trusted(ec_key: ec.EllipticCurvePrivateKey) -> TrustedKey:
    return load_key("k1", pem(ec_key))


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


def test_simplesigning_verdicts(ec_key: ec.EllipticCurvePrivateKey, trusted: TrustedKey) -> None:
    good = payload()
    assert verify_simplesigning([trusted], good, sign(ec_key, good), DIGEST).verified_by == {"k1"}
    verdict = verify_simplesigning([trusted], good, sign(ec_key, good), OTHER)
    assert verdict.problem is Problem.DIGEST_MISMATCH and f"names digest {DIGEST}" in verdict.detail
    typed = payload(kind="cosign container image attestation")
    verdict = verify_simplesigning([trusted], typed, sign(ec_key, typed), DIGEST)
    assert verdict.problem is Problem.WRONG_TYPE
    assert verify_simplesigning([trusted], good + b" ", sign(ec_key, good), DIGEST).problem is (
        Problem.BAD_SIGNATURE
    )
    assert verify_simplesigning([trusted], good, "!!not base64!!", DIGEST).problem is (
        Problem.MALFORMED
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b'{"critical": {"type": "cosign container image signature"}, "critical": {}}',
            "duplicate",
        ),
        (b'{"critical": {"type": "cosign container image signature", "image": NaN}}', "NaN"),
        (b'{"critical": {"type": 1}}', "critical.type is missing or not a string"),
        (b"[]", "the payload is not a JSON object"),
        (b"\xff\xfe", "not UTF-8"),
        (
            b'{"critical": {"type": "cosign container image signature", "identity": "x", '
            b'"image": {"docker-manifest-digest": "' + DIGEST.encode() + b'"}}}',
            "critical.identity is not a JSON object",
        ),
    ],
)
def test_malformed_payloads_are_rejected(
    ec_key: ec.EllipticCurvePrivateKey, trusted: TrustedKey, body: bytes, reason: str
) -> None:
    verdict = verify_simplesigning([trusted], body, sign(ec_key, body), DIGEST)
    assert verdict.problem is Problem.MALFORMED and reason in verdict.detail


def test_ecdsa_raw_signatures_and_other_curves() -> None:
    for curve, algorithm in ((ec.SECP256R1(), hashes.SHA256()), (ec.SECP384R1(), hashes.SHA384())):
        key = ec.generate_private_key(curve)
        trusted = load_key("k", pem(key))
        der = key.sign(payload(), ec.ECDSA(algorithm))
        r, s = decode_dss_signature(der)
        size = (curve.key_size + 7) // 8
        raw = base64.b64encode(r.to_bytes(size, "big") + s.to_bytes(size, "big")).decode()
        assert verify_simplesigning([trusted], payload(), raw, DIGEST).verified_by == {"k"}


def test_rsa_and_ed25519_keys() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = payload()
    pkcs1 = rsa_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    pss = rsa_key.sign(
        body, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH), hashes.SHA256()
    )
    trusted = load_key("rsa", pem(rsa_key))
    for sig in (pkcs1, pss):
        assert verify_simplesigning(
            [trusted], body, base64.b64encode(sig).decode(), DIGEST
        ).verified_by
    ed = ed25519.Ed25519PrivateKey.generate()
    pure = base64.b64encode(ed.sign(body)).decode()
    assert verify_simplesigning([load_key("ed", pem(ed))], body, pure, DIGEST).verified_by
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyError_, match="too weak"):
        load_key("weak", pem(weak))
    with pytest.raises(KeyError_, match="not a PEM public key"):
        load_key("junk", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_ed25519ph_rfc8032_vector() -> None:
    public = bytes.fromhex("ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf")
    signature = bytes.fromhex(
        "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae41"
        "31f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406"
    )
    assert ed25519ph.verify(public, b"abc", signature)
    assert not ed25519ph.verify(public, b"abd", signature)
    assert not ed25519ph.verify(public, b"abc", signature[:63] + b"\x00")


def bundle(
    key: ec.EllipticCurvePrivateKey,
    digest: str = DIGEST,
    predicate: str = "https://sigstore.dev/cosign/sign/v1",
    payload_type: str = "application/vnd.in-toto+json",
    material: dict[str, Any] | None = None,
) -> bytes:
    algorithm, hexdigest = digest.split(":")
    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"digest": {algorithm: hexdigest}}],
            "predicateType": predicate,
        }
    ).encode()
    sig = key.sign(pae(payload_type, statement), ec.ECDSA(hashes.SHA256()))
    return json.dumps(
        {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": material or {"publicKey": {"hint": "x"}},
            "dsseEnvelope": {
                "payload": base64.b64encode(statement).decode(),
                "payloadType": payload_type,
                "signatures": [{"sig": base64.b64encode(sig).decode()}],
            },
        }
    ).encode()


def test_bundle_verdicts(ec_key: ec.EllipticCurvePrivateKey, trusted: TrustedKey) -> None:
    assert verify_bundle([trusted], bundle(ec_key), DIGEST).verified_by == {"k1"}
    assert verify_bundle([trusted], bundle(ec_key), OTHER).problem is Problem.DIGEST_MISMATCH
    verdict = verify_bundle(
        [trusted], bundle(ec_key, predicate="https://slsa.dev/provenance/v1"), DIGEST
    )
    assert verdict.problem is Problem.WRONG_TYPE and "attestation" in verdict.detail
    verdict = verify_bundle([trusted], bundle(ec_key, payload_type="text/plain"), DIGEST)
    assert verdict.problem is Problem.MALFORMED
    other = ec.generate_private_key(ec.SECP256R1())
    assert verify_bundle([trusted], bundle(other), DIGEST).problem is Problem.BAD_SIGNATURE
    keyless = bundle(other, material={"certificate": {"rawBytes": "AA=="}})
    verdict = verify_bundle([trusted], keyless, DIGEST)
    assert verdict.problem is Problem.UNSUPPORTED and "keyless" in verdict.detail
    message = json.dumps({"messageSignature": {"signature": "AA=="}}).encode()
    assert verify_bundle([trusted], message, DIGEST).problem is Problem.UNSUPPORTED
    assert verify_bundle([trusted], b"{}", DIGEST).problem is Problem.MALFORMED


def test_docker_config_parsing() -> None:
    def auth(user: str, password: str) -> str:
        return base64.b64encode(f"{user}:{password}".encode()).decode()

    config = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": auth("hub", "p1")},
            "ghcr.io": {"username": "gh", "password": "p2"},
            "https://registry.example.com:5000/v2/": {"auth": auth("ex", "p:3")},
            "broken.example": {"auth": "%%%"},
        }
    }
    found = parse_docker_config(json.dumps(config))
    assert found == {
        "docker.io": Credential("hub", "p1"),
        "ghcr.io": Credential("gh", "p2"),
        "registry.example.com:5000": Credential("ex", "p:3"),
    }
    assert "p1" not in repr(found["docker.io"])
    legacy = parse_docker_config(json.dumps({"quay.io": {"auth": auth("q", "p")}}))
    assert legacy == {"quay.io": Credential("q", "p")}


def test_challenge_parsing() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:ml/serve:pull,push"'
    )
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:ml/serve:pull,push",
    }
    basic = parse_challenge('Basic realm="x \\"quoted\\""')
    assert basic is not None and basic.scheme == "basic" and basic.params["realm"] == 'x "quoted"'


def test_ttl_cache() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(max_entries=2, clock=clock)
    cache.put("a", 1, ttl=10)
    cache.put("b", 2, ttl=100)
    clock.advance(11)
    assert cache.get("a") is None and cache.get("b") == 2
    cache.put("c", 3, ttl=100)
    cache.put("d", 4, ttl=100)
    assert len(cache) == 2 and cache.get("b") is None  # least recently used went first


async def test_single_flight_shares_and_outlives_an_impatient_caller() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return 42

    impatient = asyncio.ensure_future(flight.do("k", work))
    patient = [asyncio.ensure_future(flight.do("k", work)) for _ in range(10)]
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert await asyncio.gather(*patient) == [42] * 10
    assert calls == 1 and len(flight) == 0


async def test_key_resolution_failures_say_what_to_fix(trusted: TrustedKey) -> None:
    secrets = FakeSecrets()
    secrets.put("ns", "keys", {"cosign.pub": "not a key"})
    resolver = KeyResolver(Secrets(secrets))
    cases = {
        KeyRef(id="secret:ns/keys/cosign.pub", secret=("ns", "keys", "cosign.pub")): (
            "key cosign.pub of Secret ns/keys is unusable"
        ),
        KeyRef(id="secret:ns/keys/other", secret=("ns", "keys", "other")): (
            "key Secret ns/keys has no key other"
        ),
        KeyRef(id="secret:ns/gone/k", secret=("ns", "gone", "k")): "key Secret ns/gone not found",
        KeyRef(id="sha256:x", pem="garbage"): "trusted key sha256:x is unusable",
    }
    for ref, reason in cases.items():
        failure = await resolver.resolve(ref)
        assert not isinstance(failure, TrustedKey)
        assert reason in failure.reason, failure.reason


def test_pull_secret_option() -> None:
    assert parse_pull_secret("mlgate-system/regcred") == ("mlgate-system", "regcred")
    for bad in ("regcred", "a/b/c", "/x", "NS/x"):
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            parse_pull_secret(bad)
