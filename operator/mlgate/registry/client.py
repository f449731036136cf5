"""An async OCI distribution client (aiohttp): just what signature verification needs.

- manifests by tag or digest (OCI/Docker manifests and indexes), referrers, blobs;
- every byte received is hashed and checked against the digest it was asked for (or, for a
  tag, against the digest the registry claims), and reading stops at hard size limits;
- bearer-token and basic auth from dockerconfigjson credentials, answering the registry's
  `WWW-Authenticate` challenge; tokens are cached until they expire;
- HTTPS with the system CAs plus an optional CA bundle; plain HTTP only for registries
  explicitly named insecure; a timeout on every request.

Failures raise `RegistryError` with a message that names the registry and says what happened;
the verifier turns them into facts. Nothing here knows about signatures or policies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from mlgate.registry.auth import Challenge, Credential, parse_challenge

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})

MiB = 1024 * 1024
_HUB_API = "registry-1.docker.io"
_HASHES = {"sha256": 64, "sha384": 96, "sha512": 128}
_CHUNK = 64 * 1024


class RegistryError(Exception):
    """A registry interaction failed; `kind` classifies it, the message explains it."""

    def __init__(self, message: str, kind: str = "registry") -> None:
        super().__init__(message)
        self.kind = kind  # timeout | unreachable | unauthorized | server | too-large | integrity


@dataclass(frozen=True, slots=True)
class ClientOptions:
    insecure_registries: frozenset[str] = frozenset()  # host[:port] reached over plain HTTP
    ca_file: str | None = None  # extra CAs, on top of the system's
    request_timeout: float = 3.0  # seconds, per HTTP request
    max_manifest_bytes: int = 4 * MiB
    max_blob_bytes: int = 4 * MiB
    connections_per_host: int = 16


@dataclass(frozen=True, slots=True)
class Repository:
    host: str  # as in image references: docker.io, ghcr.io, 127.0.0.1:5000
    path: str  # library/nginx

    def __str__(self) -> str:
        return f"{self.host}/{self.path}"


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes
    doc: Mapping[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def compute_digest(algorithm: str, data: bytes) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def check_digest(digest: str) -> str:
    """The algorithm of a well-formed digest; raises RegistryError otherwise."""
    algorithm, _, hexdigest = digest.partition(":")
    length = _HASHES.get(algorithm)
    if (
        length is None
        or len(hexdigest) != length
        or any(c not in "0123456789abcdef" for c in hexdigest)
    ):
        raise RegistryError(f"malformed or unsupported digest {digest!r}", "integrity")
    return algorithm


def _refused(host: str, what: str, status: int, credential: Credential | None) -> RegistryError:
    fix = (
        "the pull secret's credentials are not accepted"
        if credential is not None
        else "no pull secret provides credentials for it"
    )
    return RegistryError(
        f"registry {host} refused access to {what} (HTTP {status}): {fix}; add a "
        "dockerconfigjson Secret to the workload's imagePullSecrets or to --pull-secret",
        "unauthorized",
    )


@dataclass
class _Token:
    value: str
    expires: float


@dataclass
class _HostAuth:
    """What a registry asked for last time, so the next request answers it up front."""

    challenge: Challenge | None = None
    tokens: dict[tuple[str, str], _Token] = field(default_factory=dict)  # (scope, cred) -> token


class RegistryClient:
    """One aiohttp session for every registry; create and use it inside a running loop."""

    def __init__(self, options: ClientOptions | None = None) -> None:
        self.options = options or ClientOptions()
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None
        self._auth: dict[str, _HostAuth] = {}

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            context = ssl.create_default_context()
            if self.options.ca_file:
                try:
                    context.load_verify_locations(cafile=self.options.ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise RegistryError(
                        f"cannot load the registry CA bundle {self.options.ca_file}: {exc}",
                        "config",
                    ) from None
            self._ssl = context
        return self._ssl

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl_context(),
                limit=256,
                limit_per_host=self.options.connections_per_host,
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.options.request_timeout),
                headers={"User-Agent": "mlgate-verifier"},
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- URLs ------------------------------------------------------------------------------------

    def insecure(self, host: str) -> bool:
        return host in self.options.insecure_registries

    def base_url(self, host: str) -> str:
        scheme = "http" if self.insecure(host) else "https"
        return f"{scheme}://{_HUB_API if host == 'docker.io' else host}"

    # -- requests --------------------------------------------------------------------------------

    async def _read(self, response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
        declared = response.content_length
        if declared is not None and declared > limit:
            raise RegistryError(
                f"{what} is {declared} bytes, more than the {limit}-byte limit", "too-large"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise RegistryError(f"{what} is larger than the {limit}-byte limit", "too-large")
            chunks.append(chunk)
        return b"".join(chunks)

    def _authorization(self, host: str, scope: str, credential: Credential | None) -> str | None:
        state = self._auth.get(host)
        if state is None or state.challenge is None:
            return None
        if state.challenge.scheme == "basic":
            return credential.basic if credential is not None else None
        token = state.tokens.get((scope, credential.fingerprint if credential else ""))
        if token is not None and token.expires > time.monotonic():
            return f"Bearer {token.value}"
        return None

    async def _fetch_token(
        self, host: str, challenge: Challenge, scope: str, credential: Credential | None
    ) -> str:
        realm = challenge.params.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise RegistryError(
                f"registry {host} sent an unusable token realm {realm!r}", "unauthorized"
            )
        if parts.scheme == "http" and not self.insecure(parts.netloc) and not self.insecure(host):
            raise RegistryError(
                f"registry {host} wants a token from plain-HTTP {realm}; refusing to send "
                "credentials unencrypted (name it with --insecure-registry to allow)",
                "unauthorized",
            )
        params = {"scope": scope}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        headers = {"Authorization": credential.basic} if credential is not None else {}
        try:
            async with self.session.get(
                realm, params=params, headers=headers, allow_redirects=False
            ) as response:
                body = await self._read(response, 1 * MiB, f"token from {realm}")
                if response.status in (401, 403):
                    raise _refused(
                        host, f"{scope} at its token service", response.status, credential
                    )
                if response.status != 200:
                    raise RegistryError(
                        f"registry {host}'s token service {realm} answered HTTP {response.status}",
                        "server" if response.status >= 500 else "unauthorized",
                    )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._transport_error(host, f"a token from {realm}", exc) from None
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
            expires_in = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token, expires_in = None, 0.0
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {host}'s token service sent no token", "unauthorized")
        state = self._auth.setdefault(host, _HostAuth())
        state.tokens[(scope, credential.fingerprint if credential else "")] = _Token(
            token, time.monotonic() + max(0.0, min(expires_in, 3600.0) - 10.0)
        )
        return f"Bearer {token}"

    def _transport_error(self, host: str, what: str, exc: BaseException) -> RegistryError:
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return RegistryError(
                f"timeout: registry {host} did not answer {what} within "
                f"{self.options.request_timeout:g}s",
                "timeout",
            )
        if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            return RegistryError(
                f"registry {host} unreachable: TLS failed ({exc}); trust its CA with "
                "--registry-ca-file, or name a plain-HTTP registry with --insecure-registry",
                "unreachable",
            )
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            return RegistryError(
                f"registry {host} broke off the connection while sending {what}", "unreachable"
            )
        return RegistryError(f"registry {host} unreachable: {exc}", "unreachable")

    async def _get(
        self,
        repo: Repository,
        path: str,
        *,
        accept: tuple[str, ...] = (),
        credential: Credential | None,
        limit: int,
        what: str,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """GET base/v2/<repo>/<path>, answering one auth challenge; (status, headers, body)."""
        url = f"{self.base_url(repo.host)}/v2/{repo.path}/{path}"
        scope = f"repository:{repo.path}:pull"
        headers = {"Accept": ", ".join(accept)} if accept else {}
        for attempt in (1, 2):
            authorization = self._authorization(repo.host, scope, credential)
            sent = dict(headers, Authorization=authorization) if authorization else headers
            challenge: Challenge | None = None
            try:
                async with self.session.get(
                    url, headers=sent, params=params, max_redirects=3
                ) as response:
                    if response.status == 401 and attempt == 1:
                        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
                    if challenge is None or challenge.scheme not in ("bearer", "basic"):
                        body = b""
                        if response.status < 400:
                            body = await self._read(response, limit, what)
                        # A copy that stays case-insensitive (HTTP/2 sends lower-case names).
                        return response.status, CIMultiDict(response.headers), body
            except RegistryError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise self._transport_error(repo.host, what, exc) from None
            # Answer the challenge (connection released), then try once more.
            self._auth.setdefault(repo.host, _HostAuth()).challenge = challenge
            if challenge.scheme == "bearer":
                await self._fetch_token(repo.host, challenge, scope, credential)
            elif credential is None:
                return 401, CIMultiDict(), b""
        raise AssertionError("unreachable")  # pragma: no cover

    def _status_error(
        self, repo: Repository, status: int, what: str, credential: Credential | None
    ) -> RegistryError:
        if status in (401, 403):
            return _refused(repo.host, what, status, credential)
        kind = "server" if status >= 500 else "registry"
        return RegistryError(f"registry {repo.host} answered HTTP {status} to {what}", kind)

    # -- API -------------------------------------------------------------------------------------

    async def manifest(
        self,
        repo: Repository,
        reference: str,
        credential: Credential | None,
        accept: tuple[str, ...] = MANIFEST_TYPES,
    ) -> Manifest | None:
        """The manifest a tag or digest names; None when the registry does not have it.

        By digest, the bytes must hash to it. By tag, they must hash to the digest the registry
        announces (Docker-Content-Digest), when it announces one.
        """
        what = (
            f"manifest {repo}:{reference}"
            if ":" not in reference
            else f"manifest {repo}@{reference}"
        )
        by_digest = ":" in reference
        algorithm = check_digest(reference) if by_digest else "sha256"
        status, headers, body = await self._get(
            repo,
            f"manifests/{reference}",
            accept=accept,
            credential=credential,
            limit=self.options.max_manifest_bytes,
            what=what,
        )
        if status == 404:
            return None
        if status != 200:
            raise self._status_error(repo, status, what, credential)
        announced = headers.get("Docker-Content-Digest", "")
        if not by_digest and announced:
            try:
                algorithm = check_digest(announced)
            except RegistryError:
                raise RegistryError(
                    f"registry {repo.host} announced malformed digest {announced!r} for {what}",
                    "integrity",
                ) from None
        digest = compute_digest(algorithm, body)
        expected = reference if by_digest else announced
        if expected and digest != expected:
            raise RegistryError(
                f"registry {repo.host} sent a {what} whose content hashes to {digest}, not "
                f"{expected}: the content was altered",
                "integrity",
            )
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"registry {repo.host}: {what} is not JSON", "integrity") from None
        if not isinstance(doc, dict):
            raise RegistryError(f"registry {repo.host}: {what} is not a JSON object", "integrity")
        media_type = doc.get("mediaType") or headers.get("Content-Type", "").split(";")[0]
        return Manifest(digest, str(media_type), body, doc)

    async def blob(
        self, repo: Repository, digest: str, credential: Credential | None, limit: int | None = None
    ) -> bytes:
        """A blob's bytes, checked against its digest."""
        algorithm = check_digest(digest)
        what = f"blob {repo}@{digest}"
        status, _, body = await self._get(
            repo,
            f"blobs/{digest}",
            credential=credential,
            limit=limit or self.options.max_blob_bytes,
            what=what,
        )
        if status != 200:
            if status == 404:
                raise RegistryError(f"registry {repo.host} does not have {what}", "registry")
            raise self._status_error(repo, status, what, credential)
        actual = compute_digest(algorithm, body)
        if actual != digest:
            raise RegistryError(
                f"registry {repo.host} sent {what} whose content hashes to {actual}: the content "
                "was altered",
                "integrity",
            )
        return body

    async def referrers(
        self, repo: Repository, digest: str, credential: Credential | None, artifact_type: str = ""
    ) -> Mapping[str, Any] | None:
        """The OCI referrers index of `digest`; None if the registry has no referrers API."""
        check_digest(digest)
        what = f"referrers of {repo}@{digest}"
        status, headers, body = await self._get(
            repo,
            f"referrers/{digest}",
            accept=(OCI_INDEX,),
            credential=credential,
            limit=self.options.max_manifest_bytes,
            what=what,
            params={"artifactType": artifact_type} if artifact_type else None,
        )
        content_type = headers.get("Content-Type", "").split(";")[0].strip()
        if status in (400, 404, 405, 501) or (status == 200 and content_type != OCI_INDEX):
            return None
        if status != 200:
            raise self._status_error(repo, status, what, credential)
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"registry {repo.host}: {what} is not JSON", "integrity") from None
        return doc if isinstance(doc, dict) else None
