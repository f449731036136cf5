"""The operator's watch cache of runtimes and configs (ServingRuntime, TrainingRuntime, ...).

The webhook resolves the runtime a workload names from `catalog()` without a request to the
apiserver; the audit reads the same catalog and is woken when a runtime changes, so workloads
that use it are judged again with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.engine.runtimes import CATALOG_KINDS, Key, RuntimeCatalog, catalog_key
from mlgate.engine.workloads import SUPPORTED

log = logging.getLogger("mlgate.runtimes")

# (group, version, plural, kind) of every runtime and config kind
_RESOURCES = tuple(
    (s.group, s.versions[-1], s.plural, s.kind) for s in SUPPORTED if s.kind in CATALOG_KINDS
)


@dataclass
class RuntimeCache:
    _objects: dict[Key, Mapping[str, Any]] = field(default_factory=dict)
    _catalog: RuntimeCatalog = field(default_factory=RuntimeCatalog)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def catalog(self) -> RuntimeCatalog:
        return self._catalog

    def apply(self, event: str, body: Mapping[str, Any]) -> None:
        key = catalog_key(body)
        if key is None:
            return
        if event == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = body
        self._catalog = RuntimeCatalog.of(self._objects.values())
        self.changed.set()

    async def sync(self, client: KubeClient) -> None:
        """Fill the cache before the webhook answers; kinds whose CRD is not served are empty."""
        for group, version, plural, kind in _RESOURCES:
            api_version = f"{group}/{version}"
            try:
                items = await client.list(resource_path(api_version, plural))
            except ApiError as exc:
                # Not served (404) or not readable (403): workloads naming such a runtime are
                # then refused as unresolved, never judged without it.
                if exc.status in (403, 404):
                    if exc.status == 403:
                        log.warning("cannot list %s: %s", plural, exc)
                    continue
                raise
            for item in items:
                self.apply("ADDED", {"apiVersion": api_version, "kind": kind, **item})
        log.info("runtime catalog: %d runtimes and configs", len(self._objects))

    def _handler(self, api_version: str, kind: str) -> Callable[..., None]:
        def on_event(type: str, body: kopf.Body, **_: Any) -> None:
            self.apply(type, {"apiVersion": api_version, "kind": kind, **body})

        return on_event

    def register(self, registry: kopf.OperatorRegistry) -> None:
        for group, version, plural, kind in _RESOURCES:
            handler = self._handler(f"{group}/{version}", kind)
            kopf.on.event(group, version, plural, registry=registry, id=f"runtime-{plural}")(
                handler
            )
