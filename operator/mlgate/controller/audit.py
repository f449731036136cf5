"""The background audit: existing workloads judged by the same engine as admission.

Admission only sees changes; a policy added or tightened later, an approval that expired or was
revoked, leave running workloads that would now be refused. The leader re-judges every supported
workload periodically (and soon after a policy or approval changes), as listed at the start of
the pass, and records what it found: PolicyReports
(controller/report_writer.py), `status.violations` on each policy, an Event on each newly
violating workload, and the `mlgate_audit_*` metrics.

Judging is a pure function of the workloads (`judge`); everything else is an adapter. Kinds
the cluster does not serve (no Kubeflow or Ray installed) are skipped, and judged from the
first pass after their CRDs appear. Workloads are judged with the runtimes and
configs they name (controller/runtimes.py); a changed runtime wakes the audit early.
NetworkPolicies (from the egress reconciler's watch) are judged too: one admitted while its
namespace was out of scope may widen egress now. Images under a signature rule are re-verified
through the webhook's verifier and its cache, so a running image signed by a removed key is a
finding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mlgate.api.models import API_VERSION
from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.cluster.events import post_event, warning_event
from mlgate.cluster.related import related_objects
from mlgate.controller.policy_reports import (
    DEFAULT_MAX_RESULTS,
    RESULT_OF_MODE,
    AuditOutcome,
    Finding,
    Resource,
    build_reports,
    result_key,
)
from mlgate.controller.report_writer import ReportWriter
from mlgate.controller.runtimes import RuntimeCache
from mlgate.controller.state import PolicyState
from mlgate.engine.decisions import Rule, Violation
from mlgate.engine.effective import effective_view
from mlgate.engine.evaluate import evaluate
from mlgate.engine.policy import Approval, CompiledPolicy, Facts, ImageFact
from mlgate.engine.related import contract_kinds
from mlgate.engine.workloads import BUILT_IN, SUPPORTED, KindSpec, Unsupported, WorkloadView
from mlgate.metrics import Metrics

log = logging.getLogger("mlgate.audit")
# The webhook's signature verifier (registry/verifier.py): the same cache serves both.
ImageVerifier = Callable[
    [tuple[CompiledPolicy, ...], WorkloadView], Awaitable[Mapping[str, ImageFact]]
]
FactsFor = Callable[[str], Facts]
Key = tuple[str, str, str, str]
VERIFY_CONCURRENCY = 8  # workloads verified at once: a slow registry must not stall the pass
RETRY = 10.0  # seconds before a failed pass is tried again (at most the interval)
POLL = 1.0  # seconds between checks for changed policies while waiting for the next pass


def _findings(resource: Resource, violations: Iterable[Violation]) -> list[Finding]:
    """One finding per policy and rule: a rule broken in three containers is one result."""
    grouped: dict[tuple[str, Rule], list[Violation]] = defaultdict(list)
    for v in violations:
        grouped[(v.policy, v.rule)].append(v)
    return [
        Finding(
            resource,
            policy,
            rule,
            RESULT_OF_MODE[vs[0].mode],
            "; ".join(dict.fromkeys(f"{v.path}: {v.message}" for v in vs)),
            tuple(dict.fromkeys(v.path for v in vs)),
            vs[0].atlas,
            vs[0].mode,
        )
        for (policy, rule), vs in grouped.items()
    ]


def _expiring(resource: Resource, now: list[Finding], later: Iterable[Violation]) -> list[Finding]:
    """Approvals valid now but not at the horizon: warnings, whatever the policy's mode."""
    broken = {(f.policy, f.rule) for f in now}
    soon = [v for v in later if v.rule is Rule.MODELS_APPROVAL and (v.policy, v.rule) not in broken]
    return [
        Finding(
            f.resource,
            f.policy,
            f.rule,
            "warn",
            f"approval expires soon; once it has: {f.message}",
            f.paths,
            f.atlas,
            f.mode,
        )
        for f in _findings(resource, soon)
    ]


