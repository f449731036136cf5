"""The background audit on plain data: judging, PolicyReports, events, failures."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mlgate.api.compile import compile_approval, compile_policy, parse_resource
from mlgate.api.models import ApprovedModel, ClusterMLPolicy
from mlgate.cluster.client import ApiError, KubeClient, api_error
from mlgate.controller import audit
from mlgate.controller.audit import Auditor, expiring_within, judge, newly_violating
from mlgate.controller.policy_reports import (
    OMITTED_ANNOTATION,
    AuditOutcome,
    Resource,
    build_reports,
    result_key,
    same_report,
)
from mlgate.controller.state import PolicyState
from mlgate.engine.policy import Approval, CompiledPolicy, Facts, ImageFact
from mlgate.engine.workloads import WorkloadView
from mlgate.metrics import Metrics
from mlgate.supervise import supervise
from tests.unit.factories import deployment, policy

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EXEMPT = frozenset({"kube-system", "mlgate-system"})


def compiled(body: dict[str, Any]) -> CompiledPolicy:
    resource = parse_resource(body)
    assert isinstance(resource, ClusterMLPolicy)
    return compile_policy(resource)


def facts(now: datetime = NOW, approvals: tuple[Approval, ...] = ()) -> Any:
    return lambda _: Facts(
        now=now, namespace_labels={"mlgate.io/governed": "true"}, approvals=approvals
    )


def images_policy() -> CompiledPolicy:
    return compiled(policy(images={"requireDigest": True, "disallowTags": ["latest"]}))


def test_judges_each_workload_and_rule_once_and_skips_controlled_and_exempt() -> None:
    quiet = compiled(policy("quiet", gpu={"maxPerPod": 8}))
    owned = deployment("owned", image="nginx")
    owned["metadata"]["ownerReferences"] = [{"kind": "X", "name": "x", "controller": True}]
    workloads = [
        deployment("bad", image="nginx:latest"),  # digest + tag
        deployment("fine"),
        owned,  # judged through its owner
        deployment("system", namespace="kube-system", image="nginx"),
        deployment("ours", namespace="mlgate-system", image="nginx"),
    ]
    outcome = judge((images_policy(), quiet), workloads, facts(), EXEMPT)
    assert outcome.per_policy == {"production-ml": 2, "quiet": 0}
    assert outcome.audited == 2
    assert sorted(
        (f.resource.name, f.policy, f.rule.value, f.result) for f in outcome.findings
    ) == [
        ("bad", "production-ml", "images.digest", "fail"),
        ("bad", "production-ml", "images.tag", "fail"),
    ]
    # bad passes "quiet"; fine passes both.
    assert outcome.passed == {"ml-prod": 3}


def test_a_rule_broken_in_several_containers_is_one_result() -> None:
    item = deployment("two", image="nginx")
    containers = item["spec"]["template"]["spec"]["containers"]
    containers.append({**containers[0], "name": "sidecar"})
    digests = compiled(policy(images={"requireDigest": True}))
    (finding,) = judge((digests,), [item], facts(), EXEMPT).findings
    assert len(finding.paths) == 2
    assert finding.atlas == ("AML.T0010", "AML.T0010.004")


def test_warn_mode_policies_give_warn_results() -> None:
    warn = compiled(policy("soft", mode="Warn", images={"requireDigest": True}))
    outcome = judge((warn,), [deployment("bad", image="nginx")], facts(), EXEMPT)
    assert [f.result for f in outcome.findings] == ["warn"]


def approval(expires: datetime) -> Approval:
    resource = parse_resource(
        {
            "apiVersion": "mlgate.io/v1alpha1",
            "kind": "ApprovedModel",
            "metadata": {"name": "fraud-v3"},
            "spec": {"model": "fraud", "version": "3", "expires": expires.isoformat()},
        }
    )
    assert isinstance(resource, ApprovedModel)
    return compile_approval(resource)


def test_an_approval_expiring_within_the_window_is_a_warning_then_a_failure() -> None:
    models = compiled(policy(models={"requireApproved": True}))
    item = deployment("served", annotations={"mlgate.io/model": "fraud@3"})
    approvals = (approval(NOW + timedelta(days=2)),)
    window = timedelta(days=7)
    assert expiring_within(approvals, NOW, window)
    assert not expiring_within(approvals, NOW, timedelta(days=1))
    soon = judge(
        (models,),
        [item],
        facts(NOW, approvals),
        EXEMPT,
        horizon_facts_for=facts(NOW + window, approvals),
    )
    assert [(f.rule.value, f.result) for f in soon.findings] == [("models.approval", "warn")]
    assert "expires soon" in soon.findings[0].message
    assert soon.per_policy == {"production-ml": 0}
    later = NOW + timedelta(days=3)
    gone = judge(
        (models,),
        [item],
        facts(later, approvals),
        EXEMPT,
        horizon_facts_for=facts(later + window, approvals),
    )
    assert [(f.rule.value, f.result) for f in gone.findings] == [("models.approval", "fail")]


def outcome_of(*names: str, namespace: str = "ml-prod") -> AuditOutcome:
    items = [deployment(n, namespace=namespace, image="nginx") for n in names]
    for i, item in enumerate(items):
        item["metadata"]["uid"] = f"uid-{i}"
    return judge((compiled(policy(images={"requireDigest": True})),), items, facts(), EXEMPT)


def test_reports_carry_policy_rule_result_resources_and_atlas_ids() -> None:
    reports = build_reports(outcome_of("a"), NOW)
    report = reports["ml-prod"]
    assert report["kind"] == "PolicyReport"
    assert report["metadata"]["namespace"] == "ml-prod"
    assert report["summary"] == {"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    (result,) = report["results"]
    assert result["policy"] == "production-ml"
    assert result["rule"] == "images.digest"
    assert result["result"] == "fail"
    assert result["source"] == "mlgate"
    assert result["severity"] == "medium"
    assert result["properties"]["atlas"] == "AML.T0010,AML.T0010.004"
    assert result["resources"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "a",
            "namespace": "ml-prod",
            "uid": "uid-0",
        }
    ]
    assert result_key(result) == (
        "Deployment/ml-prod/a",
        "uid-0",
        "production-ml",
        "images.digest",
    )


def test_reports_are_bounded_and_count_what_they_omit() -> None:
    reports = build_reports(outcome_of(*(f"w{i}" for i in range(7))), NOW, max_results=3)
    report = reports["ml-prod"]
    assert len(report["results"]) == 3
    assert report["summary"]["fail"] == 7
    assert report["metadata"]["annotations"][OMITTED_ANNOTATION] == "4"


def test_unchanged_findings_keep_their_timestamp_and_need_no_write() -> None:
    first = build_reports(outcome_of("a"), NOW)
    again = build_reports(outcome_of("a"), NOW + timedelta(hours=1), first.values())
    assert same_report(first["ml-prod"], again["ml-prod"])
    fixed = build_reports(outcome_of(), NOW, first.values())
    assert "ml-prod" not in fixed  # nothing judged there any more: the report is deleted


def test_only_new_findings_are_newly_violating() -> None:
    before = {f.key for f in outcome_of("a").findings}
    fresh = newly_violating(outcome_of("a", "b").findings, before)
    assert [r.name for r in fresh] == ["b"]


def test_recompiling_the_same_policies_leaves_the_rules_equal() -> None:
    """The audit wakes early when the rules in force change; a status write alone (which
    recompiles the policy) must not look like a change, or it would audit in a loop."""
    state = PolicyState()
    body = policy(images={"requireDigest": True})
    state.upsert(body)
    before = state.snapshot().policies
    state.upsert({**body, "status": {"violations": 3}})
    assert state.snapshot().policies == before


@pytest.mark.parametrize(
    ("body", "content_type", "reason", "message"),
    [
        (b"404 page not found\n", "text/plain", "Not Found", "404 page not found"),
        (b"<html>bad gateway</html>", "text/html", "Not Found", "<html>bad gateway</html>"),
        (b"", "text/plain", "Not Found", "Not Found"),
        (
            b'{"kind":"Status","reason":"NotFound","message":"no such thing"}',
            "application/json",
            "NotFound",
            "no such thing",
        ),
    ],
)
def test_any_error_body_is_an_api_error(
    body: bytes, content_type: str, reason: str, message: str
) -> None:
    error = api_error(404, "Not Found", body)
    assert (error.status, error.reason, error.message) == (404, reason, message)


async def test_client_turns_a_plain_text_404_into_an_api_error() -> None:
    async def not_served(_: web.Request) -> web.Response:
        return web.Response(status=404, text="404 page not found\n")

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(status=200, text="<html>proxy login</html>")

    app = web.Application()
    app.router.add_get("/apis/kubeflow.org/v1/pytorchjobs", not_served)
    app.router.add_get("/api/v1/pods", garbage)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    info = kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", insecure=True)
    try:
        async with KubeClient(info) as client:
            with pytest.raises(ApiError) as missing:
                await client.list("/apis/kubeflow.org/v1/pytorchjobs")
            assert missing.value.status == 404
            assert "404 page not found" in missing.value.message
            with pytest.raises(ApiError) as invalid:
                await client.list("/api/v1/pods")
            assert invalid.value.reason == "InvalidResponse"
    finally:
        await runner.cleanup()


async def test_a_failing_background_task_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise ValueError("bug on the first pass")

    await asyncio.wait_for(supervise("audit", flaky, metrics, first_backoff=0.01), 5)
    assert len(runs) == 3
    assert (
        metrics.registry.get_sample_value(
            "mlgate_background_task_failures_total", {"task": "audit"}
        )
        == 2
    )
    assert metrics.registry.get_sample_value("mlgate_background_task_up", {"task": "audit"}) == 1
    assert "background task audit failed" in caplog.text
    assert "bug on the first pass" in caplog.text


PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
SIGNED = policy(
    "signed",
    images={
        "signatures": [{"images": ["registry.example.com/ml/*"], "keys": [{"publicKey": PEM}]}]
    },
)


def signed_policy() -> CompiledPolicy:
    return compiled(SIGNED)


def test_signature_rules_are_judged_on_the_verifications_given() -> None:
    item = deployment("api")
    resource = Resource.of(item)
    image = item["spec"]["template"]["spec"]["containers"][0]["image"]
    unverified = {resource: {image: ImageFact(error="signed by a key no longer trusted")}}
    outcome = judge((signed_policy(),), [item], facts(), EXEMPT, images=unverified)
    assert [(f.rule.value, f.result) for f in outcome.findings] == [("images.signature", "fail")]
    assert "no longer trusted" in outcome.findings[0].message


class FakeApi:
    """The apiserver as the audit sees it: deployments served, every ML group a plain 404."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.patches: list[tuple[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.applied: list[str] = []

    async def list(self, path: str, params: Mapping[str, str] | None = None) -> list[Any]:
        if path in {"/apis/apps/v1/deployments"}:
            return copy.deepcopy(self.items)
        if path.startswith(("/api/v1/", "/apis/apps/", "/apis/batch/")):
            return []
        raise api_error(404, "Not Found", b"404 page not found\n")

    async def patch(self, path: str, body: Any) -> dict[str, Any]:
        self.patches.append((path, body))
        return {}

    async def apply(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(path)
        return body

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return body


async def test_the_audit_skips_unserved_kinds_and_reverifies_signed_images() -> None:
    state = PolicyState()
    state.upsert(SIGNED)
    state.set_namespace("ml-prod", {"mlgate.io/governed": "true"})
    checked: list[str] = []

    async def verifier(
        policies: tuple[CompiledPolicy, ...], workload: WorkloadView
    ) -> Mapping[str, ImageFact]:
        checked.append(workload.name)
        return {
            c.image: ImageFact(error="key removed")
            for p in workload.pods
            for c in p.containers
            if c.image
        }

    metrics = Metrics()
    api = FakeApi([deployment("api")])
    auditor = Auditor(
        cast(KubeClient, api),
        state,
        "mlgate-system",
        lambda: True,
        metrics=metrics,
        verify_images=verifier,
    )
    outcome = await auditor.audit_once()
    assert checked == ["api"]
    assert [f.rule.value for f in outcome.findings] == ["images.signature"]
    assert api.patches == [
        ("/apis/mlgate.io/v1alpha1/clustermlpolicies/signed/status", {"status": {"violations": 1}})
    ]
    assert metrics.registry.get_sample_value("mlgate_audit_kinds_unserved") > 0
    assert metrics.registry.get_sample_value("mlgate_audit_objects") == 1
    # Every pass lists the workloads afresh: one deleted since is no longer judged.
    api.items.clear()
    assert (await auditor.audit_once()).findings == ()


async def test_events_go_to_newly_violating_workloads_only() -> None:
    state = PolicyState()
    state.upsert(policy(images={"requireDigest": True}))
    state.set_namespace("ml-prod", {"mlgate.io/governed": "true"})
    api = FakeApi([deployment("old", image="nginx")])
    auditor = Auditor(cast(KubeClient, api), state, "mlgate-system", lambda: True)
    await auditor.audit_once()
    assert api.created == []  # a first pass without reports: nothing is known to be new
    api.items.append(deployment("new", image="nginx"))
    await auditor.audit_once()
    await auditor.audit_once()
    assert [e["involvedObject"]["name"] for e in api.created] == ["new"]
    (event,) = api.created
    assert event["reason"] == "PolicyViolation" and "images.digest" in event["message"]


class BusyReports(FakeApi):
    busy = True

    async def list(self, path: str, params: Mapping[str, str] | None = None) -> list[Any]:
        if "wgpolicyk8s.io" in path and not self.busy:
            return []
        if "wgpolicyk8s.io" in path:
            raise api_error(429, "Too Many Requests", b'{"message": "storage is initializing"}')
        return await super().list(path, params)


async def test_reports_that_cannot_be_written_do_not_fail_the_pass() -> None:
    state = PolicyState()
    state.upsert(policy(images={"requireDigest": True}))
    state.set_namespace("ml-prod", {"mlgate.io/governed": "true"})
    api, metrics = BusyReports([deployment("old", image="nginx")]), Metrics()
    auditor = Auditor(cast(KubeClient, api), state, "mlgate-system", lambda: True, metrics=metrics)
    outcome = await auditor.audit_once()
    assert outcome.per_policy == {"production-ml": 1}
    assert api.patches  # status.violations still written
    failures = metrics.registry.get_sample_value(
        "mlgate_audit_failures_total", {"reason": "PolicyReports"}
    )
    assert failures == 1
    # Once the reports can be read, they say what is new: the violation gets its Event.
    assert api.created == []
    api.busy = False
    await auditor.audit_once()
    assert [e["involvedObject"]["name"] for e in api.created] == ["old"]
    assert api.applied == [
        "/apis/wgpolicyk8s.io/v1alpha2/namespaces/ml-prod/policyreports/mlgate-audit"
    ]


async def test_a_pass_whose_reports_failed_comes_again_after_retry_not_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CRD's storage re-initialising (429) must not leave the reports stale for a whole
    audit interval: the next pass comes after RETRY, as after a failed pass."""
    monkeypatch.setattr(audit, "RETRY", 0.05)
    monkeypatch.setattr(audit, "POLL", 0.01)
    state = PolicyState()
    state.upsert(policy(images={"requireDigest": True}))
    state.set_namespace("ml-prod", {"mlgate.io/governed": "true"})
    api = BusyReports([deployment("old", image="nginx")])
    auditor = Auditor(cast(KubeClient, api), state, "mlgate-system", lambda: True, interval=300)
    after = asyncio.Event()
    after.set()
    task = asyncio.create_task(auditor.run(after))
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if api.patches:  # the first pass ran (its reports failed)
                break
        api.busy = False
        for _ in range(200):
            await asyncio.sleep(0.01)
            if api.applied:
                break
        assert api.applied == [
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/ml-prod/policyreports/mlgate-audit"
        ]
    finally:
        task.cancel()
