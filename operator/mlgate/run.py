"""`mlgate run`: the operator and the validating webhook in one process and one event loop."""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import logging
import os
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import kopf
import uvloop
from aiohttp import web

from mlgate import logs
from mlgate.api.compile import gpu_resources
from mlgate.api.models import DEFAULT_DEVICE_CLASSES, DEFAULT_GPU_RESOURCES
from mlgate.cluster import kopfjson
from mlgate.cluster.client import ApiError, KubeClient, login, resource_path
from mlgate.cluster.events import post_violations
from mlgate.cluster.related import related_objects
from mlgate.controller.audit import Auditor
from mlgate.controller.egress import EgressReconciler, own_username
from mlgate.controller.gpu_budget import ApiBudgetStore
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.gpu_reconcile import BudgetReconciler
from mlgate.controller.handlers import gpu_watches, register
from mlgate.controller.leader import LeaderElection
from mlgate.controller.policy_reports import DEFAULT_MAX_RESULTS
from mlgate.controller.routing import KindRouter
from mlgate.controller.runtimes import RuntimeCache
from mlgate.controller.state import PolicyState
from mlgate.controller.status import write_all_statuses
from mlgate.controller.sync import initial_sync
from mlgate.engine.policy import GpuRules
from mlgate.engine.workloads import Kinds
from mlgate.metrics import Metrics
from mlgate.registry.options import add_registry_options
from mlgate.registry.wiring import check_registry_options, cluster_verifier, parse_pull_secret
from mlgate.supervise import supervise
from mlgate.webhook import certs
from mlgate.webhook.admission import Admission, Config, ImageVerifier
from mlgate.webhook.config import (
    MUTATE_PATH,
    VALIDATE_PATH,
    mutating_webhook_configuration,
    url_client_config,
    webhook_configuration,
)
from mlgate.webhook.server import Webhook

log = logging.getLogger("mlgate.run")
# Quota accounting counts every extended resource any default policy would count as a GPU.
LEDGER_GPU_RULES = GpuRules(resources=gpu_resources(DEFAULT_GPU_RESOURCES, DEFAULT_DEVICE_CLASSES))


@dataclass(frozen=True)
class RunOptions:
    namespace: str = "mlgate-system"
    host: str = "0.0.0.0"  # noqa: S104 - the apiserver must reach the webhook
    port: int = 8443
    cert_mode: str = "self"  # self: generate into a Secret; files: provided (cert-manager)
    tls_secret: str = "mlgate-tls"  # noqa: S105 - a Secret's name, not a password
    service_name: str = "mlgate"
    cert_dns_names: tuple[str, ...] = ()
    cert_ips: tuple[str, ...] = ()
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    webhook_configs: tuple[str, ...] = ("mlgate",)
    mutating_webhook_configs: tuple[str, ...] = ("mlgate",)
    register_webhook_url: str | None = None
    failure_policy: str = "Fail"
    timeout_seconds: int = 10
    scope_admin_groups: frozenset[str] = frozenset({"system:masters"})
    leader_election: bool = True
    audit_interval: float = 300.0
    report_max_results: int = DEFAULT_MAX_RESULTS
    approval_expiry_window: float = 7 * 24 * 3600.0  # seconds
    lease_name: str = "mlgate"
    identity: str = ""  # this replica's name in the Lease; defaults to host name and pid
    gpu_reservation_ttl: float = 30.0
    service_account: str = "mlgate"
    egress_managers: tuple[str, ...] = ()
    insecure_registries: tuple[str, ...] = ()  # reached over plain HTTP
    registry_ca_file: str | None = None
    pull_secrets: tuple[tuple[str, str], ...] = ()  # (namespace, name) for every image
    verifier_image: str | None = None  # runs `mlgate verify-model` in pods (models.verifyLoaded)

    @property
    def ca_bundle_configs(self) -> tuple[str, ...]:
        """Every webhook configuration whose caBundle mlgate keeps in step (mode self)."""
        return (*self.webhook_configs, *map(certs.mutating, self.mutating_webhook_configs))

    @property
    def deadline(self) -> float:
        """Answer before the apiserver gives up, leaving room for the network round trip."""
        return max(1.0, self.timeout_seconds - 1.5)


def _settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # Every replica watches (its webhook needs current policies); writes are gated by the Lease.
    settings.peering.standalone = True
    return settings


