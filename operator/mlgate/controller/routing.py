"""Route the kinds WorkloadKinds declare to the webhook: the rules of `extensions.mlgate.io`.

The chart (or `--register-webhook-url`) owns the webhook configuration; mlgate changes only that
one entry's rules, by a JSON patch that first tests the entry's name, so it never touches the
chart's entries and a reordered list makes the patch fail instead of hitting another entry.
Until a new kind is routed its objects are not seen at admission; the background audit judges
them afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mlgate.cluster.client import JSON_PATCH, ApiError, KubeClient, resource_path
from mlgate.controller.state import PolicyState
from mlgate.webhook.config import EXTENSIONS_WEBHOOK, extension_rules

log = logging.getLogger("mlgate.routing")
WEBHOOK_API = "admissionregistration.k8s.io/v1"


def rules_patch(config: dict[str, Any], rules: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The JSON patch that gives the extensions entry `rules`: [] when it has them already,
    None when the configuration has no such entry (a chart older than WorkloadKinds)."""
    for i, hook in enumerate(config.get("webhooks") or []):
        if isinstance(hook, dict) and hook.get("name") == EXTENSIONS_WEBHOOK:
            if (hook.get("rules") or []) == rules:
                return []
            return [
                {"op": "test", "path": f"/webhooks/{i}/name", "value": EXTENSIONS_WEBHOOK},
                {"op": "replace", "path": f"/webhooks/{i}/rules", "value": rules},
            ]
    return None


async def sync_rules(client: KubeClient, names: Sequence[str], rules: list[dict[str, Any]]) -> bool:
    """Put `rules` on the extensions entry of each named configuration; True when all agree."""
    in_step = True
    for name in names:
        path = resource_path(WEBHOOK_API, "validatingwebhookconfigurations", name=name)
        try:
            config = await client.get_or_none(path)
            if config is None:
                log.info("ValidatingWebhookConfiguration %s not found yet; will retry", name)
                in_step = False
                continue
            patch = rules_patch(config, rules)
            if patch is None:
                log.warning(
                    "ValidatingWebhookConfiguration %s has no webhook %s: kinds declared by "
                    "WorkloadKinds are not routed to mlgate (upgrade the chart)",
                    name,
                    EXTENSIONS_WEBHOOK,
                )
                in_step = False
            elif patch:
                await client.patch(path, patch, content_type=JSON_PATCH)
                log.info("routing %d rule(s) of declared kinds through %s", len(rules), name)
        except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("cannot route declared kinds through %s: %s", name, exc)
            in_step = False
    return in_step


@dataclass
class KindRouter:
    """Keeps the extensions entry in step with the state's declared kinds: at once when they
    change, and every `interval` seconds in case something else reset it (a chart upgrade)."""

    client: KubeClient
    state: PolicyState
    names: Sequence[str]
    leads: Callable[[], bool]
    interval: float = 300.0
    retry_interval: float = 10.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.state.on_kinds_changed = self.changed.set

    async def run(self, after: asyncio.Event) -> None:
        await after.wait()
        while True:
            self.changed.clear()
            in_step = True
            if self.leads():
                rules = extension_rules(self.state.snapshot().kinds)
                in_step = await sync_rules(self.client, self.names, rules)
            try:
                wait = self.interval if in_step else self.retry_interval
                await asyncio.wait_for(self.changed.wait(), wait)
            except TimeoutError:
                pass
