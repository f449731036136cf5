"""kopf decodes with mlgate.jsonbound, so no object's nesting can stop the operator.

kopf reads listings (aiohttp's `response.json()`) and watch events (`json.loads`) with the
stdlib decoder, which raises RecursionError about a thousand levels down. The apiserver stores
custom resources nested up to 10000 levels (fields that preserve unknown content), so one such
object, from any tenant allowed to create an ML custom resource, would end kopf's watcher, and
with it `mlgate run`; the restart lists the same object and crashes again. kopf has no hook for
its decoder, so `install()` points both places at the depth-bounded decoder.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from kopf._cogs.clients import api as kopf_api

from mlgate import jsonbound

_response_json = aiohttp.ClientResponse.json


class _BoundedJson:
    """The part of the json module kopf's api client calls."""

    loads = staticmethod(jsonbound.loads)


async def _bounded_response_json(
    self: aiohttp.ClientResponse,
    *,
    encoding: str | None = None,
    loads: Any = jsonbound.loads,
    content_type: str | None = "application/json",
) -> Any:
    return await _response_json(self, encoding=encoding, loads=loads, content_type=content_type)


def install() -> None:
    kopf_api.json = _BoundedJson  # type: ignore[attr-defined,assignment]
    aiohttp.ClientResponse.json = _bounded_response_json  # type: ignore[method-assign]