def judge(
    policies: tuple[CompiledPolicy, ...],
    workloads: Iterable[Mapping[str, Any]],
    facts_for: FactsFor,
    exempt: frozenset[str],
    *,
    horizon_facts_for: FactsFor | None = None,
    images: Mapping[Resource, Mapping[str, ImageFact]] | None = None,
) -> AuditOutcome:
    """Every workload against every policy: pure, so it is tested without a cluster.

    With `horizon_facts_for` (the facts as they will be at the end of the expiry window), a
    model approval that is valid now but will have expired by then is a `warn` finding.
    `images` holds the signature verification of the workloads it names (else signature
    rules are not judged).
    """

    def with_images(facts: Facts, resource: Resource) -> Facts:
        verified = None if images is None else images.get(resource)
        return facts if verified is None else replace(facts, images=verified)

    findings: list[Finding] = []
    passed: Counter[str] = Counter()
    per_policy: Counter[str] = Counter({p.name: 0 for p in policies})
    audited = 0
    for item in workloads:
        resource = Resource.of(item)
        if resource.namespace in exempt or _controlled(item):
            continue
        audited += 1
        decision = evaluate(policies, item, with_images(facts_for(resource.namespace), resource))
        found = _findings(resource, decision.violations)
        if horizon_facts_for is not None:
            horizon = with_images(horizon_facts_for(resource.namespace), resource)
            later = evaluate(policies, item, horizon)
            found += _expiring(resource, found, later.violations)
        per_policy.update(v.policy for v in decision.violations)
        broken = {f.policy for f in found}
        passed[resource.namespace] += sum(p not in broken for p in decision.matched_policies)
        findings += found
    return AuditOutcome(tuple(findings), dict(passed), audited, dict(per_policy))


def expiring_within(approvals: Iterable[Approval], now: datetime, window: timedelta) -> bool:
    """Whether any approval in force expires within the window (else no second evaluation)."""
    return any(a.expires is not None and now < a.expires <= now + window for a in approvals)


def newly_violating(findings: Iterable[Finding], before: set[Key]) -> dict[Resource, list[Finding]]:
    """Workloads with a finding that the previous pass did not have, and those findings."""
    fresh: dict[Resource, list[Finding]] = defaultdict(list)
    for finding in findings:
        if finding.key not in before:
            fresh[finding.resource].append(finding)
    return dict(fresh)


@dataclass(frozen=True)
class Related:
    """The llm rules' facts of the whole cluster, by namespace; cluster-scoped ones go to all."""

    by_namespace: Mapping[str, tuple[Mapping[str, Any], ...]]
    cluster: tuple[Mapping[str, Any], ...]

    @classmethod
    def of_objects(cls, objects: tuple[Mapping[str, Any], ...]) -> Related:
        grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for obj in objects:
            grouped[str((obj.get("metadata") or {}).get("namespace") or "")].append(obj)
        cluster = tuple(grouped.pop("", ()))
        return cls({ns: tuple(objs) for ns, objs in grouped.items()}, cluster)

    def of(self, namespace: str) -> tuple[Mapping[str, Any], ...]:
        return (*self.by_namespace.get(namespace, ()), *self.cluster)


def _policy_path(name: str) -> str:
    namespace, _, short = name.rpartition("/")
    plural = "mlpolicies" if namespace else "clustermlpolicies"
    return resource_path(API_VERSION, plural, namespace or None, short) + "/status"


def _controlled(item: Mapping[str, Any]) -> bool:
    """Pods and ReplicaSets made by a controller are judged through their owner."""
    refs = (item.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, Mapping) and r.get("controller") for r in refs)


def _api_version(spec: KindSpec) -> str:
    return f"{spec.group}/{spec.versions[0]}" if spec.group else spec.versions[0]


class ReportsUnreadable(Exception):
    """The PolicyReports could not be read or written in this pass (logged and counted)."""


