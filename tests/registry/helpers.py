"""Building verifiers, policies and workloads for the registry tests."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mlgate.api.compile import compile_policy, key_id, parse_resource
from mlgate.engine.evaluate import evaluate_view
from mlgate.engine.policy import CompiledPolicy, Facts
from mlgate.engine.workloads import WorkloadView, view
from mlgate.registry.client import ClientOptions, RegistryClient
from mlgate.registry.cosign import TrustedKey, load_key
from mlgate.registry.keys import SecretSource
from mlgate.registry.verifier import Verifier, VerifierOptions
from tests.registry.lab import CosignKey


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def verifier(
    *,
    insecure: Sequence[str] = (),
    ca_file: str | None = None,
    secrets: SecretSource | None = None,
    clock: Callable[[], float] | None = None,
    request_timeout: float = 1.0,
    **options: Any,
) -> AsyncIterator[Verifier]:
    client_options = ClientOptions(
        insecure_registries=frozenset(insecure), ca_file=ca_file, request_timeout=request_timeout
    )
    client = RegistryClient(client_options)
    opts = VerifierOptions(client=client_options, **{"deadline": 3.0, **options})
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    try:
        yield Verifier(client, opts, secrets, **kwargs)
    finally:
        await client.close()


def trusted(key: CosignKey) -> TrustedKey:
    return load_key(key_id(key.public_pem), key.public_pem)


def policy(
    images: Sequence[str],
    keys: Sequence[dict[str, Any]],
    name: str = "signed-only",
    namespace: str = "ml",
) -> CompiledPolicy:
    doc = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": name},
        "spec": {
            "mode": "Enforce",
            "match": {"namespaces": [namespace]},
            "images": {"signatures": [{"images": list(images), "keys": list(keys)}]},
        },
    }
    resource = parse_resource(doc)
    return compile_policy(resource)  # type: ignore[arg-type]


def inline(key: CosignKey) -> dict[str, Any]:
    return {"publicKey": key.public_pem}


def secret_key(namespace: str, name: str, key: str = "cosign.pub") -> dict[str, Any]:
    return {"secretRef": {"namespace": namespace, "name": name, "key": key}}


def deployment(
    images: Sequence[str], namespace: str = "ml", pull_secrets: Sequence[str] = ()
) -> WorkloadView:
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    }
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "serve", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "serve"}},
            "template": {"metadata": {"labels": {"app": "serve"}}, "spec": spec},
        },
    }
    item = view(obj)
    assert isinstance(item, WorkloadView)
    return item


async def judge(
    verify: Verifier, policies: Sequence[CompiledPolicy], workload: WorkloadView
) -> tuple[bool, str, Mapping[str, Any]]:
    """(allowed, the denial messages, the facts) as the webhook would decide."""
    facts = await verify(tuple(policies), workload)
    decision = evaluate_view(
        tuple(policies), workload, Facts(now=datetime.now(UTC), namespace_labels={}, images=facts)
    )
    return decision.allowed, "\n".join(v.message for v in decision.denials), facts


class FakeSecrets:
    """A SecretSource over a dict the test edits: (namespace, name) -> {key: text}."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.reads = 0

    def put(self, namespace: str, name: str, data: Mapping[str, str | bytes]) -> None:
        self.secrets[(namespace, name)] = {
            k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode()
            for k, v in data.items()
        }

    async def __call__(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.reads += 1
        data = self.secrets.get((namespace, name))
        return None if data is None else {"metadata": {"name": name}, "data": data}
