"""Route requests to the webhook as the policies in force need them.

- `extensions.mlgate.io` (validating) gets the rules of the kinds WorkloadKinds declare. Until a
  new kind is routed its objects are not seen at admission; the background audit judges them
  afterwards.
- `images.mlgate.io` (mutating) gets the workload rules only while a policy in force pins image
  tags or inserts model verifiers (webhook.admission.mutates), and none otherwise: then every
  mutating call would answer "not mutated", and each one is a second TLS round trip and JSON
  encoding of the object per create. Skipping it can never admit what a policy forbids: the
  validating webhook denies what mutation should have done (engine.pinning.unpinned,
  engine.modelverify.unverified), so while a policy that newly needs mutation is routed (the
  moment between its watch event and the apiserver seeing the patched configuration) such
  workloads are denied, never admitted unpinned. A chart upgrade that restores the rules only
  costs the round trip again until the next sync.

The chart (or `--register-webhook-url`) owns the webhook configurations; mlgate changes only
those two entries' rules, by a JSON patch that first tests the entry's name, so it never touches
the chart's other entries and a reordered list makes the patch fail instead of hitting another
entry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mlgate.cluster.client import JSON_PATCH, ApiError, KubeClient, resource_path
from mlgate.controller.state import PolicyState, Snapshot
from mlgate.webhook.admission import mutates
from mlgate.webhook.config import (
    EXTENSIONS_WEBHOOK,
    IMAGES_MUTATING_WEBHOOK,
    extension_rules,
    workload_rules,
)

log = logging.getLogger("mlgate.routing")
WEBHOOK_API = "admissionregistration.k8s.io/v1"
VALIDATING = "validatingwebhookconfigurations"
MUTATING = "mutatingwebhookconfigurations"

Rules = list[dict[str, Any]]


def rules_patch(
    config: dict[str, Any], rules: Rules, hook: str = EXTENSIONS_WEBHOOK
) -> list[dict[str, Any]] | None:
    """The JSON patch that gives the entry `hook` `rules`: [] when it has them already, None
    when the configuration has no such entry (a chart older than that entry)."""
    for i, entry in enumerate(config.get("webhooks") or []):
        if isinstance(entry, dict) and entry.get("name") == hook:
            if (entry.get("rules") or []) == rules:
                return []
            return [
                {"op": "test", "path": f"/webhooks/{i}/name", "value": hook},
                {"op": "replace", "path": f"/webhooks/{i}/rules", "value": rules},
            ]
    return None


async def sync_rules(
    client: KubeClient,
    names: Sequence[str],
    rules: Rules,
    hook: str = EXTENSIONS_WEBHOOK,
    plural: str = VALIDATING,
) -> bool:
    """Put `rules` on the entry `hook` of each named configuration; True when all agree."""
    in_step = True
    for name in names:
        path = resource_path(WEBHOOK_API, plural, name=name)
        try:
            config = await client.get_or_none(path)
            if config is None:
                log.info("%s %s not found yet; will retry", plural, name)
                in_step = False
                continue
            patch = rules_patch(config, rules, hook)
            if patch is None:
                log.warning(
                    "%s %s has no webhook %s: its requests are not routed as the policies "
                    "need (upgrade the chart)",
                    plural,
                    name,
                    hook,
                )
                in_step = False
            elif patch:
                await client.patch(path, patch, content_type=JSON_PATCH)
                log.info("routing %d rule(s) through %s of %s", len(rules), hook, name)
        except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("cannot route requests through %s of %s: %s", hook, name, exc)
            in_step = False
    return in_step


def mutating_rules(snapshot: Snapshot) -> Rules:
    """The mutating entry's rules: every workload while a policy in force mutates, else none."""
    return workload_rules() if mutates(snapshot.policies) else []


@dataclass
class KindRouter:
    """Keeps both entries in step with the state: at once when declared kinds or policies
    change, and every `interval` seconds in case something else reset them (a chart upgrade).
    `mutating_names` are the MutatingWebhookConfigurations (none: mutation is not routed)."""

    client: KubeClient
    state: PolicyState
    names: Sequence[str]
    leads: Callable[[], bool]
    mutating_names: Sequence[str] = ()
    interval: float = 300.0
    retry_interval: float = 10.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # What the last sync put in place (None: nothing yet, or it failed): sync() skips the
    # apiserver when nothing changed since.
    _synced: tuple[Rules, Rules] | None = None
    _started: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.state.on_routing_changed = self.changed.set

    async def sync(self, *, recheck: bool = False) -> bool:
        """Route as the state needs, if this replica leads and the webhook serves (before, a
        routed request could only be refused). Without `recheck`, only what changed since the
        last sync is written, so policy handlers can call it on every event."""
        if not (self._started and self.leads()):
            return True
        async with self._lock:
            snapshot = self.state.snapshot()
            wanted = (extension_rules(snapshot.kinds), mutating_rules(snapshot))
            if wanted == self._synced and not recheck:
                return True
            self._synced = None
            in_step = await sync_rules(self.client, self.names, wanted[0])
            if self.mutating_names:
                in_step &= await sync_rules(
                    self.client, self.mutating_names, wanted[1], IMAGES_MUTATING_WEBHOOK, MUTATING
                )
            self._synced = wanted if in_step else None
            return in_step

    async def run(self, after: asyncio.Event) -> None:
        await after.wait()
        self._started = True
        while True:
            self.changed.clear()
            in_step = await self.sync(recheck=True)
            try:
                wait = self.interval if in_step else self.retry_interval
                await asyncio.wait_for(self.changed.wait(), wait)
            except TimeoutError:
                pass