async def _register_webhook(
    client: KubeClient, opts: RunOptions, ca_bundle: bytes, kinds: Kinds
) -> None:
    """Point the webhook configurations at a URL (local clusters; the Helm chart does it there).
    The validating one also routes the kinds WorkloadKinds declare; controller.routing keeps
    that entry in step afterwards, and the mutating one's rules with the policies in force."""
    assert opts.register_webhook_url is not None
    ca = base64.b64encode(ca_bundle).decode()
    url = opts.register_webhook_url
    configs = (
        (
            partial(webhook_configuration, kinds=kinds),
            opts.webhook_configs[0],
            VALIDATE_PATH,
            certs.WEBHOOK_PLURAL,
        ),
        (
            mutating_webhook_configuration,
            opts.mutating_webhook_configs[0],
            MUTATE_PATH,
            certs.MUTATING_WEBHOOK_PLURAL,
        ),
    )
    for build, name, route, plural in configs:
        body = build(
            name,
            url_client_config(url, ca, route),
            opts.namespace,
            opts.failure_policy,
            opts.timeout_seconds,
        )
        await client.apply(resource_path(certs.WEBHOOK_API, plural, name=name), body)
        log.info("registered %s %s -> %s%s", body["kind"], name, url, route)


async def _namespace_labels(client: KubeClient, name: str) -> dict[str, str] | None:
    found = await client.get_or_none(resource_path("v1", "namespaces", name=name))
    return None if found is None else dict((found.get("metadata") or {}).get("labels") or {})


async def _object(  # noqa: PLR0917 - the ObjectLookup signature, after `client`
    client: KubeClient, group: str, version: str, plural: str, namespace: str, name: str
) -> dict[str, Any] | None:
    api_version = f"{group}/{version}" if group else version
    return await client.get_or_none(resource_path(api_version, plural, namespace, name))


@dataclass
class Tls:
    """The serving certificate: where it comes from and the task that keeps it fresh."""

    context: ssl.SSLContext
    ca_pem: bytes
    refresher: Callable[[], Coroutine[Any, Any, None]]


async def _tls(client: KubeClient, opts: RunOptions) -> Tls:
    if opts.cert_mode == "files":
        if not (opts.tls_cert_file and opts.tls_key_file):
            raise certs.CertificateError(
                "--cert-mode files needs --tls-cert-file and --tls-key-file"
            )
        files = certs.FileCertificates(
            Path(opts.tls_cert_file),
            Path(opts.tls_key_file),
            Path(opts.tls_ca_file) if opts.tls_ca_file else None,
        )
        bundle = files.load()
        context = certs.server_ssl_context(bundle.cert_path, bundle.key_path)

        async def watch_files() -> None:
            await files.run_forever(lambda b: certs.reload(context, b.cert_path, b.key_path))

        return Tls(context, bundle.ca_pem, watch_files)
    dns = opts.cert_dns_names or certs.service_dns_names(opts.service_name, opts.namespace)
    managed = certs.SecretCertificates(
        opts.namespace,
        opts.tls_secret,
        certs.CertSpec(dns_names=tuple(dns), ip_addresses=opts.cert_ips),
    )
    bundle = await managed.ensure(client)
    if not opts.register_webhook_url:
        await managed.sync_ca_bundle(client, opts.ca_bundle_configs)
    context = certs.server_ssl_context(bundle.cert_path, bundle.key_path)

    async def rotate() -> None:
        await managed.run_forever(
            client,
            opts.ca_bundle_configs,
            lambda b: certs.reload(context, b.cert_path, b.key_path),
        )

    return Tls(context, bundle.ca_pem, rotate)


async def _egress_managers(client: KubeClient, opts: RunOptions) -> frozenset[str]:
    """Who may change mlgate-egress: mlgate's ServiceAccount, the identity this process runs as
    (its own writes pass the webhook too; locally that is the kubeconfig's user), and any
    --egress-manager."""
    managers = {f"system:serviceaccount:{opts.namespace}:{opts.service_account}"}
    managers.update(opts.egress_managers)
    username = await own_username(client)
    if username:
        managers.add(username)
    log.info("NetworkPolicy mlgate-egress may be changed only by: %s", sorted(managers))
    return frozenset(managers)


