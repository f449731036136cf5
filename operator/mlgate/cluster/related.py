"""The llm rules' facts from the cluster: the related objects (engine.related) of a namespace.

Read live when a policy with llm rules governs the namespace, every kind at once. A kind the
cluster does not serve (404) has no objects; any other error propagates, so the webhook denies
with the reason rather than judging without the facts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.engine.related import RELATED, RelatedKind


async def _list_kind(client: KubeClient, kind: RelatedKind, namespace: str) -> list[Any]:
    for version in kind.versions:
        api_version = f"{kind.group}/{version}" if kind.group else version
        path = resource_path(api_version, kind.plural, namespace if kind.namespaced else None)
        try:
            items = await client.list(path)
        except ApiError as exc:
            if exc.status == 404:
                continue
            raise
        # List items carry no apiVersion or kind; the engine reads both.
        return [{**item, "apiVersion": api_version, "kind": kind.kind} for item in items]
    return []


async def related_objects(
    client: KubeClient, namespace: str, extra: tuple[RelatedKind, ...] = ()
) -> tuple[Mapping[str, Any], ...]:
    kinds = (*RELATED, *extra)
    found = await asyncio.gather(*(_list_kind(client, k, namespace) for k in kinds))
    return tuple(obj for items in found for obj in items)
