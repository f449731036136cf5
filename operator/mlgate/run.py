"""`mlgate run`: the operator and the validating webhook in one process and one event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import kopf
from aiohttp import web

from mlgate.api.models import DEFAULT_GPU_RESOURCES
from mlgate.cluster.client import ApiError, KubeClient, login, resource_path
from mlgate.cluster.events import post_violations
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.handlers import register
from mlgate.controller.state import PolicyState
from mlgate.controller.sync import initial_sync
from mlgate.engine.policy import GpuRules
from mlgate.metrics import Metrics
from mlgate.webhook.admission import Admission, Config
from mlgate.webhook.config import url_client_config, webhook_configuration
from mlgate.webhook.server import Webhook

log = logging.getLogger("mlgate.run")
# Quota accounting counts every extended resource any default policy would count as a GPU.
LEDGER_GPU_RULES = GpuRules(
    resources=tuple(
        re.compile(r.replace(".", r"\.").replace("*", ".*")) for r in DEFAULT_GPU_RESOURCES
    )
)


@dataclass(frozen=True)
class RunOptions:
    namespace: str = "mlgate-system"
    host: str = "0.0.0.0"  # noqa: S104 - the webhook must be reachable by the apiserver
    port: int = 8443
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    webhook_config_name: str = "mlgate"
    register_webhook_url: str | None = None
    failure_policy: str = "Fail"
    timeout_seconds: int = 10
    scope_admin_groups: frozenset[str] = frozenset({"system:masters"})
    peering: str | None = None
    gpu_reservation_ttl: float = 600.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def deadline(self) -> float:
        """Answer before the apiserver gives up, leaving room for the network round trip."""
        return max(1.0, self.timeout_seconds - 1.5)


def _settings(opts: RunOptions) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.peering.standalone = opts.peering is None
    if opts.peering is not None:
        settings.peering.name = opts.peering
        settings.peering.clusterwide = True
    return settings


async def _register_webhook(client: KubeClient, opts: RunOptions, ca_bundle: str) -> None:
    assert opts.register_webhook_url is not None
    body = webhook_configuration(
        opts.webhook_config_name,
        url_client_config(opts.register_webhook_url, ca_bundle),
        opts.namespace,
        opts.failure_policy,
        opts.timeout_seconds,
    )
    path = resource_path(
        "admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
        name=opts.webhook_config_name,
    )
    await client.apply(path, body)
    log.info(
        "registered webhook configuration %s -> %s",
        opts.webhook_config_name,
        opts.register_webhook_url,
    )


async def _namespace_labels(client: KubeClient, name: str) -> dict[str, str] | None:
    found = await client.get_or_none(resource_path("v1", "namespaces", name=name))
    return None if found is None else dict((found.get("metadata") or {}).get("labels") or {})


async def serve(
    opts: RunOptions, ssl_context: ssl.SSLContext, ca_bundle: str | None, stop: asyncio.Event
) -> None:
    """Run until `stop` is set or the operator ends (it handles SIGINT/SIGTERM itself)."""
    state, ledger, metrics = PolicyState(), GpuLedger(opts.gpu_reservation_ttl), Metrics()
    async with KubeClient(login()) as client:
        admission = Admission(
            state,
            ledger,
            Config(opts.namespace, opts.scope_admin_groups, LEDGER_GPU_RULES),
            namespace_lookup=partial(_namespace_labels, client),
        )
        webhook = Webhook(
            admission, metrics, opts.deadline, events=partial(post_violations, client)
        )
        runner = web.AppRunner(webhook.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, opts.host, opts.port, ssl_context=ssl_context).start()
        log.info("webhook listening on https://%s:%d", opts.host, opts.port)
        registry = kopf.OperatorRegistry()
        register(registry, state, ledger, LEDGER_GPU_RULES, writes_status=True)
        operator = asyncio.create_task(
            kopf.operator(
                registry=registry, settings=_settings(opts), clusterwide=True, stop_flag=stop
            )
        )
        try:
            await initial_sync(client, state, ledger, LEDGER_GPU_RULES)
            if opts.register_webhook_url and ca_bundle:
                await _register_webhook(client, opts, ca_bundle)
            webhook.ready.set()
            log.info("ready: answering admission requests")
            await operator
        finally:
            stop.set()
            if not operator.done():
                await operator
            # The webhook configuration is deliberately left in place: deleting it on shutdown
            # would open the cluster for as long as mlgate is down.
            await runner.cleanup()


def describe_startup_error(exc: BaseException) -> str:
    if isinstance(exc, ApiError) and exc.status == 404:
        return f"the apiserver has no such resource ({exc.message}); are mlgate's CRDs installed? (kubectl apply -f crds/)"
    if isinstance(exc, kopf.LoginError):
        return f"cannot log in to the cluster: {exc}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc}"
    return str(exc)


def kubeconfig_env(path: str | None) -> None:
    if path:
        os.environ["KUBECONFIG"] = path
