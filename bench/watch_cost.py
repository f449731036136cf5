"""What mlgate's watches cost per real create: its CPU per request, dry-run vs real, per watch.

One local control plane (kube-apiserver + etcd, $KUBEBUILDER_ASSETS; no controller-manager, so a
create makes only the Deployment itself). For each configuration, `mlgate run` is started with
some of its kopf handlers left unregistered (by handler id prefix: a kind with no handler left
is not watched at all), and the load generator of bench/side_by_side.py creates the Deployment
of bench/workload.py, `c` requests in flight, alternating dry runs and real creates. mlgate's
CPU is read from /proc from before a cell until mlgate is idle again after it, so watch events
still queued when the load stops are counted. A dry run goes through both webhooks but is never
stored, so (real - dry run) is what the stored object costs mlgate: its watches. Creates in
mlgate's own namespace ("unjudged") never reach the webhook: mlgate's CPU per such create is its
watches' cost alone, without the noise of judging.

    KUBEBUILDER_ASSETS=... .venv/bin/python bench/watch_cost.py --seconds 3 --rounds 3

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import yaml
from procstat import cpu_seconds
from side_by_side import OWN, REPO, Load, _namespace, _pid_of, _wait_admission

from mlgate.cluster.client import KubeClient, login, resource_path
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.handlers import gpu_watches
from mlgate.controller.watch import PARTIAL_OBJECT
from mlgate.devcluster import LocalControlPlane
from mlgate.devrun import WEBHOOK_CONFIG_KINDS, MlgateProcess, stand_in_crds

# name -> watches left out: kopf handler id prefixes, or watch-<plural> for controller/watch.py
# (full-<plural>: that watch with whole objects instead of metadata only)
CONFIGS: dict[str, tuple[str, ...]] = {
    "all": (),
    "-owners": ("owners-",),  # before: kopf's owner-link handlers
    "-inventory": ("inventory-",),  # before: kopf's audit inventory handlers
    "-owners-inventory": ("owners-", "inventory-"),
    "-deployments": ("watch-deployments",),  # after: the metadata-only watch of Deployments
    "full-deployments": ("full-deployments",),  # after, but Deployments watched in full
}
BEFORE = "before:"  # a configuration run with the code of --before
CHILD = Path(__file__).with_name("watch_child.py")
# unjudged: real creates in mlgate's own namespace, never sent to its webhook (the webhook
# configurations exclude it): mlgate's CPU per create there is what its watches cost alone.
MODES = ("dry-run", "create", "unjudged")


class SkippingMlgate(MlgateProcess):
    def __init__(self, skip: tuple[str, ...], *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.skip = skip

    def command(self) -> list[str]:
        run = super().command()
        return [sys.executable, str(CHILD), ",".join(self.skip), *run[3:]]


def _idle(pid: int, timeout: float = 60.0) -> None:
    """Until `pid` uses under 2% of a core over half a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        used = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - used < 0.01:
            return


def measure(
    load: Load, pids: dict[str, int], namespace: str, dry_run: bool, c: int, seconds: float
) -> dict[str, float]:
    """CPU microseconds per request of each process over one cell, until mlgate is idle again
    (watch events still queued when the load stops are counted), and requests per second."""
    _idle(pids["mlgate"])
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = asyncio.run(load.run(namespace, dry_run, c, seconds))
    _idle(pids["mlgate"])
    if result["failures"]:  # counted in the requests: a loaded apiserver may time some out
        print(f"warning: failures {result['failures']}", flush=True)
    used = {n: (cpu_seconds(pid) - before[n]) * 1e6 / result["requests"] for n, pid in pids.items()}
    return used | {"rps": result["rps"]}


def _config(cp: LocalControlPlane, label: str, before: Path | None, work: Path) -> SkippingMlgate:
    name = label.removeprefix(BEFORE)
    path = str(before) if label.startswith(BEFORE) and before else None
    # The child imports mlgate from PYTHONPATH first: an older copy of operator/ for "before:".
    os.environ.pop("PYTHONPATH", None)
    if path:
        os.environ["PYTHONPATH"] = path
    log = work / f"{label.replace(':', '-')}.log"
    return SkippingMlgate(CONFIGS[name], cp.kubeconfig, log, webhook_config="mlgate-bench")


async def _list_cost(pids: dict[str, int]) -> tuple[list[dict[str, Any]], float, float]:
    """What the audit's listing costs per object: (objects, this process's µs, apiserver's µs)."""
    async with KubeClient(login()) as client:
        before, own = cpu_seconds(pids["apiserver"]), time.process_time()
        items = await client.list(resource_path("apps/v1", "deployments"))
        own = time.process_time() - own
        apiserver = cpu_seconds(pids["apiserver"]) - before
        meta = items[0]["metadata"]
        path = resource_path("apps/v1", "deployments", meta["namespace"], meta["name"])
        items[0] = await client.request("GET", path, accept=PARTIAL_OBJECT)
    return items, own * 1e6 / len(items), apiserver * 1e6 / len(items)


