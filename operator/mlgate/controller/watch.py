"""A lean list+watch of one resource, for the watches every stored workload flows through.

kopf spends about 2 ms of CPU on each event it delivers (a worker task per object, sync handlers
run in a thread pool, per-object loggers), on the event loop that also answers admissions: with
kopf watching Deployments, a real create cost mlgate twice what judging it does (measured with
bench/watch_cost.py). The watches that only feed the GPU ledger need none of that machinery,
and the owner links need only metadata: those kinds are watched here, as PartialObjectMetadata
where `metadata_only` (the apiserver then sends neither spec nor status).

Semantics are the informer's: list, then watch from the list's resourceVersion with bookmarks;
the server closing the stream resumes from the last version seen; 410 Gone relists, and objects
missing from the new listing are delivered as DELETED (a deletion missed while disconnected is
never lost). Connection errors are logged and retried with a back-off that resets once a watch
is established; a kind the cluster does not serve (or mlgate may not list) is retried every
UNSERVED_RETRY seconds, so a CRD installed later is watched from then on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from mlgate import jsonbound
from mlgate.cluster.client import ApiError, KubeClient, api_error, resource_path

log = logging.getLogger("mlgate.watch")
Handler = Callable[[str, dict[str, Any]], None]  # event type, object (apiVersion and kind set)
ObjectKey = tuple[str, str]  # namespace, name

_PARTIAL = "application/json;as=PartialObjectMetadata{};g=meta.k8s.io;v=v1,application/json"
PARTIAL_LIST = _PARTIAL.format("List")
PARTIAL_OBJECT = _PARTIAL.format("")
PAGE = "500"
SERVER_TIMEOUT = 300  # seconds the apiserver keeps one watch request open
UNSERVED_RETRY = 60.0
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 30.0


class Gone(Exception):
    """The version to resume from is too old (410): list again."""


def _key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


@dataclass
class ListWatch:
    client: KubeClient
    api_version: str
    kind: str
    plural: str
    handle: Handler
    metadata_only: bool = True
    # Set once the first listing is delivered, or found the kind not served (nothing to wait for)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    _version: str | None = None  # where the next watch resumes; None: list first
    _known: dict[ObjectKey, str] = field(default_factory=dict)  # the uid last seen

    @property
    def path(self) -> str:
        return resource_path(self.api_version, self.plural)

    async def run(self) -> None:
        """List and watch until cancelled; an error from a handler is raised (to `supervise`)."""
        backoff = FIRST_BACKOFF
        while True:
            try:
                if self._version is None and not await self._list():
                    await asyncio.sleep(UNSERVED_RETRY)
                    continue
                backoff = await self._watch(backoff)
            except Gone:
                self._version = None
            except (aiohttp.ClientError, TimeoutError, ApiError) as exc:
                log.warning("watch of %s failed (%r); retrying in %gs", self.plural, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _deliver(self, type: str, obj: dict[str, Any]) -> None:
        obj["apiVersion"], obj["kind"] = self.api_version, self.kind
        key = _key(obj)
        if type == "DELETED":
            self._known.pop(key, None)
        else:
            self._known[key] = str((obj.get("metadata") or {}).get("uid") or "")
        self.handle(type, obj)

    async def _list(self) -> bool:
        """Every object, as one consistent listing; False when the kind cannot be listed."""
        accept = PARTIAL_LIST if self.metadata_only else None
        items: list[dict[str, Any]] = []
        query = {"limit": PAGE}
        try:
            while True:
                page = await self.client.request("GET", self.path, params=query, accept=accept)
                items += page.get("items") or []
                meta = page.get("metadata") or {}
                if not meta.get("continue"):
                    break
                query["continue"] = meta["continue"]
        except ApiError as exc:
            if exc.status not in {403, 404}:
                raise
            if exc.status == 403:
                log.warning("cannot list %s: %s", self.plural, exc)
            self.synced.set()
            return False
        listed = {_key(i): str((i.get("metadata") or {}).get("uid") or "") for i in items}
        # Gone while not watched, or replaced by an object of the same name (another uid).
        for (namespace, name), uid in sorted(self._known.items()):
            if listed.get((namespace, name)) != uid:
                gone = {"namespace": namespace, "name": name, "uid": uid}
                self._deliver("DELETED", {"metadata": gone})
        for item in items:
            self._deliver("ADDED", item)
        self._version = str(meta.get("resourceVersion") or "")
        self.synced.set()
        return True

    async def _watch(self, backoff: float) -> float:
        """One watch request, until the server ends it; the back-off to use from now on."""
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self._version or "",
            "timeoutSeconds": str(SERVER_TIMEOUT),
        }
        accept = PARTIAL_OBJECT if self.metadata_only else None
        async with self.client.stream(self.path, params, SERVER_TIMEOUT + 30, accept) as response:
            if response.status == 410:
                raise Gone
            if response.status >= 400:
                raise api_error(response.status, str(response.reason or ""), await response.read())
            backoff = FIRST_BACKOFF
            pending = b""
            async for chunk in response.content.iter_any():
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        self._event(self._decode(line))
        return backoff

    def _decode(self, line: bytes) -> Any:
        """One event. Metadata is read field by field and never kept, never walked: plain orjson
        (a quarter of jsonbound's cost, which walks the document for depth). Whole objects, or
        a line orjson refuses (nested beyond its limit), go through jsonbound."""
        if self.metadata_only:
            try:
                return orjson.loads(line)
            except orjson.JSONDecodeError:
                pass
        return jsonbound.loads(line)

    def _event(self, event: dict[str, Any]) -> None:
        type, obj = str(event.get("type")), event.get("object") or {}
        if type == "ERROR":
            if obj.get("code") == 410:
                raise Gone
            raise ApiError(int(obj.get("code") or 500), str(obj.get("reason")), str(obj))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:  # before the handler: an event it fails on is logged once, not retried
            self._version = str(version)
        if type in {"ADDED", "MODIFIED", "DELETED"}:
            self._deliver(type, obj)
