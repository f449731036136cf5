"""The lean list+watch (controller/watch.py) against a fake apiserver: metadata-only requests,
paging, bookmarks, 410 Gone relisting (deletions missed meanwhile delivered), unserved kinds."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import kopf
import pytest
from aiohttp import web

from mlgate.cluster.client import KubeClient
from mlgate.controller import watch
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.handlers import gpu_watches
from mlgate.controller.watch import PARTIAL_LIST, PARTIAL_OBJECT, ListWatch
from mlgate.engine.workloads import SUPPORTED

PATH = "/apis/apps/v1/replicasets"


def meta(uid: str, version: str, owner: str | None = None) -> dict[str, Any]:
    """A PartialObjectMetadata as the apiserver sends it (its own apiVersion and kind); the
    object's name is its uid up to a colon."""
    refs = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": owner, "controller": True}]
    return {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": {
            "name": uid.partition(":")[0],
            "uid": uid,
            "namespace": "ml",
            "resourceVersion": version,
            **({"ownerReferences": refs} if owner else {}),
        },
    }


class FakeApiserver:
    """Lists (two pages) then watches; the first watch ends in 410 Gone, the second idles."""

    def __init__(self) -> None:
        # While disconnected: a is deleted, c replaced by another object of that name.
        self.listings = [["a", "b", "c"], ["b", "c:2", "d"]]
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append((request.headers.get("Accept", ""), query))
        if query.get("watch") != "true":
            names = self.listings[0]
            if "continue" in query and len(self.listings) > 1:
                self.listings.pop(0)  # the next listing finds the cluster changed
            page = names[:2] if "continue" not in query else names[2:]
            rest = {"continue": "more"} if "continue" not in query else {}
            return web.json_response(
                {
                    "metadata": {"resourceVersion": "10", **rest},
                    "items": [meta(n, "10", owner="web") for n in page],
                }
            )
        response = web.StreamResponse()
        await response.prepare(request)
        if len([q for _, q in self.requests if q.get("watch")]) == 1:
            events = [
                {"type": "ADDED", "object": meta("e", "11", owner="web")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Gone"}},
            ]
            # One event split across chunks: lines are framed by newlines, not by reads.
            data = "".join(json.dumps(e) + "\n" for e in events).encode()
            await response.write(data[:25])
            await response.write(data[25:])
            return response
        await asyncio.sleep(0.5)  # an idle watch the server ends: resumed from its version
        return response


@contextlib.asynccontextmanager
async def apiserver() -> AsyncIterator[tuple[FakeApiserver, KubeClient]]:
    fake = FakeApiserver()
    app = web.Application()
    app.router.add_get(PATH, fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    info = kopf.ConnectionInfo(server=f"http://127.0.0.1:{runner.addresses[0][1]}", insecure=True)
    try:
        async with KubeClient(info) as client:
            yield fake, client
    finally:
        await runner.cleanup()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - a plain condition, no event to wait on
            await asyncio.sleep(0.01)


async def test_lists_watches_and_relists_after_gone() -> None:
    async with apiserver() as (fake, client):
        await _lists_watches_and_relists(fake, client)


async def _lists_watches_and_relists(fake: FakeApiserver, client: KubeClient) -> None:
    seen: list[tuple[str, str, str, str]] = []

    def handle(type: str, obj: dict[str, Any]) -> None:
        seen.append((type, obj["apiVersion"], obj["kind"], obj["metadata"]["uid"]))

    lister = ListWatch(client, "apps/v1", "ReplicaSet", "replicasets", handle)
    task = asyncio.create_task(lister.run())
    try:
        await until(lambda: ("ADDED", "apps/v1", "ReplicaSet", "d") in seen)
        await until(lambda: len(fake.requests) >= 6)  # watching again after the relist
    finally:
        task.cancel()
    assert lister.synced.is_set()
    names = [(t, n) for t, _, _, n in seen]
    assert names == [
        *[("ADDED", n) for n in "abc"],
        ("ADDED", "e"),
        # The relist after 410: a and e are gone, c is another object now, b is still there.
        ("DELETED", "a"),
        ("DELETED", "c"),
        ("DELETED", "e"),
        *[("ADDED", n) for n in ("b", "c:2", "d")],
    ]
    accepts = [(accept, q.get("watch"), q.get("resourceVersion")) for accept, q in fake.requests]
    assert accepts[:6] == [
        (PARTIAL_LIST, None, None),
        (PARTIAL_LIST, None, None),  # the second page
        (PARTIAL_OBJECT, "true", "10"),  # from the listing's version
        (PARTIAL_LIST, None, None),  # 410: list again
        (PARTIAL_LIST, None, None),
        (PARTIAL_OBJECT, "true", "10"),  # from the new listing's version
    ]
    assert all(q.get("allowWatchBookmarks") == "true" for _, q in fake.requests if q.get("watch"))


async def test_an_unserved_kind_is_synced_empty_and_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watch, "UNSERVED_RETRY", 0.01)
    async with apiserver() as (_, client):
        await _unserved(client)


async def _unserved(client: KubeClient) -> None:
    calls: list[str] = []
    lister = ListWatch(client, "kubeflow.org/v1", "PyTorchJob", "pytorchjobs", lambda *_: None)
    lister.client.request = _counting(client.request, calls)  # type: ignore[method-assign]
    task = asyncio.create_task(lister.run())
    try:
        await until(lambda: len(calls) >= 2)
    finally:
        task.cancel()
    assert lister.synced.is_set()


def _counting(request: Any, calls: list[str]) -> Any:
    async def counted(method: str, path: str, **kwargs: Any) -> Any:
        calls.append(path)
        return await request(method, path, **kwargs)

    return counted


async def test_the_gpu_ledger_learns_owner_links_from_metadata_only() -> None:
    async with apiserver() as (_, client):
        await _owner_links(client)


async def _owner_links(client: KubeClient) -> None:
    ledger, deleted = GpuLedger(), []
    (replicasets,) = [
        w
        for w in gpu_watches(client, ledger, lambda ns, key: deleted.append((ns, key)))
        if w.plural == "replicasets"
    ]
    assert replicasets.metadata_only
    task = asyncio.create_task(replicasets.run())
    try:
        await until(lambda: ledger.known("ml", ("apps", "ReplicaSet", "d")))
    finally:
        task.cancel()
    assert ledger.owner("ml", ("apps", "ReplicaSet", "b")) == ("apps", "Deployment", "web")
    assert not ledger.known("ml", ("apps", "ReplicaSet", "a"))
    assert ("ml", ("apps", "ReplicaSet", "a")) in deleted  # its reservation goes at once


def test_gpu_watches_cover_each_kind_that_runs_pods_once() -> None:
    watches = gpu_watches(cast(KubeClient, None), GpuLedger(), lambda *_: None)
    assert [w.plural for w in watches] == [s.plural for s in SUPPORTED if s.runs_pods]
    assert "servingruntimes" not in {w.plural for w in watches}  # kopf's runtime cache has them
    # Pods in full (their resources and phase), everything else as metadata only.
    assert [w.plural for w in watches if not w.metadata_only] == ["pods"]


class ListingClient:
    """Only listings, of whatever `items` holds at the time."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        return {"metadata": {"resourceVersion": "1"}, "items": copy.deepcopy(self.items)}


async def test_a_gpu_pod_deleted_while_not_watched_leaves_the_ledger_on_the_relist() -> None:
    client, ledger, deleted = ListingClient(), GpuLedger(), []
    watches = gpu_watches(cast(KubeClient, client), ledger, lambda *key: deleted.append(key))
    (pods,) = [w for w in watches if w.plural == "pods"]
    resources = {"limits": {"nvidia.com/gpu": "2"}}
    container = {"name": "train", "image": "trainer", "resources": resources}
    client.items = [
        {
            "metadata": {"name": "train", "namespace": "ml", "uid": "u1"},
            "spec": {"containers": [container]},
            "status": {"phase": "Running"},
        }
    ]
    await pods._list()
    assert [p.amounts for p in ledger.pods("ml")] == [{"nvidia.com/gpu": 2}]
    client.items = []
    await pods._list()  # after 410 Gone: the deletion was never seen as an event
    assert ledger.pods("ml") == []
    assert deleted == [("ml", ("", "Pod", "train"))]


def test_an_event_nested_beyond_orjsons_limit_still_decodes() -> None:
    """managedFields mirror the object's nesting: a custom resource 2000 levels deep."""
    deep = "[" * 2000 + "]" * 2000
    line = f'{{"type": "MODIFIED", "object": {{"metadata": {{"name": "x"}}, "f": {deep}}}}}'
    for metadata_only in (True, False):
        lister = ListWatch(cast(KubeClient, None), "v1", "Pod", "pods", print, metadata_only)
        assert lister._decode(line.encode())["object"]["metadata"] == {"name": "x"}