def _event_cost(obj: dict[str, Any], metadata_only: bool, rounds: int = 2000) -> float:
    """CPU µs of one watch event of `obj` in controller/watch.py: decoding and the GPU ledger."""
    watches = gpu_watches(cast(KubeClient, None), GpuLedger(), lambda *_: None)
    (deployments,) = [w for w in watches if w.plural == "deployments"]
    deployments.metadata_only = metadata_only
    line = json.dumps({"type": "MODIFIED", "object": obj}).encode()
    started = time.process_time()
    for _ in range(rounds):
        deployments._event(deployments._decode(line))
    return (time.process_time() - started) * 1e6 / rounds


def _median(cells: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in cells)


def run(
    labels: list[str], before: Path | None, seconds: float, rounds: int, c: int, work: Path
) -> None:
    with LocalControlPlane() as cp:
        cp.kubectl("apply", "-f", str(REPO / "crds"), check=True)
        cp.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(stand_in_crds()))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        namespaces = [_namespace(f"bench-{i}") for i in range(len(labels))]
        namespaces.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OWN}})
        cp.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(namespaces))
        cp.kubectl("apply", "-f", str(REPO / "examples/models"), check=True)
        cp.kubectl("apply", "-f", str(REPO / "examples/policies/production-ml.yaml"), check=True)
        load = Load(cp, work)
        pids = {"apiserver": _pid_of(cp, "kube-apiserver")}
        results: dict[str, dict[str, list[dict[str, float]]]] = {}
        for i, label in enumerate(labels):
            namespace = f"bench-{i}"
            with _config(cp, label, before, work) as process:
                assert process.process is not None
                pids["mlgate"] = process.process.pid
                _wait_admission(load, namespace, enforcing=True)
                asyncio.run(load.run(namespace, True, c, 1.0))  # warm connections and caches
                cells = results.setdefault(label, {mode: [] for mode in MODES})
                for _ in range(rounds):
                    for mode in MODES:
                        where = OWN if mode == "unjudged" else namespace
                        got = measure(load, pids, where, mode == "dry-run", c, seconds)
                        cells[mode].append(got)
                        print(
                            f"{label:26} {mode:7} c={c} {got['rps']:5.0f}/s  µs/req: mlgate "
                            f"{got['mlgate']:5.0f} apiserver {got['apiserver']:5.0f}",
                            flush=True,
                        )
            cp.kubectl("delete", WEBHOOK_CONFIG_KINDS, "mlgate-bench", "--ignore-not-found")
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        items, own, apiserver = asyncio.run(_list_cost(pids))
    print(f"\nmedians over {rounds} rounds, CPU µs per request (c={c}):")
    print(f"{'configuration':26} {'mlgate: dry-run':>15} {'create':>7} {'diff':>6}", end="")
    print(f" {'unjudged':>8}   {'apiserver: dry-run':>18} {'create':>7}")
    for label, cells in results.items():
        dry, real = _median(cells["dry-run"], "mlgate"), _median(cells["create"], "mlgate")
        print(f"{label:26} {dry:15.0f} {real:7.0f} {real - dry:6.0f}", end="")
        print(f" {_median(cells['unjudged'], 'mlgate'):8.0f}", end="")
        print(f"   {_median(cells['dry-run'], 'apiserver'):18.0f}", end="")
        print(f" {_median(cells['create'], 'apiserver'):7.0f}")
    print(
        f"listing {len(items)} Deployments (as an audit pass does): {own:.0f} µs per object in "
        f"the lister, {apiserver:.0f} µs in the apiserver"
    )
    for what, obj, metadata_only in (("metadata", items[0], True), ("whole", items[1], False)):
        size = len(json.dumps(obj))
        cost = _event_cost(obj, metadata_only)
        print(f"one watch event, {what} of a Deployment ({size} bytes): {cost:.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help=f"one of {', '.join(CONFIGS)}, prefixed {BEFORE!r} to run --before's code",
    )
    parser.add_argument("--before", type=Path, help="an older copy of operator/ to compare with")
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-c", type=int, default=8, help="requests in flight")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        labels = args.config or list(CONFIGS)
        for label in labels:
            if label.removeprefix(BEFORE) not in CONFIGS:
                parser.error(f"no configuration {label}")
        run(labels, args.before, args.seconds, args.rounds, args.c, Path(tmp))


if __name__ == "__main__":
    main()
