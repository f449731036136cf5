"""A small in-memory OCI distribution registry with the referrers API (OCI distribution 1.1).

Debian's distribution 2.8 predates the referrers API, so cosign stores sigstore bundles under
the `sha256-<hex>` fallback tag there. This registry implements the API, so the tests also cover
bundles stored as real referrers: on a manifest PUT with a `subject` it answers `OCI-Subject`,
which tells cosign (go-containerregistry) not to write the fallback tag. skopeo and cosign push
to it like to any registry. Plain HTTP on 127.0.0.1, in its own thread and event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid
from typing import Any

from aiohttp import web

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ReferrersRegistry:
    tls = False
    auth = None
    ca = None

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}  # digest -> (media type, body)
        self.tags: dict[tuple[str, str], str] = {}  # (repo, tag) -> digest
        self.subjects: dict[tuple[str, str], list[str]] = {}  # (repo, subject) -> referrers
        self.uploads: dict[str, bytearray] = {}
        self.referrer_queries = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- handlers ---------------------------------------------------------------------------------

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"]
        if path == "":
            return web.Response(status=200)
        for marker in ("/blobs/uploads/", "/blobs/", "/manifests/", "/referrers/"):
            repo, sep, rest = path.partition(marker)
            if sep and repo:
                break
        else:
            return web.Response(status=404)
        if marker == "/blobs/uploads/":
            return await self._upload(request, repo, rest)
        if marker == "/blobs/":
            return self._blob(request, rest)
        if marker == "/manifests/":
            return await self._manifest(request, repo, rest)
        return self._referrers(request, repo, rest)

    async def _upload(self, request: web.Request, repo: str, upload: str) -> web.Response:
        if request.method == "POST":
            body = await request.read()
            digest = request.query.get("digest")
            if digest:
                if _digest(body) != digest:
                    return web.Response(status=400)
                self.blobs[digest] = body
                return web.Response(status=201, headers={"Location": f"/v2/{repo}/blobs/{digest}"})
            upload_id = uuid.uuid4().hex
            self.uploads[upload_id] = bytearray()
            return web.Response(
                status=202,
                headers={"Location": f"/v2/{repo}/blobs/uploads/{upload_id}", "Range": "0-0"},
            )
        data = self.uploads.get(upload)
        if data is None:
            return web.Response(status=404)
        data.extend(await request.read())
        if request.method == "PATCH":
            return web.Response(
                status=202,
                headers={
                    "Location": f"/v2/{repo}/blobs/uploads/{upload}",
                    "Range": f"0-{max(0, len(data) - 1)}",
                },
            )
        digest = request.query.get("digest", "")
        if _digest(bytes(data)) != digest:
            return web.Response(status=400)
        self.blobs[digest] = bytes(self.uploads.pop(upload))
        return web.Response(status=201, headers={"Location": f"/v2/{repo}/blobs/{digest}"})

    def _blob(self, request: web.Request, digest: str) -> web.Response:
        data = self.blobs.get(digest)
        if data is None:
            return web.Response(status=404)
        headers = {"Docker-Content-Digest": digest, "Content-Length": str(len(data))}
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        return web.Response(body=data, headers={"Docker-Content-Digest": digest})

    async def _manifest(self, request: web.Request, repo: str, reference: str) -> web.Response:
        if request.method == "PUT":
            body = await request.read()
            digest = _digest(body)
            doc = json.loads(body)
            media_type = request.headers.get("Content-Type", doc.get("mediaType", ""))
            self.manifests[digest] = (media_type, body)
            if not reference.startswith("sha256:"):
                self.tags[(repo, reference)] = digest
            headers = {
                "Location": f"/v2/{repo}/manifests/{digest}",
                "Docker-Content-Digest": digest,
            }
            subject = (doc.get("subject") or {}).get("digest")
            if subject:
                referrers = self.subjects.setdefault((repo, subject), [])
                if digest not in referrers:
                    referrers.append(digest)
                headers["OCI-Subject"] = subject
            return web.Response(status=201, headers=headers)
        digest = reference if reference.startswith("sha256:") else self.tags.get((repo, reference))
        found = self.manifests.get(digest or "")
        if found is None:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        media_type, body = found
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest or ""}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return web.Response(status=200, headers=headers)
        return web.Response(body=body, headers=headers)

    def _referrers(self, request: web.Request, repo: str, subject: str) -> web.Response:
        self.referrer_queries += 1
        wanted = request.query.get("artifactType")
        manifests: list[dict[str, Any]] = []
        for digest in self.subjects.get((repo, subject), []):
            media_type, body = self.manifests[digest]
            doc = json.loads(body)
            artifact_type = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
            if wanted and artifact_type != wanted:
                continue
            descriptor: dict[str, Any] = {
                "mediaType": media_type,
                "digest": digest,
                "size": len(body),
                "artifactType": artifact_type,
            }
            if doc.get("annotations"):
                descriptor["annotations"] = doc["annotations"]
            manifests.append(descriptor)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        headers = {"OCI-Filters-Applied": "artifactType"} if wanted else {}
        return web.Response(
            body=json.dumps(index).encode(), content_type=OCI_INDEX, headers=headers
        )

    # -- lifecycle --------------------------------------------------------------------------------

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/v2/{tail:.*}", self._route)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        self._runner = runner
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        loop.run_forever()
        loop.close()

    def start(self) -> ReferrersRegistry:
        self.thread.start()
        self._started.wait(10)
        return self

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self.thread.join(10)
