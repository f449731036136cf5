"""The side-by-side tables of docs/benchmarks.md, from the results of one `make bench` run.

The section between the two markers is replaced; the rest of the page is kept.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

BEGIN = "<!-- side-by-side: written by bench/run.py, do not edit by hand -->"
END = "<!-- side-by-side: end -->"

Cell = dict[str, Any]


def _cells(results: list[Cell]) -> dict[tuple[str, str, int], Cell]:
    return {(r["config"], r["mode"], r["c"]): r for r in results}


def _cpu(cell: Cell, *names: str) -> float:
    """CPU microseconds per request of the named processes."""
    return sum(cell["cpu_s"].get(n, 0.0) for n in names) * 1e6 / max(cell["requests"], 1)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def apiserver_table(results: list[Cell]) -> list[str]:
    by = _cells(results)
    rows = [
        "| mode | c | p50 none / CEL / mlgate (ms) | added p50 CEL / mlgate (ms) "
        "| p99 none / CEL / mlgate (ms) | throughput none / CEL / mlgate (req/s) "
        "| mlgate throughput vs none / vs CEL | CPU per request none / CEL / mlgate (µs) "
        "| mlgate CPU vs none / vs CEL | new TLS conns to mlgate /s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (config, mode, c), none in by.items():
        if config != "none":
            continue
        cel, ml = by[("cel", mode, c)], by[("mlgate", mode, c)]
        cells = (none, cel, ml)
        # CPU of everything a create costs: apiserver, etcd and (for mlgate) the webhook.
        cpu = [_cpu(x, "apiserver", "etcd", "mlgate") for x in cells]
        conns = ml.get("new_connections")
        seconds = ml.get("seconds", 0.0)
        rate = f"{conns / seconds:.1f}" if conns is not None and seconds else "n/a"
        rows.append(
            f"| {mode} | {c} "
            f"| {none['p50_ms']:.2f} / {cel['p50_ms']:.2f} / {ml['p50_ms']:.2f} "
            f"| {cel['p50_ms'] - none['p50_ms']:+.2f} / {ml['p50_ms'] - none['p50_ms']:+.2f} "
            f"| {none['p99_ms']:.1f} / {cel['p99_ms']:.1f} / {ml['p99_ms']:.1f} "
            f"| {none['rps']:.0f} / {cel['rps']:.0f} / {ml['rps']:.0f} "
            f"| {_ratio(ml['rps'], none['rps'])} / {_ratio(ml['rps'], cel['rps'])} "
            f"| {cpu[0]:.0f} / {cpu[1]:.0f} / {cpu[2]:.0f} "
            f"| {_ratio(cpu[2], cpu[0])} / {_ratio(cpu[2], cpu[1])} | {rate} |"
        )
    return rows


def process_table(results: list[Cell]) -> list[str]:
    rows = [
        "| config | mode | c | apiserver | etcd | mlgate | load generator | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mlgate = f"{_cpu(r, 'mlgate'):.0f}" if "mlgate" in r["cpu_s"] else "-"
        rows.append(
            f"| {r['config']} | {r['mode']} | {r['c']} | {_cpu(r, 'apiserver'):.0f} "
            f"| {_cpu(r, 'etcd'):.0f} | {mlgate} | {_cpu(r, 'load-generator'):.0f} "
            f"| {sum(r['failures'].values()) if r['failures'] else 0} |"
        )
    return rows


def webhook_table(results: list[Cell]) -> list[str]:
    by = {r["server"]: r for r in results}
    floor = by["floor-json"]["cpu_us_per_request"]
    rows = [
        "| server (1 core, TLS, 8 kept-alive connections) | driven by | req/s | CPU µs/request "
        "| vs aiohttp+TLS+json.loads |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['server']} | {r.get('driver', 'wrk')} | {r['rps']:,.0f} "
            f"| {r['cpu_us_per_request']:.0f} "
            f"| {_ratio(r['cpu_us_per_request'], floor)} |"
        )
    return rows


def _targets(data: dict[str, Any]) -> list[str]:
    """The issue's targets, each judged on this run's numbers."""
    lines = []
    by = _cells(data.get("side_by_side", []))
    if by:
        none, cel, ml = (by[(c, "dry-run", 1)] for c in ("none", "cel", "mlgate"))
        added_cel = cel["p50_ms"] - none["p50_ms"]
        added_ml = ml["p50_ms"] - none["p50_ms"]
        ok = added_ml <= max(2 * added_cel, 0) or added_ml < 1.0
        lines.append(
            f"- added p50 at c=1 (dry run) at most 2x CEL's or under 1 ms: mlgate "
            f"{added_ml:+.2f} ms, CEL {added_cel:+.2f} ms: **{'met' if ok else 'not met'}**"
        )
        worst = min(
            (by[("mlgate", m, c)]["rps"] / by[("none", m, c)]["rps"], m, c)
            for (config, m, c) in by
            if config == "none"
        )
        lines.append(
            f"- throughput at least 0.8x of no policy: worst {worst[0]:.2f}x ({worst[1]}, "
            f"c={worst[2]}): **{'met' if worst[0] >= 0.8 else 'not met'}**"
        )
    hook = {r["server"]: r for r in data.get("webhook", [])}
    if hook:
        ratio = hook["mlgate"]["cpu_us_per_request"] / hook["floor-json"]["cpu_us_per_request"]
        lines.append(
            f"- webhook CPU per request at most 1.5x the aiohttp+TLS+JSON floor: {ratio:.2f}x: "
            f"**{'met' if ratio <= 1.5 else 'not met'}**"
        )
    engine = data.get("engine")
    if engine:
        rate = engine["decisions_per_s"]
        lines.append(
            f"- engine at least 25,000 decisions/s: {rate:,.0f}/s: "
            f"**{'met' if rate >= 25_000 else 'not met'}**"
        )
    check = data.get("check")
    if check:
        ratio = check["check_docs_per_cpu_s"] / check["loader_docs_per_cpu_s"]
        lines.append(
            f"- `mlgate check` at least the YAML parser's speed: {ratio:.2f}x: "
            f"**{'met' if ratio >= 1 else 'not met'}**"
        )
    return lines


def section(data: dict[str, Any]) -> str:
    load = os.getloadavg()[0]
    out = [
        BEGIN,
        "## Side by side: no policy, ValidatingAdmissionPolicy (CEL), mlgate",
        "",
        f"Last `make bench`: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores, load average {load:.1f} at the end of the run, "
        f"Python {platform.python_version()} ({sys.platform}). On a shared machine compare "
        "the ratios of one run, not absolute numbers across runs.",
        "",
        "### Targets (issue 16), judged on this run",
        "",
        *_targets(data),
    ]
    if data.get("side_by_side"):
        out += [
            "",
            "### Through the apiserver (bench/side_by_side.py)",
            "",
            "Creates of a 3-container Deployment (bench/workload.py) with `c` requests in "
            "flight; latencies and throughputs are medians over the rounds, CPU per request "
            "over all their requests. *Added* is the p50 over no policy. CPU per request adds "
            "kube-apiserver, etcd and mlgate (process CPU time from /proc over the cell). New "
            "TLS connections "
            "are the SYNs to mlgate's port during the cell (iptables counter, root only).",
            "",
            *apiserver_table(data["side_by_side"]),
            "",
            "CPU µs per request of each process (the load generator is this benchmark's own "
            "Python client, reported so its share of the 2 cores is visible):",
            "",
            *process_table(data["side_by_side"]),
        ]
    if data.get("webhook"):
        out += [
            "",
            "### The webhook alone (bench/webhook_cpu.py)",
            "",
            "The same review (6.9 KB, `managedFields` included) posted by wrk; server CPU "
            "time per request. `floor-constant` answers without reading the body, `floor-json` "
            "after `json.loads` of it: the floor the target refers to.",
            "",
            *webhook_table(data["webhook"]),
        ]
    if data.get("engine"):
        e = data["engine"]
        out += [
            "",
            "### Engine (bench/engine_bench.py)",
            "",
            "| review | decisions/s | json.loads/s of it | decisions vs json.loads | "
            "decode + decide /s |",
            "|---|---|---|---|---|",
            f"| {e['review_bytes']:,} B | {e['decisions_per_s']:,.0f} "
            f"| {e['json_loads_per_s']:,.0f} "
            f"| {_ratio(e['decisions_per_s'], e['json_loads_per_s'])} "
            f"| {e['decode_and_decide_per_s']:,.0f} |",
        ]
    if data.get("check"):
        c = data["check"]
        out += [
            "",
            "### `mlgate check` (bench/check_throughput.py)",
            "",
            "Documents per CPU-second (steadier than wall time on a shared machine): the whole "
            "`mlgate check` process, start-up included, against PyYAML's C loader alone on the "
            "same file.",
            "",
            "| documents | mlgate check docs/s (wall) | mlgate check docs/CPU-s "
            "| C loader alone docs/CPU-s | ratio | start-up (1 document, wall) | peak RSS |",
            "|---|---|---|---|---|---|---|",
            f"| {c['docs']:,} | {c['check_docs_per_s']:,.0f} | {c['check_docs_per_cpu_s']:,.0f} "
            f"| {c['loader_docs_per_cpu_s']:,.0f} "
            f"| {_ratio(c['check_docs_per_cpu_s'], c['loader_docs_per_cpu_s'])} "
            f"| {c['startup_s']:.2f} s | {c['peak_rss_mib']:.0f} MiB |",
        ]
    out.append(END)
    return "\n".join(out) + "\n"


def write(page: Path, data: dict[str, Any]) -> None:
    text = page.read_text() if page.exists() else "# Benchmarks\n"
    new = section(data)
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text)
    else:
        text = text.rstrip("\n") + "\n\n" + new
    page.write_text(text)
