"""What mlgate's watches cost per real create: its CPU per request, dry-run vs real, per watch.

One local control plane (kube-apiserver + etcd, $KUBEBUILDER_ASSETS; no controller-manager, so a
create makes only the Deployment itself). For each configuration, `mlgate run` is started with
some of its kopf handlers left unregistered (by handler id prefix: a kind with no handler left
is not watched at all), and the load generator of bench/side_by_side.py creates the Deployment
of bench/workload.py, `c` requests in flight, alternating dry runs and real creates. mlgate's
CPU is read from /proc from before a cell until mlgate is idle again after it, so watch events
still queued when the load stops are counted. A dry run goes through both webhooks but is never
stored, so (real - dry run) is what the stored object costs mlgate: its watches.

    KUBEBUILDER_ASSETS=... .venv/bin/python bench/watch_cost.py --seconds 3 --rounds 3

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kopf
import yaml
from procstat import cpu_seconds
from side_by_side import OWN, REPO, Load, _namespace, _wait_admission

from mlgate import cli
from mlgate.devcluster import LocalControlPlane
from mlgate.devrun import WEBHOOK_CONFIG_KINDS, MlgateProcess, stand_in_crds

# name -> watches left out: kopf handler id prefixes, or watch-<plural> for controller/watch.py
CONFIGS: dict[str, tuple[str, ...]] = {
    "all": (),
    "-owners": ("owners-",),  # before: kopf's owner-link handlers
    "-inventory": ("inventory-",),  # before: kopf's audit inventory handlers
    "-owners-inventory": ("owners-", "inventory-"),
    "-deployments": ("watch-deployments",),  # after: the metadata-only watch of Deployments
}
CHILD = "--child-skip"


def _child(skip: Sequence[str], argv: list[str]) -> int:
    """`mlgate run` with the watches `skip` names not started."""
    real = kopf.on.event

    def event(*args: Any, id: str | None = None, **kwargs: Any) -> Any:
        if id is not None and any(id.startswith(p) for p in skip):
            return lambda fn: fn
        return real(*args, id=id, **kwargs)

    kopf.on.event = event
    if importlib.util.find_spec("mlgate.controller.watch") is not None:
        watch = importlib.import_module("mlgate.controller.watch")
        run = watch.ListWatch.run

        async def skipping(self: Any) -> None:
            if f"watch-{self.plural}" in skip:
                self.synced.set()
                return
            await run(self)

        watch.ListWatch.run = skipping
    return cli.main(argv)


class SkippingMlgate(MlgateProcess):
    def __init__(self, skip: tuple[str, ...], *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.skip = skip

    def command(self) -> list[str]:
        run = super().command()
        return [sys.executable, __file__, CHILD, ",".join(self.skip), *run[3:]]


def _idle(pid: int, timeout: float = 60.0) -> None:
    """Until `pid` uses under 2% of a core over half a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        used = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - used < 0.01:
            return


def measure(load: Load, pid: int, namespace: str, dry_run: bool, c: int, seconds: float) -> float:
    """mlgate's CPU microseconds per request over one cell, until it is idle again."""
    _idle(pid)
    before = cpu_seconds(pid)
    result = asyncio.run(load.run(namespace, dry_run, c, seconds))
    _idle(pid)
    if result["failures"]:
        raise SystemExit(f"failures: {result['failures']}")
    return (cpu_seconds(pid) - before) * 1e6 / result["requests"]


def run(configs: list[str], seconds: float, rounds: int, c: int, work: Path) -> None:
    with LocalControlPlane() as cp:
        cp.kubectl("apply", "-f", str(REPO / "crds"), check=True)
        cp.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(stand_in_crds()))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        namespaces = [_namespace(f"bench-{name}") for name in configs]
        namespaces.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OWN}})
        cp.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(namespaces))
        cp.kubectl("apply", "-f", str(REPO / "examples/models"), check=True)
        cp.kubectl("apply", "-f", str(REPO / "examples/policies/production-ml.yaml"), check=True)
        load = Load(cp, work)
        results: dict[str, dict[str, list[float]]] = {}
        for name in configs:
            process = SkippingMlgate(
                CONFIGS[name], cp.kubeconfig, work / f"{name}.log", webhook_config="mlgate-bench"
            )
            namespace = f"bench-{name}"
            with process:
                assert process.process is not None
                pid = process.process.pid
                _wait_admission(load, namespace, enforcing=True)
                asyncio.run(load.run(namespace, True, c, 1.0))  # warm connections and caches
                cells = results.setdefault(name, {"dry-run": [], "create": []})
                for _ in range(rounds):
                    for mode in ("dry-run", "create"):
                        us = measure(load, pid, namespace, mode == "dry-run", c, seconds)
                        cells[mode].append(us)
                        print(f"{name:18} {mode:7} c={c} mlgate {us:6.0f} µs/request", flush=True)
            cp.kubectl("delete", WEBHOOK_CONFIG_KINDS, "mlgate-bench", "--ignore-not-found")
        print("\nmedian mlgate CPU per request (µs): config, dry-run, create, create - dry-run")
        for name, cells in results.items():
            dry, real = statistics.median(cells["dry-run"]), statistics.median(cells["create"])
            print(f"{name:18} {dry:6.0f} {real:6.0f} {real - dry:6.0f}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == CHILD:
        skip = tuple(p for p in sys.argv[2].split(",") if p)
        sys.exit(_child(skip, sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", choices=list(CONFIGS), default=[])
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-c", type=int, default=8, help="requests in flight")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args.config or list(CONFIGS), args.seconds, args.rounds, args.c, Path(tmp))


if __name__ == "__main__":
    main()