def _admission(
    client: KubeClient,
    opts: RunOptions,
    state: PolicyState,
    ledger: GpuLedger,
    *,
    egress: EgressReconciler,
    egress_managers: frozenset[str],
    verify_images: ImageVerifier,
    runtimes: RuntimeCache,
    budgets: ApiBudgetStore,
) -> Admission:
    return Admission(
        state,
        ledger,
        Config(
            opts.namespace,
            opts.scope_admin_groups,
            LEDGER_GPU_RULES,
            egress_managers=egress_managers,
            verifier_image=opts.verifier_image,
        ),
        namespace_lookup=partial(_namespace_labels, client),
        object_lookup=partial(_object, client),
        egress_present=egress.has_managed_policy,
        network_policies=egress.network_policies,
        related=partial(related_objects, client),
        verify_images=verify_images,
        runtimes=runtimes.catalog,
        budgets=budgets,
    )


@dataclass
class Elector:
    """Who does the write work: the Lease holder, or this process when election is off."""

    election: LeaderElection | None

    def leads(self) -> bool:
        return self.election is None or self.election.is_leader

    async def run(self) -> None:
        if self.election is not None:
            await self.election.run_forever()


def _elector(
    client: KubeClient,
    opts: RunOptions,
    state: PolicyState,
    egress: EgressReconciler,
    synced: asyncio.Event,
) -> Elector:
    if not opts.leader_election:
        return Elector(None)

    async def take_over() -> None:
        # What the previous leader left unwritten (or wrote from older policies) is now ours.
        await synced.wait()
        await write_all_statuses(client, state)
        egress.kick_all()

    identity = opts.identity or f"{socket.gethostname()}-{os.getpid()}"
    return Elector(
        LeaderElection(client, opts.namespace, opts.lease_name, identity, on_elected=take_over)
    )


async def serve(opts: RunOptions) -> None:
    """Run until SIGINT/SIGTERM (kopf's operator handles them) or until the operator fails."""
    state, ledger, metrics = PolicyState(), GpuLedger(), Metrics()
    async with KubeClient(login()) as client:
        tls = await _tls(client, opts)
        egress = EgressReconciler(client, state, opts.namespace)
        runtimes = RuntimeCache()
        verifier = cluster_verifier(
            client,
            insecure=opts.insecure_registries,
            ca_file=opts.registry_ca_file,
            pull_secrets=opts.pull_secrets,
            webhook_deadline=opts.deadline,
            namespace_labels=state.namespace_labels,
        )
        managers = await _egress_managers(client, opts)
        budgets = ApiBudgetStore(client, opts.namespace)
        webhook = Webhook(
            _admission(
                client,
                opts,
                state,
                ledger,
                egress=egress,
                egress_managers=managers,
                verify_images=verifier,
                runtimes=runtimes,
                budgets=budgets,
            ),
            metrics,
            opts.deadline,
            events=partial(post_violations, client),
        )
        runner = web.AppRunner(webhook.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, opts.host, opts.port, ssl_context=tls.context).start()
        log.info("webhook listening on https://%s:%d", opts.host, opts.port)
        elector = _elector(client, opts, state, egress, webhook.ready)
        egress.leads = elector.leads
        registry = kopf.OperatorRegistry()
        kopfjson.install()
        reconciler = BudgetReconciler(
            budgets,
            ledger,
            state,
            partial(_object, client),
            LEDGER_GPU_RULES,
            metrics,
            elector.leads,
            lambda: datetime.now(UTC),
            grace=opts.gpu_reservation_ttl,
        )
        router = KindRouter(
            client,
            state,
            opts.webhook_configs,
            elector.leads,
            mutating_names=opts.mutating_webhook_configs,
        )
        register(registry, state, leads=elector.leads, egress=egress, routed=router.sync)
        runtimes.register(registry)
        operator = asyncio.create_task(
            kopf.operator(registry=registry, settings=_settings(), clusterwide=True)
        )
        watches = gpu_watches(client, ledger, reconciler.deleted)
        watching = [
            asyncio.create_task(supervise(f"watch-{w.plural}", w.run, metrics)) for w in watches
        ]
        refresher = asyncio.create_task(supervise("certificates", tls.refresher, metrics))
        settle = asyncio.create_task(
            supervise("gpu-budgets", partial(reconciler.run, after=webhook.ready), metrics)
        )
        reconcile = asyncio.create_task(
            supervise("egress", partial(egress.run, after=webhook.ready), metrics)
        )
        electing = asyncio.create_task(supervise("leader-election", elector.run, metrics))
        auditor = Auditor(
            client,
            state,
            opts.namespace,
            elector.leads,
            opts.audit_interval,
            metrics,
            max_results=opts.report_max_results,
            expiry_window=timedelta(seconds=opts.approval_expiry_window),
            verify_images=verifier,
            runtimes=runtimes,
            network_policies=egress.every_network_policy,
        )
        auditing = asyncio.create_task(
            supervise("audit", partial(auditor.run, after=webhook.ready), metrics)
        )
        routing = asyncio.create_task(
            supervise("kind-routing", partial(router.run, after=webhook.ready), metrics)
        )
        try:
            await initial_sync(client, state, watches)
            await runtimes.sync(client)
            # Everything loaded so far lives for the whole process: keep full collections from
            # rescanning it on the request path.
            gc.freeze()
            # Registered before ready, so that ready (what /readyz and a local harness wait
            # for) means the apiserver already sends mlgate its requests.
            if opts.register_webhook_url:
                await _register_webhook(client, opts, tls.ca_pem, state.snapshot().kinds)
            webhook.ready.set()
            log.info("ready: answering admission requests")
            await operator
        finally:
            background = [refresher, settle, reconcile, electing, auditing, routing, operator]
            background += watching
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            # The webhook configuration is deliberately left in place: deleting it on shutdown
            # would leave the cluster unguarded for as long as mlgate is down.
            await runner.cleanup()
            await verifier.client.close()


