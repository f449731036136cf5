"""`mlgate report`: the cluster's current violations, read from mlgate's PolicyReports.

Parsing, filtering and rendering are pure functions of the report objects; `main` is the thin
shell that lists them from the cluster. Exit 0 when nothing matching is violated, 1 when there
are fail/error results, 2 when the cluster cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import kopf

from mlgate.cli import error, write
from mlgate.cluster.client import ApiError, KubeClient, login, resource_path
from mlgate.controller.policy_reports import API_VERSION, SOURCE
from mlgate.controller.report_writer import SELECTOR
from mlgate.engine.decisions import Rule
from mlgate.reports import JSON_FORMAT_VERSION, sarif_log

EXIT_OK, EXIT_VIOLATIONS, EXIT_UNREADABLE = 0, 1, 2
SARIF_LEVEL = {"fail": "error", "error": "error", "warn": "warning"}
_COLUMNS = ("NAMESPACE", "KIND", "NAME", "POLICY", "RULE", "RESULT", "SEVERITY", "ATLAS")


@dataclass(frozen=True, slots=True)
class Row:
    namespace: str
    kind: str
    name: str
    api_version: str
    policy: str
    rule: str
    result: str
    severity: str
    message: str
    atlas: tuple[str, ...]
    paths: tuple[str, ...]
    since: int  # Unix seconds the result was first reported


@dataclass(frozen=True, slots=True)
class Filters:
    namespaces: frozenset[str] = frozenset()
    policies: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()

    def keep(self, row: Row) -> bool:
        return (
            (not self.namespaces or row.namespace in self.namespaces)
            and (not self.policies or row.policy in self.policies)
            and (not self.rules or row.rule in self.rules)
        )


def _split(text: object) -> tuple[str, ...]:
    return tuple(p for p in str(text or "").split(",") if p)


def rows(reports: Iterable[Mapping[str, Any]]) -> list[Row]:
    """mlgate's non-passing results of every report, one row per workload, policy and rule."""
    found = []
    for report in reports:
        for result in report.get("results") or []:
            if result.get("source") != SOURCE or result.get("result") == "pass":
                continue
            properties = result.get("properties") or {}
            for resource in result.get("resources") or [{}]:
                found.append(
                    Row(
                        namespace=str(resource.get("namespace") or ""),
                        kind=str(resource.get("kind") or ""),
                        name=str(resource.get("name") or ""),
                        api_version=str(resource.get("apiVersion") or ""),
                        policy=str(result.get("policy") or ""),
                        rule=str(result.get("rule") or ""),
                        result=str(result.get("result") or ""),
                        severity=str(result.get("severity") or ""),
                        message=str(result.get("message") or ""),
                        atlas=_split(properties.get("atlas")),
                        paths=_split(properties.get("paths")),
                        since=int((result.get("timestamp") or {}).get("seconds") or 0),
                    )
                )
    return sorted(found, key=lambda r: (r.namespace, r.kind, r.name, r.policy, r.rule))


def exit_code(selected: list[Row]) -> int:
    return EXIT_VIOLATIONS if any(r.result in {"fail", "error"} for r in selected) else EXIT_OK


def render_table(selected: list[Row]) -> str:
    if not selected:
        return "no violations\n"
    table = [_COLUMNS] + [
        (
            r.namespace or "-",
            r.kind,
            r.name,
            r.policy,
            r.rule,
            r.result,
            r.severity,
            ",".join(r.atlas),
        )
        for r in selected
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    return "\n".join(lines) + "\n"


def render_json(selected: list[Row]) -> str:
    document = {
        "format": JSON_FORMAT_VERSION,
        "results": [
            {**asdict(r), "atlas": list(r.atlas), "paths": list(r.paths)} for r in selected
        ],
        "summary": {
            result: sum(r.result == result for r in selected)
            for result in ("fail", "warn", "error")
        },
    }
    return json.dumps(document, indent=2) + "\n"


def _known_rule(name: str) -> Rule | None:
    try:
        return Rule(name)
    except ValueError:
        return None


def render_sarif(selected: list[Row]) -> str:
    """The same SARIF as `mlgate check`, located at the workload (a logical location): there is
    no file in a cluster."""
    used = sorted({rule for r in selected if (rule := _known_rule(r.rule)) is not None})
    index = {rule.value: i for i, rule in enumerate(used)}
    results = []
    for r in selected:
        qualified = "/".join(filter(None, (r.kind, r.namespace, r.name)))
        entry: dict[str, Any] = {
            "ruleId": r.rule,
            "level": SARIF_LEVEL.get(r.result, "note"),
            "message": {"text": f"{qualified}: [{r.policy}] {r.rule}: {r.message}"},
            "locations": [
                {"logicalLocations": [{"fullyQualifiedName": qualified, "kind": "object"}]}
            ],
            "properties": {
                "policy": r.policy,
                "result": r.result,
                "severity": r.severity,
                "paths": list(r.paths),
                "atlas": list(r.atlas),
            },
        }
        if r.rule in index:
            entry["ruleIndex"] = index[r.rule]
        results.append(entry)
    return sarif_log(used, results, exit_code(selected))


RENDERERS: dict[str, Callable[[list[Row]], str]] = {
    "table": render_table,
    "json": render_json,
    "sarif": render_sarif,
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    add("-n", "--namespace", action="append", default=[], help="only this namespace (repeatable)")
    add("--policy", action="append", default=[], help="only this policy (repeatable)")
    add(
        "--rule",
        action="append",
        default=[],
        help="only this rule (repeatable), e.g. images.digest",
    )
    add("-o", "--output", choices=list(RENDERERS), default="table", help="default: table")


async def read_reports(namespaces: Iterable[str]) -> list[dict[str, Any]]:
    """mlgate's reports: per namespace asked for, else all of them and the cluster report."""
    selector = {"labelSelector": SELECTOR}
    async with KubeClient(login()) as client:
        wanted = sorted(set(namespaces))
        if wanted:
            found = []
            for ns in wanted:
                found += await client.list(
                    resource_path(API_VERSION, "policyreports", ns), selector
                )
            return found
        reports = await client.list(resource_path(API_VERSION, "policyreports"), selector)
        cluster = await client.list(resource_path(API_VERSION, "clusterpolicyreports"), selector)
        return reports + cluster


def main(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    try:
        reports = asyncio.run(read_reports(args.namespace))
    except ApiError as exc:
        hint = " (are the wgpolicyk8s.io PolicyReport CRDs installed?)" if exc.status == 404 else ""
        error(f"mlgate report: cannot read PolicyReports: {exc}{hint}")
        return EXIT_UNREADABLE
    except (kopf.LoginError, OSError, TimeoutError) as exc:
        error(f"mlgate report: cannot reach the cluster: {exc}")
        return EXIT_UNREADABLE
    filters = Filters(frozenset(args.namespace), frozenset(args.policy), frozenset(args.rule))
    selected = [r for r in rows(reports) if filters.keep(r)]
    write(sys.stdout, RENDERERS[args.output](selected))
    return exit_code(selected)
