"""Invalid mlgate resources are rejected naming the field; valid ones compile to engine data."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from mlgate.api import models as api
from mlgate.api.compile import (
    InvalidResource,
    compile_approval,
    compile_policy,
    key_id,
    parse_resource,
)
from mlgate.engine.decisions import Mode
from mlgate.engine.policy import KeyRef

_KEY = ec.generate_private_key(ec.SECP256R1())
PEM = _KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
DER = _KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
PRIVATE_PEM = _KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
SECRET_REF = {"namespace": "mlgate-system", "name": "cosign-keys", "key": "cosign.pub"}


def _pem_of(der: bytes) -> str:
    return (
        f"-----BEGIN PUBLIC KEY-----\n{base64.b64encode(der).decode()}\n-----END PUBLIC KEY-----\n"
    )


def _tlv(tag: int, value: bytes) -> bytes:
    assert len(value) < 128
    return bytes([tag, len(value)]) + value


# A well-formed SubjectPublicKeyInfo whose algorithm (OID 1.2.3.4) no library supports.
UNKNOWN_ALGORITHM_PEM = _pem_of(
    _tlv(
        0x30, _tlv(0x30, _tlv(0x06, bytes([0x2A, 0x03, 0x04]))) + _tlv(0x03, b"\x00" + b"\x01" * 32)
    )
)
# An EC key on secp112r1, a curve OpenSSL will not load.
UNSUPPORTED_CURVE_PEM = _pem_of(
    _tlv(
        0x30,
        _tlv(
            0x30,
            _tlv(0x06, bytes.fromhex("2a8648ce3d0201")) + _tlv(0x06, bytes.fromhex("2b81040006")),
        )
        + _tlv(0x03, b"\x00\x04" + b"\x01" * 28),
    )
)


def cluster_policy(spec: dict[str, Any], name: str = "production-ml") -> dict[str, Any]:
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def rejected(doc: dict[str, Any]) -> str:
    with pytest.raises(InvalidResource) as info:
        parse_resource(doc)
    return str(info.value)


# --- invalid policies name the field ---------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"images": {"foo": True}}, "spec.images.foo: Extra inputs are not permitted"),
        ({"network": {}}, "spec.network: Extra inputs are not permitted"),
        ({"mode": "enforce"}, "spec.mode: Input should be 'Enforce', 'Warn' or 'Audit'"),
        ({"mode": "Deny"}, "spec.mode: Input should be 'Enforce', 'Warn' or 'Audit'"),
        (
            {"gpu": {"maxPerPod": -1}},
            "spec.gpu.maxPerPod: Input should be greater than or equal to 0",
        ),
        (
            {"gpu": {"maxPerWorkload": -8}},
            "spec.gpu.maxPerWorkload: Input should be greater than or equal to 0",
        ),
        (
            {"gpu": {"namespaceQuota": -32}},
            "spec.gpu.namespaceQuota: Input should be greater than or equal to 0",
        ),
        ({"gpu": {"maxPerPod": True}}, "spec.gpu.maxPerPod: Input should be a valid integer"),
        ({"gpu": {"maxPerPod": "8"}}, "spec.gpu.maxPerPod: Input should be a valid integer"),
        ({"gpu": {"maxPerPod": 1.5}}, "spec.gpu.maxPerPod: Input should be a valid integer"),
        ({"gpu": {"resources": ["gpu"]}}, "spec.gpu.resources[0]: String should match pattern"),
        (
            {"gpu": {"allowedProducts": [""]}},
            "spec.gpu.allowedProducts[0]: String should have at least 1 character",
        ),
        (
            {"match": {"namespaces": ["Team-A"]}},
            "spec.match.namespaces[0]: String should match pattern",
        ),
        ({"match": {"kinds": ["deployment"]}}, "spec.match.kinds[0]: String should match pattern"),
        (
            {"match": {"selector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}}},
            "spec.match.selector.matchExpressions[0]: Value error, operator In needs values",
        ),
        (
            {
                "match": {
                    "selector": {
                        "matchExpressions": [{"key": "t", "operator": "Exists", "values": ["x"]}]
                    }
                }
            },
            "spec.match.selector.matchExpressions[0]: Value error, operator Exists takes no values",
        ),
        (
            {
                "match": {
                    "selector": {
                        "matchExpressions": [{"key": "t", "operator": "Equals", "values": ["x"]}]
                    }
                }
            },
            "spec.match.selector.matchExpressions[0].operator: Input should be",
        ),
        (
            {"egress": {"networkPolicy": {"allowedCIDRs": ["10.0.0.1/8"]}}},
            "spec.egress.networkPolicy.allowedCIDRs: Value error, invalid CIDR '10.0.0.1/8'",
        ),
        (
            {"egress": {"networkPolicy": {"allowedPorts": [0]}}},
            "spec.egress.networkPolicy.allowedPorts[0]: Input should be greater than or equal to 1",
        ),
        (
            {"models": {"requireApproved": "maybe"}},
            "spec.models.requireApproved: Input should be a valid boolean",
        ),
        (
            {"models": {"sources": {"env": ["MODEL URI"]}}},
            "spec.models.sources.env[0]: String should match pattern",
        ),
        (
            {"images": {"disallowTags": ["-x"]}},
            "spec.images.disallowTags[0]: String should match pattern",
        ),
        (
            {"images": {"requireDigest": "yes please"}},
            "spec.images.requireDigest: Input should be a valid boolean",
        ),
    ],
)
def test_invalid_policy_names_the_field(spec: dict[str, Any], message: str) -> None:
    assert message in rejected(cluster_policy(spec))


@pytest.mark.parametrize(
    ("glob", "message"),
    [
        ("ghcr.io/Acme/*", "invalid repository glob in image pattern 'ghcr.io/Acme/*'"),
        ("ghcr.io/acme/x:v1", "image pattern 'ghcr.io/acme/x:v1' names a tag"),
        ("ghcr.io:abc/acme/*", "invalid registry host in image pattern 'ghcr.io:abc/acme/*'"),
        ("ghcr.io/", "invalid repository glob in image pattern 'ghcr.io/'"),
        ("ghcr.io/acme/x@sha256:abc", "String should match pattern"),
        ("ghcr.io/ac me", "String should match pattern"),
        ("", "String should have at least 1 character"),
    ],
)
def test_bad_registry_glob_names_the_item(glob: str, message: str) -> None:
    error = rejected(cluster_policy({"images": {"allowedRegistries": ["ghcr.io/acme/*", glob]}}))
    assert error.startswith("spec.images.allowedRegistries[1]: ")
    assert message in error


def test_bad_signature_glob_names_the_item() -> None:
    spec = {
        "images": {
            "signatures": [
                {"images": ["ghcr.io/acme/*", "ghcr.io/ACME/*"], "keys": [{"publicKey": PEM}]}
            ]
        }
    }
    assert rejected(cluster_policy(spec)).startswith("spec.images.signatures[0].images[1]: ")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            {"publicKey": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
            "malformed PEM public key",
        ),
        (
            {"publicKey": PEM.replace("A", "B", 5)[:-40] + "\n-----END PUBLIC KEY-----\n"},
            "malformed PEM public key",
        ),
        ({"publicKey": UNKNOWN_ALGORITHM_PEM}, "malformed PEM public key: Unknown key type"),
        ({"publicKey": UNSUPPORTED_CURVE_PEM}, "malformed PEM public key"),
        ({"publicKey": PRIVATE_PEM}, "String should match pattern"),
        ({"publicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"}, "String should match pattern"),
        ({"publicKey": PEM + PEM}, "String should match pattern"),
    ],
)
def test_malformed_pem_is_rejected(key: dict[str, Any], message: str) -> None:
    spec = {"images": {"signatures": [{"images": ["ghcr.io/acme/*"], "keys": [key]}]}}
    error = rejected(cluster_policy(spec))
    assert error.startswith("spec.images.signatures[0].keys[0].publicKey: ")
    assert message in error


@pytest.mark.parametrize("key", [{}, {"publicKey": PEM, "secretRef": SECRET_REF}])
def test_exactly_one_key_source(key: dict[str, Any]) -> None:
    spec = {"images": {"signatures": [{"images": ["ghcr.io/acme/*"], "keys": [key]}]}}
    assert rejected(cluster_policy(spec)) == (
        "spec.images.signatures[0].keys[0]: Value error, set exactly one of publicKey or secretRef"
    )


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"images": [], "keys": [{"publicKey": PEM}]}, "spec.images.signatures[0].images"),
        ({"images": ["ghcr.io/acme/*"], "keys": []}, "spec.images.signatures[0].keys"),
        ({"images": ["ghcr.io/acme/*"]}, "spec.images.signatures[0].keys: Field required"),
        (
            {
                "images": ["ghcr.io/acme/*"],
                "keys": [{"secretRef": {**SECRET_REF, "namespace": "Bad_NS"}}],
            },
            "spec.images.signatures[0].keys[0].secretRef.namespace",
        ),
    ],
)
def test_signature_entry_shape(entry: dict[str, Any], field: str) -> None:
    assert field in rejected(cluster_policy({"images": {"signatures": [entry]}}))


def test_every_problem_is_listed() -> None:
    error = rejected(cluster_policy({"mode": "x", "gpu": {"maxPerPod": -1}}))
    assert error.split("; ") == [
        "spec.mode: Input should be 'Enforce', 'Warn' or 'Audit'",
        "spec.gpu.maxPerPod: Input should be greater than or equal to 0",
    ]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"apiVersion": "mlgate.io/v1alpha1", "kind": "Policy", "metadata": {"name": "x"}},
            "kind: 'Policy' is not an mlgate.io kind",
        ),
        (
            {"apiVersion": "mlgate.io/v1alpha1", "metadata": {"name": "x"}},
            "kind: None is not an mlgate.io kind",
        ),
        (
            {**cluster_policy({}), "apiVersion": "mlgate.io/v1"},
            "apiVersion: Input should be 'mlgate.io/v1alpha1'",
        ),
        ({**cluster_policy({}), "metadata": {}}, "metadata.name: Field required"),
        ({k: v for k, v in cluster_policy({}).items() if k != "spec"}, "spec: Field required"),
        ({**cluster_policy({}), "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_malformed_documents(doc: dict[str, Any], message: str) -> None:
    assert message in rejected(doc)


# --- ApprovedModel ---------------------------------------------------------------------------


def approved_model(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ApprovedModel",
        "metadata": {"name": "fraud-detector-v3"},
        "spec": {"model": "fraud-detector", "version": "3", **spec},
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"uris": ["ftp://models/x"]}, "spec.uris[0]: String should match pattern"),
        ({"uris": ["S3://models/x"]}, "spec.uris[0]: String should match pattern"),
        ({"uris": ["s3://models/x y"]}, "spec.uris[0]: String should match pattern"),
        (
            {"expires": "2027-06-30T00:00:00"},
            "spec.expires: Value error, expires needs a time zone",
        ),
        ({"expires": "next year"}, "spec.expires: Input should be a valid datetime"),
        ({"digest": "sha256:abc"}, "spec.digest: String should match pattern"),
        ({"namespaces": ["Team-A"]}, "spec.namespaces[0]: String should match pattern"),
        ({"model": ""}, "spec.model: String should have at least 1 character"),
        ({"revoked": "maybe"}, "spec.revoked: Input should be a valid boolean"),
    ],
)
def test_invalid_approved_model(spec: dict[str, Any], message: str) -> None:
    assert message in rejected(approved_model(**spec))


def test_compile_approval() -> None:
    resource = parse_resource(
        approved_model(
            uris=["s3://models/fraud-detector/v3/", "hf://acme/fraud-detector"],
            digest="sha256:" + "4f1c" * 16,
            approvedBy="security-team",
            expires="2027-06-30T02:00:00+02:00",
            namespaces=["team-*"],
        )
    )
    assert isinstance(resource, api.ApprovedModel)
    a = compile_approval(resource)
    assert a.name == "fraud-detector-v3"
    assert (a.model, a.version) == ("fraud-detector", "3")
    assert a.uris == frozenset({"s3://models/fraud-detector/v3", "hf://acme/fraud-detector"})
    assert a.digest == "sha256:" + "4f1c" * 16
    assert a.expires == datetime(2027, 6, 30, tzinfo=UTC)
    assert a.revoked is False
    assert [bool(g.fullmatch(n)) for g in a.namespaces for n in ("team-a", "prod")] == [True, False]


# --- valid policies compile ------------------------------------------------------------------

FULL_SPEC: dict[str, Any] = {
    "mode": "Warn",
    "match": {
        "namespaceSelector": {
            "matchLabels": {"mlgate.io/governed": "true"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}],
        },
        "namespaces": ["ml-*"],
        "excludeNamespaces": ["ml-sandbox"],
        "kinds": ["Deployment", "PyTorchJob"],
        "selector": {"matchLabels": {"tier": "ml"}},
    },
    "images": {
        "allowedRegistries": ["registry.example.com/ml/*", "GHCR.IO/acme/*"],
        "requireDigest": True,
        "disallowTags": ["latest", "Dev"],
        "signatures": [
            {
                "images": ["registry.example.com/ml/*"],
                "keys": [{"publicKey": PEM}, {"secretRef": SECRET_REF}],
            }
        ],
    },
    "models": {"requireApproved": True, "requireReference": True},
    "egress": {
        "allowHostNetwork": False,
        "networkPolicy": {
            "manage": True,
            "allowDNS": True,
            "allowedCIDRs": ["10.0.0.0/8"],
            "allowedPorts": [443],
        },
    },
    "gpu": {
        "maxPerPod": 8,
        "maxPerWorkload": 16,
        "namespaceQuota": 32,
        "allowedProducts": ["NVIDIA-H100-80GB-HBM3"],
    },
}


def test_compile_cluster_policy() -> None:
    resource = parse_resource(cluster_policy(FULL_SPEC))
    assert isinstance(resource, api.ClusterMLPolicy)
    p = compile_policy(resource)
    assert p.name == "production-ml"
    assert p.mode is Mode.WARN

    m = p.match
    assert m.own_namespace is None
    assert [bool(g.fullmatch(n)) for g in m.namespaces for n in ("ml-prod", "team-a")] == [
        True,
        False,
    ]
    assert [bool(g.fullmatch("ml-sandbox")) for g in m.exclude_namespaces] == [True]
    assert m.namespace_selector is not None
    assert m.namespace_selector.match_labels == {"mlgate.io/governed": "true"}
    assert m.namespace_selector.match_expressions == (
        ("env", "In", frozenset({"prod", "staging"})),
    )
    assert m.kinds == frozenset({"Deployment", "PyTorchJob"})
    assert m.selector is not None and m.selector.match_labels == {"tier": "ml"}

    images = p.images
    assert images is not None
    assert images.allowed_registries is not None
    assert [pat.source for pat in images.allowed_registries] == [
        "registry.example.com/ml/*",
        "GHCR.IO/acme/*",
    ]
    assert images.require_digest is True
    assert images.disallow_tags == frozenset({"latest", "dev"})
    assert images.signatures is not None
    (entry,) = images.signatures
    assert [pat.source for pat in entry.images] == ["registry.example.com/ml/*"]
    assert entry.keys == (
        KeyRef(id="sha256:" + hashlib.sha256(DER).hexdigest(), pem=PEM),
        KeyRef(
            id="secret:mlgate-system/cosign-keys/cosign.pub",
            secret=("mlgate-system", "cosign-keys", "cosign.pub"),
        ),
    )
    assert entry.key_ids == frozenset({k.id for k in entry.keys})

    assert p.models is not None
    assert p.models.require_approved and p.models.require_reference
    assert p.models.annotations == ("mlgate.io/model", "mlgate.io/model-uri")
    assert p.models.env == ("MODEL_URI", "MODEL_ID", "HF_MODEL_ID", "STORAGE_URI")

    assert p.egress is not None and p.egress.allow_host_network is False
    assert p.egress.network_policy is not None
    assert p.egress.network_policy.allowed_cidrs == ("10.0.0.0/8",)
    assert p.egress.network_policy.allowed_ports == (443,)
    assert p.egress.network_policy.allow_dns is True

    g = p.gpu
    assert g is not None
    assert (g.max_per_pod, g.max_per_workload, g.namespace_quota) == (8, 16, 32)
    assert g.allowed_products == frozenset({"NVIDIA-H100-80GB-HBM3"})
    names = (
        "nvidia.com/gpu",
        "amd.com/gpu",
        "nvidia.com/mig-1g.5gb",
        "nvidia.com/gpu.shared",  # time-slicing's renamed resource is a GPU too
        "cpu",
    )
    assert [n for n in names if any(r.fullmatch(n) for r in g.resources)] == list(names[:4])


def test_compile_minimal_policy() -> None:
    p = compile_policy(parse_resource(cluster_policy({})))  # type: ignore[arg-type]
    assert p.mode is Mode.ENFORCE
    assert (p.images, p.models, p.egress, p.gpu) == (None, None, None, None)
    assert p.match.namespaces == () and p.match.namespace_selector is None


def test_compile_ml_policy() -> None:
    doc = {**cluster_policy({"images": {"requireDigest": True}}), "kind": "MLPolicy"}
    doc["metadata"] = {"name": "team-rules", "namespace": "team-a"}
    resource = parse_resource(doc)
    assert isinstance(resource, api.MLPolicy)
    p = compile_policy(resource)
    assert p.name == "team-a/team-rules"
    assert p.match.own_namespace == "team-a"


def test_ml_policy_needs_a_namespace() -> None:
    resource = parse_resource({**cluster_policy({}), "kind": "MLPolicy"})
    assert isinstance(resource, api.MLPolicy)
    with pytest.raises(
        InvalidResource, match=re.escape("metadata.namespace: an MLPolicy must have a namespace")
    ):
        compile_policy(resource)


def test_key_id_is_the_sha256_of_the_der_key() -> None:
    assert key_id(PEM) == "sha256:" + hashlib.sha256(DER).hexdigest()
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    ed_pem = ed.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    ed_der = ed.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert key_id(ed_pem) == "sha256:" + hashlib.sha256(ed_der).hexdigest()
    # the same key, however its PEM is wrapped, has one id
    assert key_id(PEM.replace("\n", "\r\n")) == key_id(PEM)
