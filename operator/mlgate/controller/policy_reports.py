"""Audit findings as wgpolicyk8s.io/v1alpha2 PolicyReports: pure functions, no I/O.

One PolicyReport per namespace (and one ClusterPolicyReport for cluster-scoped objects) named
`mlgate-audit`, with one result per workload, policy and rule that is not compliant. Compliant
pairs are only counted in `summary.pass`, so a workload that is fixed or deleted drops out of
`results` on the next pass. A report holds at most `max_results` results, the most severe
first; `summary` always counts them all and the annotation `mlgate.io/results-omitted` says how
many were left out, so an etcd object never grows with the size of the cluster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlgate.engine.decisions import Mode, Rule

API_VERSION = "wgpolicyk8s.io/v1alpha2"
REPORT_NAME = "mlgate-audit"
SOURCE = "mlgate"
MANAGED_BY = {"app.kubernetes.io/managed-by": "mlgate"}
OMITTED_ANNOTATION = "mlgate.io/results-omitted"
DEFAULT_MAX_RESULTS = 500
CLUSTER = ""  # the namespace key of cluster-scoped results

RESULT_OF_MODE = {Mode.ENFORCE: "fail", Mode.AUDIT: "fail", Mode.WARN: "warn"}

# Severity per rule: what an attacker gains when the rule is broken.
SEVERITY: dict[Rule, str] = {
    Rule.IMAGES_REGISTRY: "high",
    Rule.IMAGES_DIGEST: "medium",
    Rule.IMAGES_TAG: "medium",
    Rule.IMAGES_SIGNATURE: "high",
    Rule.MODELS_APPROVAL: "high",
    Rule.MODELS_REFERENCE: "medium",
    Rule.GPU_MAX_PER_POD: "medium",
    Rule.GPU_MAX_PER_WORKLOAD: "medium",
    Rule.GPU_NAMESPACE_QUOTA: "medium",
    Rule.GPU_PRODUCT: "low",
    Rule.EGRESS_HOST_NETWORK: "high",
    Rule.EGRESS_NETWORK_POLICY: "high",
    Rule.WORKLOAD_UNSUPPORTED: "medium",
}
CATEGORY = {
    "images": "ML supply chain: images",
    "models": "ML supply chain: models",
    "gpu": "ML resource use: GPUs",
    "egress": "ML exfiltration: egress",
    "workload": "ML workloads",
}
_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
_RESULT_ORDER = {"error": 0, "fail": 1, "warn": 2}


@dataclass(frozen=True, slots=True)
class Resource:
    """The workload a result is about, as PolicyReport `resources` name it."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""

    def ref(self) -> dict[str, str]:
        ref = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            ref["namespace"] = self.namespace
        if self.uid:
            ref["uid"] = self.uid
        return ref

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Resource:
        meta = obj.get("metadata") or {}
        return cls(
            str(obj.get("apiVersion") or ""),
            str(obj.get("kind") or ""),
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
            str(meta.get("uid") or ""),
        )


