"""`mlgate check` reports: text for people, JSON for scripts, SARIF for code-scanning UIs.

Each renderer is a pure function of the check's outcome, so the formats are tested directly.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlgate import __version__
from mlgate.check import Outcome, Result, Status
from mlgate.engine.decisions import ATLAS, OWASP, Mode, Rule, Violation
from mlgate.manifests import STDIN_NAME

PROJECT_URL = "https://github.com/mlgate/mlgate"
RULES_URL = f"{PROJECT_URL}/blob/main/docs/rules.md"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_STDIN_URI = "stdin"
JSON_FORMAT_VERSION = 1

MODE_LABELS = {Mode.ENFORCE: "DENY", Mode.WARN: "WARN", Mode.AUDIT: "AUDIT"}
SARIF_LEVELS = {Mode.ENFORCE: "error", Mode.WARN: "warning", Mode.AUDIT: "note"}

RULE_DESCRIPTIONS: dict[Rule, str] = {
    Rule.IMAGES_REGISTRY: "Container images must come from an allowed registry.",
    Rule.IMAGES_DIGEST: "Container images must be pinned by sha256 digest.",
    Rule.IMAGES_TAG: "Container images must not use a disallowed tag such as latest.",
    Rule.IMAGES_SIGNATURE: "Container images must carry a cosign signature by a trusted key.",
    Rule.MODELS_APPROVAL: "Every model the workload loads must match a valid ApprovedModel.",
    Rule.MODELS_REFERENCE: "The workload must declare the model it serves or trains.",
    Rule.MODELS_INDIRECT_REFERENCE: "Model env must not come from envFrom or valueFrom.",
    Rule.MODELS_ENDPOINT: "Model clients must not be pointed at a server the policy disallows.",
    Rule.MODELS_IMMUTABLE: "A model reference must pin one revision of the model's content.",
    Rule.MODELS_VERIFIER: "A model downloaded into a pod must be verified before it is served.",
    Rule.GPU_MAX_PER_POD: "A pod must not request more GPUs than the per-pod limit.",
    Rule.GPU_MAX_PER_WORKLOAD: "A workload must not request more GPUs in total than its limit.",
    Rule.GPU_NAMESPACE_QUOTA: "A namespace must stay within its GPU quota.",
    Rule.GPU_PRODUCT: "GPU pods must select an allowed GPU product.",
    Rule.EGRESS_HOST_NETWORK: "Pods must not use the node's network (hostNetwork).",
    Rule.EGRESS_HOST_PID: "Pods must not share the node's process namespace (hostPID).",
    Rule.EGRESS_HOST_IPC: "Pods must not share the node's IPC namespace (hostIPC).",
    Rule.EGRESS_PRIVILEGED: "Containers must not be privileged under egress limits.",
    Rule.EGRESS_CAPABILITIES: "Containers must not add NET_ADMIN, NET_RAW or SYS_ADMIN.",
    Rule.EGRESS_SECONDARY_NETWORK: "Pods must not attach Multus secondary networks.",
    Rule.EGRESS_NETWORK_POLICY: "NetworkPolicies must not widen the managed egress limits.",
    Rule.WORKLOAD_UNSUPPORTED: "Objects that run containers must be of a kind mlgate can judge.",
    Rule.WORKLOAD_RUNTIME: "The runtime or config a workload names must exist to be judged.",
    Rule.POLICY_INVALID: "A policy with no valid version in force denies what it governs.",
    Rule.LLM_GUARDRAIL: "An LLM must be served behind a guardrail the policy accepts.",
    Rule.LLM_DIRECT_EXPOSURE: "Nothing outside the cluster may reach an LLM around its guardrail.",
    Rule.LLM_RATE_LIMIT: "An LLM's route must carry a (token) rate limit.",
}


def _subject(result: Result) -> str:
    name = result.name or "(unnamed)"
    return (
        f"{result.kind} {result.namespace}/{name}" if result.namespace else f"{result.kind} {name}"
    )


# ---------------------------------------------------------------------------------------------
# Text


def _violation_line(v: Violation) -> str:
    ids = [f"ATLAS {', '.join(v.atlas)}"] if v.atlas else []
    ids += [f"OWASP {', '.join(v.owasp)}"] if v.owasp else []
    suffix = f" ({'; '.join(ids)})" if ids else ""
    return f"  {MODE_LABELS[v.mode]:<5} {v.describe()}{suffix}"


def _text_entry(result: Result) -> Iterator[str]:
    ref = result.ref
    yield f"{ref.location} ({ref.label}) {_subject(result)}"
    yield from map(_violation_line, result.decision.violations)
    for note in result.decision.notes:
        yield f"  note  {note}"


def _plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else words or word + 's'}"


_LISTED_KINDS = 8  # a real tree holds dozens of kinds; the summary stays one readable line


def _kinds(results: list[Result]) -> str:
    """The kinds of `results`, most frequent first, the rest counted."""
    kinds = [kind for kind, _ in Counter(r.kind or "(no kind)" for r in results).most_common()]
    shown = ", ".join(sorted(kinds[:_LISTED_KINDS]))
    rest = len(kinds) - _LISTED_KINDS
    return shown + (f" and {_plural(rest, 'more kind')}" if rest > 0 else "")


def _statuses(results: list[Result], always: Status | None = None) -> str:
    return ", ".join(
        f"{n} {status.value}"
        for status in (Status.DENIED, Status.WARNED, Status.AUDITED, Status.COMPLIANT)
        if (n := sum(1 for r in results if r.status is status)) or status is always
    )


def summary_line(outcome: Outcome) -> str:
    """Workloads, other judged documents (NetworkPolicies, unknown kinds carrying containers)
    and skipped documents, each counted apart."""
    skipped = [r for r in outcome.results if r.status is Status.SKIPPED]
    judged = [r for r in outcome.results if r.status is not Status.SKIPPED]
    workloads = [r for r in judged if r.workload]
    others = [r for r in judged if not r.workload]
    policies = _plural(len(outcome.policies), "policy", "policies")
    approvals = f" and {_plural(outcome.approvals, 'approved model')}" if outcome.approvals else ""
    line = f"mlgate: {_plural(len(workloads), 'workload')} checked against {policies}{approvals}"
    line += f": {_statuses(workloads, Status.COMPLIANT)}"
    if others:
        line += f"; {_plural(len(others), 'other document')} judged ({_kinds(others)}): "
        line += _statuses(others)
    if skipped:
        line += f"; {_plural(len(skipped), 'document')} skipped, not workloads ({_kinds(skipped)})"
    if not outcome.policies:
        line += "; no policies given (-p), so nothing was enforced"
    return line


def render_text(outcome: Outcome) -> str:
    """Workloads with violations or notes, one line per finding, then a summary line."""
    lines: list[str] = []
    for result in outcome.results:
        if result.status is not Status.SKIPPED and (
            result.decision.violations or result.decision.notes
        ):
            lines.extend(_text_entry(result))
    if lines:
        lines.append("")
    lines.append(summary_line(outcome))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# JSON


def _violation_json(v: Violation) -> dict[str, Any]:
    return {
        "policy": v.policy,
        "mode": v.mode.value,
        "rule": v.rule.value,
        "path": v.path,
        "message": v.message,
        "atlas": list(v.atlas),
        "owasp": list(v.owasp),
    }


def _result_json(result: Result) -> dict[str, Any]:
    ref = result.ref
    return {
        "file": ref.source,
        "document": ref.document,
        "item": ref.item,
        "line": ref.line,
        "apiVersion": result.api_version,
        "kind": result.kind,
        "namespace": result.namespace,
        "name": result.name,
        "status": result.status.value,
        "allowed": result.decision.allowed,
        "violations": [_violation_json(v) for v in result.decision.violations],
        "notes": list(result.decision.notes),
    }


def render_json(outcome: Outcome) -> str:
    """Every document judged or skipped, in input order; the shape is versioned by `format`."""
    summary: dict[str, Any] = {
        "documents": len(outcome.results),
        "workloads": sum(
            1 for r in outcome.results if r.workload and r.status is not Status.SKIPPED
        ),
    }
    summary.update({status.value: outcome.count(status) for status in Status})
    summary.update(
        policies=list(outcome.policies),
        approvedModels=outcome.approvals,
        exitCode=outcome.exit_code,
    )
    report = {
        "format": JSON_FORMAT_VERSION,
        "tool": {"name": "mlgate", "version": __version__},
        "results": [_result_json(r) for r in outcome.results],
        "summary": summary,
    }
    return json.dumps(report, indent=2) + "\n"


# ---------------------------------------------------------------------------------------------
# SARIF 2.1.0


def artifact_uri(source: str, root: Path) -> str:
    """A URI relative to `root` (the repository, for code scanning) when the file is under it."""
    if source == STDIN_NAME:
        return SARIF_STDIN_URI
    path = Path(source).resolve()
    try:
        return quote(path.relative_to(root.resolve()).as_posix())
    except ValueError:
        return path.as_uri()


def _rule_json(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.value,
        "name": "".join(part.capitalize() for part in rule.value.replace(".", " ").split()),
        "shortDescription": {"text": RULE_DESCRIPTIONS.get(rule, rule.value)},
        "helpUri": f"{RULES_URL}#{rule.value.replace('.', '').lower()}",
        "properties": {"tags": ["security", *ATLAS[rule], *OWASP[rule]]},
    }


def _sarif_result(result: Result, v: Violation, index: dict[Rule, int], uri: str) -> dict[str, Any]:
    qualified = "/".join(filter(None, (result.kind, result.namespace, result.name)))
    return {
        "ruleId": v.rule.value,
        "ruleIndex": index[v.rule],
        "level": SARIF_LEVELS[v.mode],
        "message": {"text": f"{_subject(result)}: {v.describe()}"},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": uri},
                    "region": {"startLine": max(1, result.ref.line)},
                },
                "logicalLocations": [
                    {
                        "fullyQualifiedName": qualified,
                        "kind": "object",
                    }
                ],
            }
        ],
        "properties": {
            "policy": v.policy,
            "mode": v.mode.value,
            "path": v.path,
            "document": result.ref.document,
            "atlas": list(v.atlas),
            "owasp": list(v.owasp),
        },
    }


def sarif_log(rules: list[Rule], results: list[dict[str, Any]], exit_code: int) -> str:
    """A SARIF 2.1.0 log of one mlgate run: the rules used, in `ruleIndex` order, and results."""
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "mlgate",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": PROJECT_URL,
                        "rules": [_rule_json(rule) for rule in rules],
                    }
                },
                "results": results,
                "invocations": [{"executionSuccessful": True, "exitCode": exit_code}],
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


def render_sarif(outcome: Outcome, root: Path) -> str:
    """One run; a result per violation, located at its document's first line."""
    used = sorted({v.rule for r in outcome.results for v in r.decision.violations})
    index = {rule: i for i, rule in enumerate(used)}
    results = [
        _sarif_result(r, v, index, artifact_uri(r.ref.source, root))
        for r in outcome.results
        for v in r.decision.violations
    ]
    return sarif_log(used, results, outcome.exit_code)