def describe_startup_error(exc: BaseException) -> str:
    if isinstance(exc, ApiError) and exc.status == 404:
        return (
            f"the apiserver has no such resource ({exc.message}); are mlgate's CRDs installed? "
            "(kubectl apply -f crds/)"
        )
    if isinstance(exc, kopf.LoginError):
        return f"cannot log in to the cluster: {exc}"
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    add("--namespace", default="mlgate-system", help="mlgate's own namespace (never judged)")
    add("--host", default="0.0.0.0", help="address the webhook listens on")  # noqa: S104
    add("--port", "--webhook-port", type=int, default=8443, dest="port", help="webhook HTTPS port")
    add(
        "--cert-mode",
        choices=("self", "files"),
        default="self",
        help="self: generate a CA and serving cert into a Secret and rotate them; "
        "files: serve provided files (cert-manager), reloading them when they change",
    )
    add("--tls-secret", default="mlgate-tls", help="Secret for self-managed certificates")
    add("--service-name", default="mlgate", help="Service the certificate is issued for")
    add("--cert-dns-name", action="append", default=[], help="extra DNS SAN (repeatable)")
    add("--cert-ip", action="append", default=[], help="IP SAN, e.g. 127.0.0.1 (repeatable)")
    add("--tls-cert-file", help="serving certificate (files mode)")
    add("--tls-key-file", help="serving key (files mode)")
    add("--tls-ca-file", help="CA of the serving certificate (files mode)")
    add(
        "--webhook-config",
        action="append",
        default=[],
        help="ValidatingWebhookConfiguration whose caBundle mlgate keeps in step (repeatable)",
    )
    add(
        "--mutating-webhook-config",
        action="append",
        default=[],
        help="MutatingWebhookConfiguration (digest pinning) whose caBundle mlgate keeps in step "
        "(repeatable; default: the --webhook-config names)",
    )
    add(
        "--register-webhook-url",
        help="create the webhook configuration pointing at this URL "
        "(local clusters without a Service, e.g. https://127.0.0.1:8443)",
    )
    add("--failure-policy", choices=("Fail", "Ignore"), default="Fail")
    add("--timeout-seconds", type=int, default=10, help="webhook timeoutSeconds (1-30)")
    add(
        "--scope-admin-group",
        action="append",
        default=[],
        help="group allowed to relabel a namespace out of a policy's scope "
        "(repeatable; default system:masters)",
    )
    add(
        "--no-leader-election",
        dest="leader_election",
        action="store_false",
        help="write status and NetworkPolicies from this process without holding the Lease "
        "(a single replica only)",
    )
    add(
        "--audit-interval",
        type=float,
        default=300.0,
        help="seconds between background audits of existing workloads (PolicyReports, "
        "status.violations); a changed policy or approval starts one sooner",
    )
    add(
        "--report-max-results",
        type=int,
        default=DEFAULT_MAX_RESULTS,
        help="results kept per PolicyReport, the most severe first (the summary counts all)",
    )
    add(
        "--approval-expiry-window",
        type=float,
        default=7 * 24 * 3600.0,
        metavar="SECONDS",
        help="an ApprovedModel expiring within this many seconds makes the workloads using it "
        "warn results in the PolicyReports (default: 7 days; 0 turns it off)",
    )
    add(
        "--lease-name",
        default="mlgate",
        help="Lease in --namespace that elects the replica doing the write work",
    )
    add(
        "--identity",
        default=os.environ.get("POD_NAME", ""),
        help="this replica's name in the Lease (default: $POD_NAME, else host name and pid)",
    )
    add(
        "--gpu-reservation-ttl",
        type=float,
        default=30.0,
        help="seconds after an admission before its GPU reservation is reconciled with the live "
        "object (dropped when it is gone or finished, lowered when it shrank)",
    )
    add(
        "--service-account",
        default="mlgate",
        help="mlgate's ServiceAccount (in --namespace): the identity allowed to change the "
        "managed NetworkPolicy mlgate-egress",
    )
    add(
        "--egress-manager",
        action="append",
        default=[],
        metavar="USER",
        help="another username allowed to change mlgate-egress (repeatable); the identity "
        "mlgate runs as is always allowed",
    )
    add_registry_options(parser, auth_file=False)
    add(
        "--pull-secret",
        action="append",
        default=[],
        metavar="NAMESPACE/NAME",
        help="dockerconfigjson Secret with registry credentials for verifying every image, "
        "after the workload's imagePullSecrets (repeatable)",
    )
    add(
        "--verifier-image",
        help="image (this mlgate's, pinned by digest) of the init container that verifies "
        "models downloaded into pods (models.verifyLoaded)",
    )
    add("--log-level", default="INFO")  # fmt: skip


