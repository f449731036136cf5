"""A small async Kubernetes API client: the only code that talks to the apiserver directly.

Credentials come from kopf's own login functions (kubeconfig or in-cluster service account), so
the operator and this client always act as the same identity.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import aiohttp
import kopf

from mlgate import jsonbound

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class ApiError(Exception):
    """The apiserver answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def _excerpt(payload: bytes) -> str:
    return payload[:300].decode(errors="replace").strip()


def api_error(status: int, reason: str, payload: bytes) -> ApiError:
    """The error an answer >= 400 stands for, whatever its body.

    The apiserver sends a JSON Status, but not always: a group it does not serve gets a plain
    text 404, and proxies in front of it answer in HTML. Any body is an API error, never a
    decode error that would look like a bug to the caller.
    """
    try:
        document = json.loads(payload) if payload else {}
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return ApiError(status, reason, _excerpt(payload) or reason)
    return ApiError(
        status,
        str(document.get("reason") or reason),
        str(document.get("message") or _excerpt(payload) or reason),
    )


def _materialise(data: str | bytes, directory: Path, name: str) -> str:
    """kubeconfig inlines certificates as base64; ssl wants files."""
    raw = base64.b64decode(data) if isinstance(data, str) else data
    path = directory / name
    path.write_bytes(raw)
    path.chmod(0o600)
    return str(path)


def _ssl_context(info: kopf.ConnectionInfo, scratch: Path) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context()
    if info.ca_path:
        context.load_verify_locations(cafile=str(info.ca_path))
    elif info.ca_data:
        context.load_verify_locations(cafile=_materialise(info.ca_data, scratch, "ca.crt"))
    cert = info.certificate_path or (
        _materialise(info.certificate_data, scratch, "tls.crt") if info.certificate_data else None
    )
    key = info.private_key_path or (
        _materialise(info.private_key_data, scratch, "tls.key") if info.private_key_data else None
    )
    if cert and key:
        context.load_cert_chain(str(cert), str(key))
    return context


def login() -> kopf.ConnectionInfo:
    """In-cluster service account first, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )
    if info is None:
        raise kopf.LoginError("no in-cluster service account and no kubeconfig found")
    return info


class KubeClient:
    """Typed-enough access to the Kubernetes REST API over one aiohttp session."""

    def __init__(self, info: kopf.ConnectionInfo, timeout: float = 10.0) -> None:
        self._info = info
        self._scratch = tempfile.TemporaryDirectory(prefix="mlgate-kube-")
        self._ssl = _ssl_context(info, Path(self._scratch.name))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connect_timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._streams: aiohttp.ClientSession | None = None
        self.server = info.server.rstrip("/")

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            headers=self._info.as_http_headers(),
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
            timeout=self._timeout,
        )
        # Watches hold their connection for minutes: on a pool of their own (one connection per
        # watched kind), never starving requests of the shared pool.
        self._streams = aiohttp.ClientSession(
            headers=self._info.as_http_headers(),
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        for session in (self._session, self._streams):
            if session is not None:
                await session.close()
        self._session = self._streams = None
        self._scratch.cleanup()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("KubeClient used outside `async with`")
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        accept: str | None = None,
    ) -> JSON:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        if accept is not None:
            headers["Accept"] = accept
        async with self.session.request(
            method, self.server + path, data=data, headers=headers, params=params
        ) as response:
            payload = await response.read()
            if response.status >= 400:
                raise api_error(response.status, str(response.reason or ""), payload)
            try:
                # Any depth a custom resource may have: one such object must not break a listing.
                document = jsonbound.loads(payload) if payload else {}
            except ValueError as exc:
                raise ApiError(
                    response.status, "InvalidResponse", f"not JSON: {_excerpt(payload)}"
                ) from exc
            if not isinstance(document, dict):
                raise ApiError(response.status, "InvalidResponse", "not a JSON object")
            return document

    def stream(
        self, path: str, params: Mapping[str, str], read_timeout: float, accept: str | None = None
    ) -> aiohttp.client._RequestContextManager:
        """A long-lived GET (a watch), on the streams' own connection pool."""
        if self._streams is None:
            raise RuntimeError("KubeClient used outside `async with`")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._connect_timeout, sock_read=read_timeout
        )
        headers = {"Accept": accept} if accept is not None else {}
        return self._streams.get(
            self.server + path, params=params, headers=headers, timeout=timeout
        )

    async def get(self, path: str) -> JSON:
        return await self.request("GET", path)

    async def get_or_none(self, path: str) -> JSON | None:
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, path: str, params: Mapping[str, str] | None = None) -> list[JSON]:
        """All items of a collection, following `continue` tokens."""
        items: list[JSON] = []
        query = dict(params or {}, limit="500")
        while True:
            page = await self.request("GET", path, params=query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            query["continue"] = token

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request("POST", path, body)

    async def replace(self, path: str, body: JSON) -> JSON:
        return await self.request("PUT", path, body)

    async def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> JSON:
        return await self.request("PATCH", path, body, content_type=content_type)

    async def apply(self, path: str, body: JSON, manager: str = "mlgate") -> JSON:
        """Server-side apply, forcing ownership of the fields mlgate manages."""
        return await self.request(
            "PATCH",
            path,
            body,
            content_type=APPLY_PATCH,
            params={"fieldManager": manager, "force": "true"},
        )

    async def delete(self, path: str) -> JSON:
        return await self.request("DELETE", path)


def resource_path(
    api_version: str, plural: str, namespace: str | None = None, name: str | None = None
) -> str:
    """REST path of a collection or object: /api/v1/... for core, /apis/<group>/... otherwise."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    obj = f"/{name}" if name else ""
    return f"{prefix}{ns}/{plural}{obj}"
