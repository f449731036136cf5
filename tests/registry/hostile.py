"""A hostile registry on 127.0.0.1 (aiohttp, in its own thread and event loop).

Each repository misbehaves in one way; the tests point the verifier at `<host>/<repo>@<digest>`:

  fail500/x   every request answers HTTP 500
  hang/x      accepts the request and never answers
  drip/x      answers a manifest one byte per second
  huge/x      a manifest whose declared length is 64 MiB
  chunked/x   a manifest streamed without a length, endlessly
  many/x      a classic .sig manifest with thousands of signature layers
  lying/x     serves manifests and blobs whose bytes do not match their digests
  ok/x        a well-behaved signed image (to show the others do not stall it)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable

from aiohttp import web

from tests.registry.lab import OCI_MANIFEST, sha256
from tests.registry.loopback import LoopbackApp

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


class HostileRegistry(LoopbackApp):
    def __init__(self, many: int = 5000) -> None:
        super().__init__()
        self.many = many
        self.digest = sha256(b"the image every hostile repository pretends to serve")
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.requests: dict[str, int] = {}
        self.sign: Callable[[bytes], bytes] | None = None  # set by the test: a trusted signer

    def image(self, repo: str) -> str:
        return f"{self.host}/{repo}@{self.digest}"

    def payload(self, repo: str) -> bytes:
        return json.dumps(
            {
                "critical": {
                    "identity": {"docker-reference": f"{self.host}/{repo}"},
                    "image": {"docker-manifest-digest": self.digest},
                    "type": "cosign container image signature",
                },
                "optional": None,
            }
        ).encode()

    def prepare(self, sign: Callable[[bytes], bytes]) -> None:
        """Signature manifests: `many` with thousands of bogus signatures, `ok` with a good one."""
        tag = self.digest.replace(":", "-") + ".sig"
        config = b"{}"
        self.blobs[sha256(config)] = config
        config_desc = {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config),
            "size": 2,
        }
        for repo, good in (("many/x", False), ("ok/x", True)):
            payload = self.payload(repo)
            self.blobs[sha256(payload)] = payload
            count = 1 if good else self.many
            layers = [
                {
                    "mediaType": SIMPLESIGNING,
                    "digest": sha256(payload),
                    "size": len(payload),
                    "annotations": {
                        SIGNATURE_ANNOTATION: base64.b64encode(
                            sign(payload) if good else os.urandom(70)
                        ).decode()
                    },
                }
                for _ in range(count)
            ]
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config_desc,
                "layers": layers,
            }
            self.manifests[(repo, tag)] = json.dumps(manifest).encode()

    # -- server ---------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._misbehave(request)
        except ConnectionError:  # the verifier hung up on us, as it should
            return web.Response(status=499)

    async def _misbehave(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        if tail == "":
            return web.Response(status=200)
        parts = tail.split("/")
        repo = "/".join(parts[:2])
        kind, reference = parts[2] if len(parts) > 2 else "", "/".join(parts[3:])
        self.requests[repo] = self.requests.get(repo, 0) + 1
        top = parts[0]
        if top == "fail500":
            return web.Response(status=500, text="internal error")
        if top == "hang":
            await asyncio.sleep(3600)
        if top == "drip" and kind == "manifests":
            response = web.StreamResponse(status=200, headers={"Content-Type": OCI_MANIFEST})
            await response.prepare(request)
            for _ in range(3600):
                await response.write(b" ")
                await asyncio.sleep(1)
            return response
        if top == "huge" and kind == "manifests":
            response = web.StreamResponse(status=200, headers={"Content-Type": OCI_MANIFEST})
            response.content_length = 64 * 1024 * 1024
            await response.prepare(request)
            await response.write(b"{" + b" " * 65536)
            return response
        if top == "chunked" and kind == "manifests":
            response = web.StreamResponse(status=200, headers={"Content-Type": OCI_MANIFEST})
            response.enable_chunked_encoding()
            await response.prepare(request)
            chunk = b" " * 65536
            for _ in range(10_000):
                await response.write(chunk)
            return response
        if top == "lying":
            return self._lying(kind, reference)
        if kind == "manifests" and (repo, reference) in self.manifests:
            body = self.manifests[(repo, reference)]
            return web.Response(
                body=body,
                headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256(body)},
            )
        if kind == "blobs" and reference in self.blobs:
            return web.Response(body=self.blobs[reference])
        return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)

    def _lying(self, kind: str, reference: str) -> web.Response:
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
        if kind == "manifests":
            # whatever was asked for, bytes that hash to something else than announced
            announced = reference if reference.startswith("sha256:") else sha256(b"other")
            return web.Response(
                body=body,
                headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": announced},
            )
        return web.Response(body=b"not what you asked for")
