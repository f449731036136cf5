"""`mlgate report` on report objects: rows, filters and the three formats."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mlgate.cluster_report import (
    EXIT_OK,
    EXIT_VIOLATIONS,
    Filters,
    exit_code,
    render_json,
    render_sarif,
    render_table,
    rows,
)
from mlgate.controller.audit import judge
from mlgate.controller.policy_reports import build_reports
from mlgate.engine.policy import Facts
from tests.unit.factories import deployment, policy
from tests.unit.test_audit import EXEMPT, compiled

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def reports() -> list[dict[str, Any]]:
    policies = (
        compiled(policy("digests", images={"requireDigest": True})),
        compiled(policy("soft", mode="Warn", egress={"allowHostNetwork": False})),
    )
    items = [
        deployment("api", image="nginx"),
        deployment("train", namespace="research", image="nginx"),
    ]
    items[1]["spec"]["template"]["spec"]["hostNetwork"] = True
    labels = {"mlgate.io/governed": "true"}
    outcome = judge(policies, items, lambda _: Facts(now=NOW, namespace_labels=labels), EXEMPT)
    found = list(build_reports(outcome, NOW).values())
    other = {"results": [{"policy": "kyverno-thing", "result": "fail", "source": "kyverno"}]}
    return [*found, other]


def test_rows_are_mlgates_results_only_and_filter_by_namespace_policy_and_rule() -> None:
    everything = rows(reports())
    assert [(r.namespace, r.name, r.policy, r.rule, r.result) for r in everything] == [
        ("ml-prod", "api", "digests", "images.digest", "fail"),
        ("research", "train", "digests", "images.digest", "fail"),
        ("research", "train", "soft", "egress.hostNetwork", "warn"),
    ]
    assert everything[0].atlas == ("AML.T0010", "AML.T0010.004")
    research = [r for r in everything if Filters(namespaces=frozenset({"research"})).keep(r)]
    assert len(research) == 2
    soft = [r for r in everything if Filters(policies=frozenset({"soft"})).keep(r)]
    assert exit_code(soft) == EXIT_OK  # warnings only
    digest = [r for r in everything if Filters(rules=frozenset({"images.digest"})).keep(r)]
    assert exit_code(digest) == EXIT_VIOLATIONS
    assert exit_code([]) == EXIT_OK


def test_table_json_and_sarif() -> None:
    selected = rows(reports())
    table = render_table(selected).splitlines()
    assert table[0].split() == [
        "NAMESPACE",
        "KIND",
        "NAME",
        "POLICY",
        "RULE",
        "RESULT",
        "SEVERITY",
        "ATLAS",
    ]
    assert table[1].split()[:6] == [
        "ml-prod",
        "Deployment",
        "api",
        "digests",
        "images.digest",
        "fail",
    ]
    assert render_table([]) == "no violations\n"
    document = json.loads(render_json(selected))
    assert document["summary"] == {"fail": 2, "warn": 1, "error": 0}
    assert document["results"][0]["atlas"] == ["AML.T0010", "AML.T0010.004"]
    sarif = json.loads(render_sarif(selected))
    run = sarif["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == [
        "egress.hostNetwork",
        "images.digest",
    ]
    first = run["results"][0]
    assert first["ruleId"] == "images.digest"
    assert run["tool"]["driver"]["rules"][first["ruleIndex"]]["id"] == "images.digest"
    assert first["level"] == "error"
    assert (
        first["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]
        == "Deployment/ml-prod/api"
    )
    assert run["invocations"][0]["exitCode"] == EXIT_VIOLATIONS
