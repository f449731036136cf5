"""A small in-memory OCI distribution registry with the referrers API (OCI distribution 1.1).

Debian's distribution 2.8 predates the referrers API, so cosign stores sigstore bundles under
the `sha256-<hex>` fallback tag there. This registry implements the API, so the tests also cover
bundles stored as real referrers: on a manifest PUT with a `subject` it answers `OCI-Subject`,
which tells cosign (go-containerregistry) not to write the fallback tag. skopeo and cosign push
to it like to any registry. Plain HTTP on 127.0.0.1, in its own thread and event loop.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from aiohttp import web

from tests.registry.loopback import LoopbackApp

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ReferrersRegistry(LoopbackApp):
    tls = False
    auth = None
    ca = None

    client_max_size = 64 * 1024 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}  # digest -> (media type, body)
        self.tags: dict[tuple[str, str], str] = {}  # (repo, tag) -> digest
        self.subjects: dict[tuple[str, str], list[str]] = {}  # (repo, subject) -> referrers
        self.uploads: dict[str, bytearray] = {}
        self.referrer_queries = 0

    # -- handlers ---------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
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
