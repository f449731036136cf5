"""The verifier as `mlgate run` uses it: key and pull Secrets read through the apiserver."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlgate.cluster.client import KubeClient, resource_path
from mlgate.registry.client import ClientOptions, RegistryClient
from mlgate.registry.keys import SecretSource
from mlgate.registry.verifier import Verifier, VerifierOptions

_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def parse_pull_secret(text: str) -> tuple[str, str]:
    """`NAMESPACE/NAME` -> (namespace, name); ValueError saying what is wrong."""
    namespace, sep, name = text.partition("/")
    if not sep or not _NAME.fullmatch(namespace) or not _NAME.fullmatch(name):
        raise ValueError(
            f"--pull-secret {text!r}: give NAMESPACE/NAME of a dockerconfigjson Secret"
        )
    return namespace, name


def check_registry_options(insecure: Sequence[str], ca_file: str | None) -> None:
    if ca_file is not None and not Path(ca_file).is_file():
        raise ValueError(f"--registry-ca-file {ca_file}: no such file")
    for host in insecure:
        if not host or "/" in host:
            raise ValueError(f"--insecure-registry {host!r}: give HOST or HOST:PORT")


def kube_secrets(client: KubeClient) -> SecretSource:
    async def read(namespace: str, name: str) -> Mapping[str, Any] | None:
        return await client.get_or_none(resource_path("v1", "secrets", namespace, name))

    return read


def cluster_verifier(
    client: KubeClient,
    *,
    insecure: Sequence[str],
    ca_file: str | None,
    pull_secrets: Sequence[tuple[str, str]],
    webhook_deadline: float,
    namespace_labels: Callable[[str], Mapping[str, str] | None] | None = None,
) -> Verifier:
    """A verifier whose deadline leaves the webhook a second to answer with its reason."""
    deadline = max(0.5, webhook_deadline - 1.0)
    client_options = ClientOptions(
        insecure_registries=frozenset(h.lower() for h in insecure),
        ca_file=ca_file,
        request_timeout=min(3.0, max(0.5, deadline / 2)),
    )
    options = VerifierOptions(
        client=client_options, deadline=deadline, pull_secrets=tuple(pull_secrets)
    )
    return Verifier(RegistryClient(client_options), options, kube_secrets(client), namespace_labels)