@dataclass
class Auditor:
    client: KubeClient
    state: PolicyState
    own_namespace: str
    leads: Callable[[], bool]
    interval: float = 300.0
    metrics: Metrics = field(default_factory=Metrics)
    max_results: int = DEFAULT_MAX_RESULTS
    expiry_window: timedelta = timedelta(0)
    events_per_pass: int = 20
    write_pace: float = 0.05
    verify_images: ImageVerifier | None = None
    runtimes: RuntimeCache = field(default_factory=RuntimeCache)
    network_policies: Callable[[], Iterable[Mapping[str, Any]]] = list
    _unserved: frozenset[str] = frozenset()
    _seen: set[Key] | None = None  # finding keys of the last pass; None before the first
    # The last pass could not write the PolicyReports (an apiserver busy or re-initialising a
    # CRD's storage): the next pass comes after RETRY, not after the whole interval, so the
    # reports do not stay stale for minutes.
    _reports_stale: bool = False

    async def _items(self, spec: KindSpec) -> list[dict[str, Any]] | None:
        """The kind's objects; None when the cluster does not serve the kind (yet)."""
        api_version = _api_version(spec)
        try:
            items = await self.client.list(resource_path(api_version, spec.plural))
        except ApiError as exc:
            if exc.status == 404:  # that ML operator is not installed here
                return None
            if exc.status == 403 and (spec.group, spec.kind) not in BUILT_IN:
                log.warning(
                    "audit cannot list %s.%s (declared by a WorkloadKind): grant mlgate "
                    "get/list/watch on it",
                    spec.plural,
                    spec.group,
                )
                return []
            raise
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", spec.kind)
        return items

    async def _current(self) -> list[dict[str, Any]]:
        """The workloads to judge, listed on every pass rather than kept from watches: a watch
        costs on every change, on every replica, on the event loop that answers admissions; a
        listing costs the leader once per pass (bench/watch_cost.py measures both)."""
        declared = self.state.snapshot().kinds.declared.values()
        return await self._list((*SUPPORTED, *declared))

    async def _list(self, specs: Iterable[KindSpec]) -> list[dict[str, Any]]:
        """The objects of `specs`; which of them the cluster does not serve is logged and shown
        as a metric."""
        workloads: list[dict[str, Any]] = []
        unserved = set()
        for spec in specs:
            items = await self._items(spec)
            if items is None:
                unserved.add(f"{spec.kind}.{spec.group}")
            else:
                workloads += items
        if unserved != self._unserved:
            log.info("audit: kinds this cluster does not serve, skipped: %s", sorted(unserved))
            self._unserved = frozenset(unserved)
        self.metrics.audit_unserved.set(len(unserved))
        return workloads

    async def _verify(
        self,
        policies: tuple[CompiledPolicy, ...],
        workloads: Sequence[Mapping[str, Any]],
        exempt: frozenset[str],
    ) -> dict[Resource, Mapping[str, ImageFact]] | None:
        """Re-verify the signatures of running workloads' images when a policy asks for them.

        The verifier caches verified digests (10 minutes by default) per key set, so a pass
        costs registry traffic only for what changed: a key removed from a policy or its
        Secret changes the key set, and the images it signed become findings.
        """
        signed = any(p.images is not None and p.images.signatures for p in policies)
        if self.verify_images is None or not signed:
            return None
        verify = self.verify_images
        limit = asyncio.Semaphore(VERIFY_CONCURRENCY)

        async def one(workload: WorkloadView) -> Mapping[str, ImageFact]:
            async with limit:
                return await verify(policies, workload)

        catalog, kinds = self.runtimes.catalog(), self.state.snapshot().kinds
        judged = {
            Resource.of(item): workload
            for item in workloads
            if not isinstance(workload := effective_view(item, catalog, kinds), Unsupported)
            and workload.namespace not in exempt
            and not _controlled(item)
        }
        facts = await asyncio.gather(*(one(w) for w in judged.values()))
        return dict(zip(judged, facts, strict=True))

    async def _related(self, policies: tuple[CompiledPolicy, ...]) -> Related | None:
        """Every namespace's llm facts at once, when a policy has llm rules: an LLM whose
        guardrail was deleted after admission is reported here."""
        if not any(p.llm is not None for p in policies):
            return None
        return Related.of_objects(await related_objects(self.client, "", contract_kinds(policies)))

    def _facts_for(self, now: datetime, related: Related | None = None) -> FactsFor:
        snapshot = self.state.snapshot()
        catalog = self.runtimes.catalog()

        def facts(namespace: str) -> Facts:
            labels = self.state.namespace_labels(namespace) or {}
            return Facts(
                now=now,
                namespace_labels=labels,
                approvals=snapshot.approvals,
                runtimes=catalog,
                kinds=snapshot.kinds,
                related=None if related is None else related.of(namespace),
            )

        return facts

    async def audit_once(self) -> AuditOutcome:
        started = time.monotonic()
        now = datetime.now(UTC)
        snapshot = self.state.snapshot()
        workloads = [*await self._current(), *self.network_policies()]
        soon = expiring_within(snapshot.approvals, now, self.expiry_window)
        exempt = frozenset({"kube-system", self.own_namespace})
        related = await self._related(snapshot.policies)
        outcome = judge(
            snapshot.policies,
            workloads,
            self._facts_for(now, related),
            exempt,
            horizon_facts_for=self._facts_for(now + self.expiry_window, related) if soon else None,
            images=await self._verify(snapshot.policies, workloads, exempt),
        )
        self._reports_stale = False
        try:
            existing = await self._write_reports(outcome, now)
        except ReportsUnreadable:
            self._reports_stale = True
            if self._seen is not None:  # else the next pass, with reports, knows what is new
                await self._post_events(outcome, None)
        else:
            await self._post_events(outcome, existing)
        await self._write_policy_status(outcome.per_policy)
        self._record(outcome, time.monotonic() - started)
        log.info(
            "audit: %d workloads, violations per policy: %s",
            outcome.audited,
            dict(outcome.per_policy),
        )
        return outcome

    async def _write_reports(
        self, outcome: AuditOutcome, now: datetime
    ) -> Mapping[str, Mapping[str, Any]] | None:
        """Bring the PolicyReports up to date; the reports found before (None when the cluster
        does not serve them). Failing here does not fail the pass: status and metrics still
        count; it raises ReportsUnreadable."""
        writer = ReportWriter(self.client, self.metrics, self.write_pace)
        try:
            existing = await writer.existing()
            if existing is not None:
                wanted = build_reports(outcome, now, existing.values(), self.max_results)
                await writer.sync(wanted, existing)
        except (ApiError, OSError, TimeoutError) as exc:
            self.metrics.audit_failures.labels("PolicyReports").inc()
            log.warning("audit: could not update the PolicyReports: %s", exc)
            raise ReportsUnreadable from exc
        return existing

    async def _post_events(
        self, outcome: AuditOutcome, reports: Mapping[str, Mapping[str, Any]] | None
    ) -> None:
        """An Event on each newly violating workload, at most `events_per_pass` per pass.

        "New" is judged against this process's last pass and the reports in the cluster (so a
        new leader does not repeat its predecessor's events; results a bounded report left out
        are known from the last pass); on a first pass with neither, nothing is new.
        """
        before = self._seen
        if reports is not None:
            before = (before or set()) | {
                key
                for report in reports.values()
                for result in report.get("results") or []
                if (key := result_key(result)) is not None
            }
        self._seen = {f.key for f in outcome.findings}
        if before is None:
            return
        fresh = newly_violating(outcome.findings, before)
        now = datetime.now(UTC)
        for resource, findings in list(fresh.items())[: self.events_per_pass]:
            text = "; ".join(f"[{f.policy}] {f.rule} ({f.result}) {f.message}" for f in findings)
            await post_event(self.client, warning_event(resource.ref(), text, now))
        if len(fresh) > self.events_per_pass:
            log.info(
                "audit: %d more newly violating workloads without an Event (limit %d per pass)",
                len(fresh) - self.events_per_pass,
                self.events_per_pass,
            )

    async def _write_policy_status(self, counts: Mapping[str, int]) -> None:
        for name, count in counts.items():
            try:
                await self.client.patch(_policy_path(name), {"status": {"violations": count}})
            except ApiError as exc:
                log.warning("could not record audit result on policy %s: %s", name, exc)

    def _record(self, outcome: AuditOutcome, seconds: float) -> None:
        gauge = self.metrics.audit_violations
        gauge.clear()
        current = Counter(
            (f.policy, f.rule.value, f.resource.namespace, f.result) for f in outcome.findings
        )
        for labels, count in current.items():
            gauge.labels(*labels).set(count)
        self.metrics.audit_duration.observe(seconds)
        self.metrics.audit_objects.set(outcome.audited)
        self.metrics.audit_last_success.set(time.time())

    def _rules(self) -> tuple[object, ...]:
        snapshot = self.state.snapshot()
        return (snapshot.policies, snapshot.approvals)

    async def _pause(self, judged: tuple[object, ...], seconds: float) -> None:
        """For `seconds`, or less when the policies or approvals in force are no longer those
        the last pass judged with (status writes alone do not count), or a runtime or config
        changed."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(POLL, left))
            if self._rules() != judged or self.runtimes.changed.is_set():
                return

    async def run(self, after: asyncio.Event) -> None:
        """Audit forever while leading. A failed pass is logged and counted, and the next pass
        tries again; anything else escapes to the supervisor (mlgate.supervise)."""
        await after.wait()
        while True:
            judged = self._rules()
            self.runtimes.changed.clear()  # this pass sees every runtime change made so far
            wait = self.interval
            if not self.leads():
                self._seen = None  # the leader's reports say what is new when this one leads
            else:
                try:
                    await self.audit_once()
                    if self._reports_stale:
                        wait = min(self.interval, RETRY)
                except (ApiError, OSError, TimeoutError) as exc:
                    wait = min(self.interval, RETRY)
                    self.metrics.audit_failures.labels(type(exc).__name__).inc()
                    log.warning("audit pass failed, retrying in %gs: %s", wait, exc)
            await self._pause(judged, wait)