@dataclass(frozen=True, slots=True)
class Finding:
    """Everything one policy's rule says about one workload: one PolicyReport result."""

    resource: Resource
    policy: str
    rule: Rule
    result: str  # fail | warn | error
    message: str
    paths: tuple[str, ...]
    atlas: tuple[str, ...]
    mode: Mode

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identifies the result across passes: the same workload, policy and rule."""
        r = self.resource
        return (f"{r.kind}/{r.namespace}/{r.name}", r.uid, self.policy, self.rule.value)


@dataclass(frozen=True)
class AuditOutcome:
    """What one audit pass found: the input of every report, metric and status it writes."""

    findings: tuple[Finding, ...] = ()
    passed: Mapping[str, int] = field(default_factory=dict)  # namespace -> clean policy pairs
    audited: int = 0
    per_policy: Mapping[str, int] = field(default_factory=dict)  # violations per policy


def _order(finding: Finding) -> tuple[int, int, str, str, str, str, str]:
    r = finding.resource
    return (
        _SEVERITY_ORDER[SEVERITY[finding.rule]],
        _RESULT_ORDER[finding.result],
        r.kind,
        r.name,
        r.uid,
        finding.policy,
        finding.rule.value,
    )


def _timestamp(when: datetime) -> dict[str, int]:
    return {"seconds": int(when.timestamp()), "nanos": 0}


def result_json(finding: Finding, first_seen: dict[str, int]) -> dict[str, Any]:
    return {
        "policy": finding.policy,
        "rule": finding.rule.value,
        "result": finding.result,
        "message": finding.message,
        "severity": SEVERITY[finding.rule],
        "category": CATEGORY[finding.rule.value.partition(".")[0]],
        "source": SOURCE,
        "scored": True,
        "timestamp": first_seen,
        "resources": [finding.resource.ref()],
        "properties": {
            "atlas": ",".join(finding.atlas),
            "paths": ",".join(finding.paths),
            "mode": finding.mode.value,
        },
    }


def result_key(result: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    """The Finding.key of a result read back from the cluster; None if it is not mlgate's."""
    resources = result.get("resources") or []
    if result.get("source") != SOURCE or len(resources) != 1:
        return None
    r = resources[0]
    return (
        f"{r.get('kind')}/{r.get('namespace') or ''}/{r.get('name')}",
        str(r.get("uid") or ""),
        str(result.get("policy")),
        str(result.get("rule")),
    )


def first_seen(reports: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str, str], Any]:
    """When each result was first reported, so a result keeps its timestamp across passes (and
    an unchanged report is not rewritten)."""
    seen = {}
    for report in reports:
        for result in report.get("results") or []:
            key = result_key(result)
            if key is not None and result.get("timestamp"):
                seen[key] = result["timestamp"]
    return seen


def report_body(
    namespace: str,
    findings: list[Finding],
    passed: int,
    *,
    max_results: int,
    seen: Mapping[tuple[str, str, str, str], Any],
    now: datetime,
) -> dict[str, Any]:
    ordered = sorted(findings, key=_order)
    kept = ordered[:max_results]
    counts = Counter(f.result for f in findings)
    meta: dict[str, Any] = {"name": REPORT_NAME, "labels": dict(MANAGED_BY)}
    if namespace:
        meta["namespace"] = namespace
    omitted = len(ordered) - len(kept)
    meta["annotations"] = {OMITTED_ANNOTATION: str(omitted)}
    return {
        "apiVersion": API_VERSION,
        "kind": "PolicyReport" if namespace else "ClusterPolicyReport",
        "metadata": meta,
        "summary": {
            "pass": passed,
            "fail": counts["fail"],
            "warn": counts["warn"],
            "error": counts["error"],
            "skip": 0,
        },
        "results": [result_json(f, seen.get(f.key) or _timestamp(now)) for f in kept],
    }


def build_reports(
    outcome: AuditOutcome,
    now: datetime,
    previous: Iterable[Mapping[str, Any]] = (),
    max_results: int = DEFAULT_MAX_RESULTS,
) -> dict[str, dict[str, Any]]:
    """The report of every namespace the audit judged something in (CLUSTER for the cluster
    report), given the reports written before (for first-seen timestamps)."""
    seen = first_seen(previous)
    by_namespace: dict[str, list[Finding]] = {}
    for finding in outcome.findings:
        by_namespace.setdefault(finding.resource.namespace, []).append(finding)
    namespaces = set(by_namespace) | {ns for ns, n in outcome.passed.items() if n}
    return {
        ns: report_body(
            ns,
            by_namespace.get(ns, []),
            outcome.passed.get(ns, 0),
            max_results=max_results,
            seen=seen,
            now=now,
        )
        for ns in sorted(namespaces)
    }


def same_report(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether writing `wanted` would change what the cluster holds (no needless writes)."""
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    return bool(
        current.get("results") == wanted["results"]
        and current.get("summary") == wanted["summary"]
        and annotations.get(OMITTED_ANNOTATION)
        == wanted["metadata"]["annotations"][OMITTED_ANNOTATION]
    )
