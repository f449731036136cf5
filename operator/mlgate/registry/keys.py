"""Trusted keys and pull credentials from policies and Kubernetes Secrets.

Secrets are read through a `SecretSource` (the apiserver in `mlgate run`, nothing offline), cached
for a short TTL so a rotated key or credential takes effect within seconds, and de-duplicated
while in flight. A key that cannot be had is an error value naming the Secret and what to fix;
it never raises into the webhook.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mlgate.engine.policy import KeyRef
from mlgate.registry.auth import AuthConfigError, Credential, credentials_from_secret
from mlgate.registry.cache import SingleFlight, TtlCache
from mlgate.registry.cosign import KeyError_, TrustedKey, load_key


class SecretUnavailable(Exception):
    """The Secret could not be read (not: it does not exist); the message says why."""


class SecretSource(Protocol):
    """Reads one Secret object; None when it does not exist."""

    def __call__(self, namespace: str, name: str) -> Awaitable[Mapping[str, Any] | None]: ...


async def no_secrets(namespace: str, name: str) -> Mapping[str, Any] | None:
    raise SecretUnavailable("Secrets cannot be read offline (no cluster connection)")


@dataclass(frozen=True, slots=True)
class KeyFailure:
    key_id: str
    reason: str


class Secrets:
    """Secret reads with a TTL cache (found, missing and unreadable alike) and single-flight."""

    def __init__(
        self,
        source: SecretSource,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 2.0,
    ) -> None:
        self._source = source
        self._ttl = ttl
        self._timeout = timeout
        self._cache: TtlCache[tuple[str, str], Mapping[str, Any] | str | None] = TtlCache(
            1024, clock
        )
        self._flight: SingleFlight[tuple[str, str], Mapping[str, Any] | str | None] = SingleFlight()

    def peek(self, namespace: str, name: str) -> tuple[bool, Mapping[str, Any] | str | None]:
        """(cached?, the Secret, None if missing, or why it is unreadable) without I/O."""
        found = self._cache.get((namespace, name))
        if found is None:
            return False, None
        return True, None if found is _MISSING else found

    async def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The Secret, None if it does not exist; raises SecretUnavailable if unreadable."""
        key = (namespace, name)
        found = self._cache.get(key)
        if found is None:
            found = await self._flight.do(key, lambda: self._load(key))
        if isinstance(found, str):
            raise SecretUnavailable(found)
        return None if found is None or found is _MISSING else found

    async def _load(self, key: tuple[str, str]) -> Mapping[str, Any] | str | None:
        try:
            async with asyncio.timeout(self._timeout):
                value: Mapping[str, Any] | str | None = await self._source(*key)
        except TimeoutError:
            value = f"the apiserver did not answer within {self._timeout:g}s"
        except SecretUnavailable as exc:
            value = str(exc)
        except Exception as exc:  # the API failed: a value, cached briefly like the rest
            value = str(exc) or type(exc).__name__
        self._cache.put(key, value if value is not None else _MISSING, self._ttl)
        return value

    def invalidate(self) -> None:
        self._cache.clear()


_MISSING: Mapping[str, Any] = {"__mlgate_missing__": True}


class KeyResolver:
    """KeyRef -> TrustedKey, or a KeyFailure saying why the key cannot be used."""

    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets
        self._inline: dict[str, TrustedKey | KeyFailure] = {}

    def _inline_key(self, ref: KeyRef, pem: str) -> TrustedKey | KeyFailure:
        found = self._inline.get(pem)
        if found is None:
            try:
                found = load_key(ref.id, pem)
            except KeyError_ as exc:
                found = KeyFailure(ref.id, f"trusted key {ref.id} is unusable: {exc}")
            if len(self._inline) > 1024:
                self._inline.clear()
            self._inline[pem] = found
        return found

    def resolve_cached(self, ref: KeyRef) -> TrustedKey | KeyFailure | None:
        """The key when it is known without I/O (inline, or its Secret is cached); else None."""
        if ref.pem is not None:
            return self._inline_key(ref, ref.pem)
        if ref.secret is None:
            return KeyFailure(ref.id, f"trusted key {ref.id} has neither PEM nor secretRef")
        cached, secret = self.secrets.peek(ref.secret[0], ref.secret[1])
        if not cached:
            return None
        if isinstance(secret, str):
            label = f"{ref.secret[0]}/{ref.secret[1]}"
            return KeyFailure(ref.id, f"key Secret {label} cannot be read: {secret}")
        return self._from_secret(ref, ref.secret, secret)

    async def resolve(self, ref: KeyRef) -> TrustedKey | KeyFailure:
        found = self.resolve_cached(ref)
        if found is not None:
            return found
        assert ref.secret is not None  # resolve_cached answers every other case
        namespace, name, _ = ref.secret
        try:
            secret = await self.secrets.get(namespace, name)
        except SecretUnavailable as exc:
            return KeyFailure(ref.id, f"key Secret {namespace}/{name} cannot be read: {exc}")
        return self._from_secret(ref, ref.secret, secret)

    def _from_secret(
        self, ref: KeyRef, where: tuple[str, str, str], secret: Mapping[str, Any] | None
    ) -> TrustedKey | KeyFailure:
        namespace, name, key = where
        label = f"{namespace}/{name}"
        if secret is None:
            return KeyFailure(ref.id, f"key Secret {label} not found; create it with the key {key}")
        data = secret.get("data")
        value = data.get(key) if isinstance(data, Mapping) else None
        if not isinstance(value, str):
            return KeyFailure(ref.id, f"key Secret {label} has no key {key}")
        try:
            pem = base64.b64decode(value, validate=True)
            return load_key(ref.id, pem)
        except (binascii.Error, ValueError) as exc:
            return KeyFailure(ref.id, f"key {key} of Secret {label} is unusable: {exc}")


class PullSecrets:
    """Registry credentials from dockerconfigjson Secrets, by host."""

    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets

    async def credentials(
        self, refs: tuple[tuple[str, str], ...]
    ) -> tuple[dict[str, Credential], list[str]]:
        """host -> first credential among the Secrets `refs` (ns, name); and problems found."""
        found: dict[str, Credential] = {}
        problems: list[str] = []
        for namespace, name in refs:
            label = f"{namespace}/{name}"
            try:
                secret = await self.secrets.get(namespace, name)
            except SecretUnavailable as exc:
                problems.append(f"pull Secret {label} cannot be read: {exc}")
                continue
            if secret is None:
                problems.append(f"pull Secret {label} not found")
                continue
            try:
                for host, credential in credentials_from_secret(secret, label).items():
                    found.setdefault(host, credential)
            except AuthConfigError as exc:
                problems.append(str(exc))
        return found, problems