def options(args: argparse.Namespace) -> RunOptions:
    if not 1 <= args.timeout_seconds <= 30:
        raise ValueError("--timeout-seconds must be between 1 and 30")
    if args.report_max_results < 1 or args.approval_expiry_window < 0:
        raise ValueError("--report-max-results must be >= 1, --approval-expiry-window >= 0")
    check_registry_options(args.insecure_registry, args.registry_ca_file)
    return RunOptions(
        namespace=args.namespace,
        host=args.host,
        port=args.port,
        cert_mode=args.cert_mode,
        tls_secret=args.tls_secret,
        service_name=args.service_name,
        cert_dns_names=tuple(args.cert_dns_name),
        cert_ips=tuple(args.cert_ip),
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
        tls_ca_file=args.tls_ca_file,
        webhook_configs=tuple(args.webhook_config) or ("mlgate",),
        # The two kinds may share a name: default to the validating configurations' names.
        mutating_webhook_configs=tuple(args.mutating_webhook_config)
        or tuple(args.webhook_config)
        or ("mlgate",),
        register_webhook_url=args.register_webhook_url,
        failure_policy=args.failure_policy,
        timeout_seconds=args.timeout_seconds,
        scope_admin_groups=frozenset(args.scope_admin_group or ["system:masters"]),
        leader_election=args.leader_election,
        audit_interval=args.audit_interval,
        report_max_results=args.report_max_results,
        approval_expiry_window=args.approval_expiry_window,
        lease_name=args.lease_name,
        identity=args.identity,
        gpu_reservation_ttl=args.gpu_reservation_ttl,
        service_account=args.service_account,
        egress_managers=tuple(args.egress_manager),
        insecure_registries=tuple(args.insecure_registry),
        registry_ca_file=args.registry_ca_file,
        pull_secrets=tuple(parse_pull_secret(s) for s in args.pull_secret),
        verifier_image=args.verifier_image,
    )


def main(args: argparse.Namespace) -> int:
    """`mlgate run`: exit 0 on a clean stop, 2 when it cannot start (the reason on one line)."""
    logs.configure(args.log_level)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    try:
        uvloop.run(serve(options(args)))
    except (ApiError, kopf.LoginError, certs.CertificateError, OSError, ValueError) as exc:
        log.error("mlgate run cannot start: %s", describe_startup_error(exc))
        return 2
    return 0
