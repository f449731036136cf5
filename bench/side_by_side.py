"""Creates through the real apiserver: no policy, a ValidatingAdmissionPolicy (CEL), mlgate.

One local control plane (kube-apiserver + etcd on loopback, $KUBEBUILDER_ASSETS). The load
generator (this process: asyncio + a pooled aiohttp client with a client certificate, its own
CPU reported) creates the Deployment of bench/workload.py with `c` requests in flight, dry-run
(`?dryRun=All`) and real, a few seconds per cell, in rounds (medians are reported):

- **none**: no admission policy at all;
- **cel**: a ValidatingAdmissionPolicy with the example policy's image and GPU rules for
  Deployments (registries, digests, no `latest`, GPUs per pod and per workload, GPU products,
  no host namespaces), bound with `Deny`;
- **mlgate**: `mlgate run` (mlgate.devrun.MlgateProcess) with the example ClusterMLPolicy and
  approved models, registered as its validating and mutating webhooks.

Per cell: p50/p99 latency, throughput, CPU seconds used by kube-apiserver, etcd and mlgate over
the cell (/proc), the generator's own CPU, and, for mlgate, the TCP connections the apiserver
opened to the webhook port (SYNs counted by an iptables rule when run as root; else not shown).
Each configuration is checked first: the CEL policy and mlgate must deny a noncompliant
Deployment and allow the benchmark's one, so a table can never measure a policy doing nothing.

    KUBEBUILDER_ASSETS=... .venv/bin/python bench/side_by_side.py --seconds 2 --rounds 3 --json out
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import workload
import yaml
from procstat import cpu_seconds

from mlgate.devcluster import LocalControlPlane
from mlgate.devrun import WEBHOOK_CONFIG_KINDS, MlgateProcess, stand_in_crds

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)
MODES = ("dry-run", "create")
GOVERNED = {"mlgate.io/governed": "true"}
OWN = "mlgate-system"
_CONTAINERS = (
    "object.spec.template.spec.containers + "
    "(has(object.spec.template.spec.initContainers) ? "
    "object.spec.template.spec.initContainers : [])"
)
_GPUS = (
    "has(c.resources) && has(c.resources.limits) && 'nvidia.com/gpu' in c.resources.limits ? "
    "quantity(string(c.resources.limits['nvidia.com/gpu'])).asInteger() : 0"
)
# The example policy's (examples/policies/production-ml.yaml) image and GPU rules, in CEL.
CEL_RULES = [
    (
        "variables.containers.all(c, c.image.startsWith('registry.example.com/ml/') || "
        "c.image.startsWith('ghcr.io/acme/'))",
        "image from a registry outside the allowed list",
    ),
    ("variables.containers.all(c, c.image.contains('@sha256:'))", "image not pinned by digest"),
    (
        "variables.containers.all(c, !c.image.split('@')[0].endsWith(':latest'))",
        "image tag latest",
    ),
    ("variables.gpus.all(g, g <= 8)", "more than 8 GPUs per pod"),
    (
        "variables.gpus.sum() * (has(object.spec.replicas) ? object.spec.replicas : 1) <= 16",
        "more than 16 GPUs per workload",
    ),
    (
        "variables.gpus.sum() == 0 || (has(object.spec.template.spec.nodeSelector) && "
        "object.spec.template.spec.nodeSelector[?'nvidia.com/gpu.product'].orValue('') in "
        "['NVIDIA-A100-SXM4-80GB', 'NVIDIA-H100-80GB-HBM3'])",
        "GPU product not allowed",
    ),
    (
        "!(has(object.spec.template.spec.hostNetwork) && object.spec.template.spec.hostNetwork)"
        " && !(has(object.spec.template.spec.hostPID) && object.spec.template.spec.hostPID)"
        " && !(has(object.spec.template.spec.hostIPC) && object.spec.template.spec.hostIPC)",
        "host namespaces",
    ),
]
CEL_POLICY = "bench-ml-images-gpu"


def cel_policy() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": CEL_POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": GOVERNED},
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                    }
                ],
            },
            "variables": [
                {"name": "containers", "expression": _CONTAINERS},
                {"name": "gpus", "expression": f"variables.containers.map(c, {_GPUS})"},
            ],
            "validations": [{"expression": e, "message": m} for e, m in CEL_RULES],
        },
    }


def cel_binding() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": CEL_POLICY},
        "spec": {"policyName": CEL_POLICY, "validationActions": ["Deny"]},
    }


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": GOVERNED}}


class Load:
    """The load generator: POSTs Deployments to the apiserver, `c` in flight at a time."""

    def __init__(self, cp: LocalControlPlane, directory: Path) -> None:
        cert, key = cp.client_cert("bench-admin", ["system:masters"])
        assert cp.ca_cert_path is not None
        self.context = ssl.create_default_context(cafile=str(cp.ca_cert_path))
        self.context.load_cert_chain(str(cert), str(key))
        self.server = cp.server
        self.names = itertools.count()

    def body(self, namespace: str, noncompliant: bool = False) -> tuple[str, bytes]:
        name = f"bench-{next(self.names)}"
        obj = workload.deployment(name, namespace)
        if noncompliant:
            obj["spec"]["template"]["spec"]["containers"][0]["image"] = "docker.io/nginx:latest"
        return name, json.dumps(obj).encode()

    async def run(self, namespace: str, dry_run: bool, c: int, seconds: float) -> dict[str, Any]:
        url = f"{self.server}/apis/apps/v1/namespaces/{namespace}/deployments"
        params = {"dryRun": "All"} if dry_run else {}
        latencies: list[float] = []
        failures: dict[int, int] = {}
        connector = aiohttp.TCPConnector(ssl=self.context, limit=c)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker(until: float) -> None:
                while time.perf_counter() < until:
                    _, body = self.body(namespace)
                    started = time.perf_counter()
                    async with session.post(url, data=body, params=params, headers=headers) as r:
                        await r.read()
                    latencies.append(time.perf_counter() - started)
                    if r.status != 201:
                        failures[r.status] = failures.get(r.status, 0) + 1

            warm = time.perf_counter() + 0.5
            await asyncio.gather(*(worker(warm) for _ in range(c)))
            latencies.clear()
            started = time.perf_counter()
            await asyncio.gather(*(worker(started + seconds) for _ in range(c)))
            elapsed = time.perf_counter() - started
        ms = sorted(x * 1000 for x in latencies)
        q = statistics.quantiles(ms, n=100) if len(ms) > 1 else ms * 99
        return {
            "requests": len(ms),
            "seconds": elapsed,
            "rps": len(ms) / elapsed,
            "p50_ms": q[49],
            "p99_ms": q[98],
            "failures": failures,
        }

    async def admitted(self, namespace: str, noncompliant: bool) -> bool:
        url = f"{self.server}/apis/apps/v1/namespaces/{namespace}/deployments?dryRun=All"
        _, body = self.body(namespace, noncompliant)
        connector = aiohttp.TCPConnector(ssl=self.context)
        async with aiohttp.ClientSession(connector=connector) as session:
            headers = {"Content-Type": "application/json"}
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                return r.status == 201


class SynCounter:
    """New TCP connections to a port, counted by an iptables rule (root only), else None."""

    def __init__(self, port: int) -> None:
        self.rule = ["INPUT", "-p", "tcp", "--dport", str(port), "--syn"]
        self.rule += ["-m", "comment", "--comment", f"mlgate-bench-{os.getpid()}"]
        self.enabled = os.geteuid() == 0 and shutil.which("iptables") is not None
        if self.enabled:
            done = subprocess.run(["iptables", "-I", *self.rule], capture_output=True, check=False)
            self.enabled = done.returncode == 0

    def count(self) -> int | None:
        if not self.enabled:
            return None
        out = subprocess.run(
            ["iptables", "-L", "INPUT", "-v", "-x", "-n"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        comment = self.rule[-1]
        for line in out.splitlines():
            if comment in line:
                return int(line.split()[0])
        return None

    def close(self) -> None:
        if self.enabled:
            subprocess.run(["iptables", "-D", *self.rule], capture_output=True, check=False)


def _pid_of(cp: LocalControlPlane, name: str) -> int:
    for pid in cp.pids:
        if Path(f"/proc/{pid}/comm").read_text().strip() == name:
            return pid
    raise SystemExit(f"no {name} process in the control plane")


def _wait_admission(load: Load, namespace: str, enforcing: bool) -> None:
    """Until the apiserver enforces (or stops enforcing) the configuration under test."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        denied = not asyncio.run(load.admitted(namespace, noncompliant=True))
        if denied == enforcing and asyncio.run(load.admitted(namespace, noncompliant=False)):
            return
        time.sleep(0.5)
    raise SystemExit(f"{namespace}: the policy under test is {'not ' * enforcing}enforcing")


def _quiesce(pids: dict[str, int], timeout: float = 120.0) -> None:
    """Until every measured process is idle (below 10% of a core over a second): mlgate's
    start-up audit pass of the Deployments created so far must not land in a cell."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = {pid: cpu_seconds(pid) for pid in pids.values()}
        time.sleep(1.0)
        if all(cpu_seconds(pid) - used < 0.1 for pid, used in before.items()):
            return
    print(f"warning: still busy after {timeout:g}s; measuring anyway", flush=True)


def cells(
    load: Load,
    config: str,
    seconds: float,
    rounds: int,
    pids: dict[str, int],
    syns: SynCounter | None = None,
) -> Iterator[dict[str, Any]]:
    """Every (mode, concurrency) cell of one configuration, `rounds` times over: medians of the
    rounds' latencies and throughputs, CPU and connections summed over all their requests."""
    namespace = f"bench-{config}"
    _quiesce(pids)
    asyncio.run(load.run(namespace, True, 8, 2.0))  # warm caches, connections, the JIT of CEL
    measured: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for mode, c in itertools.product(MODES, CONCURRENCY):
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            own = time.process_time()
            opened = syns.count() if syns else None
            result = asyncio.run(load.run(namespace, mode == "dry-run", c, seconds))
            cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            cpu["load-generator"] = time.process_time() - own
            result |= {"config": config, "mode": mode, "c": c, "cpu_s": cpu}
            if syns is not None and opened is not None:
                result["new_connections"] = (syns.count() or 0) - opened
            print(_line(result), flush=True)
            measured.setdefault((mode, c), []).append(result)
    for runs in measured.values():
        yield _combine(runs)


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = runs[0]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    failures: dict[int, int] = {}
    for r in runs:
        for status, count in r["failures"].items():
            failures[status] = failures.get(status, 0) + count
    combined = {key: first[key] for key in ("config", "mode", "c")} | {
        "rounds": len(runs),
        "requests": sum(r["requests"] for r in runs),
        "seconds": sum(r["seconds"] for r in runs),
        "rps": median("rps"),
        "p50_ms": median("p50_ms"),
        "p99_ms": median("p99_ms"),
        "cpu_s": {name: sum(r["cpu_s"][name] for r in runs) for name in first["cpu_s"]},
        "failures": failures,
    }
    if "new_connections" in first:
        combined["new_connections"] = sum(r["new_connections"] for r in runs)
    return combined


def _line(r: dict[str, Any]) -> str:
    cpu = " ".join(f"{k} {v * 1e6 / r['requests']:.0f}µs" for k, v in r["cpu_s"].items())
    conns = f" conns {r['new_connections']}" if "new_connections" in r else ""
    fails = f" FAILED {r['failures']}" if r["failures"] else ""
    return (
        f"{r['config']:6} {r['mode']:7} c={r['c']:<2} {r['rps']:7.0f}/s "
        f"p50 {r['p50_ms']:6.2f} ms p99 {r['p99_ms']:6.2f} ms cpu/req: {cpu}{conns}{fails}"
    )


def run(seconds: float, rounds: int, work: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with LocalControlPlane() as cp:
        cp.kubectl("apply", "-f", str(REPO / "crds"), check=True)
        cp.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(stand_in_crds()))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        namespaces = [_namespace(f"bench-{c}") for c in ("none", "cel", "mlgate")]
        namespaces.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OWN}})
        cp.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(namespaces))
        cp.kubectl("apply", "-f", str(REPO / "examples/models"), check=True)
        cp.kubectl("apply", "-f", str(REPO / "examples/policies/production-ml.yaml"), check=True)
        load = Load(cp, work)
        pids = {"apiserver": _pid_of(cp, "kube-apiserver"), "etcd": _pid_of(cp, "etcd")}

        _wait_admission(load, "bench-none", enforcing=False)
        results += cells(load, "none", seconds, rounds, pids)
        docs = yaml.safe_dump_all([cel_policy(), cel_binding()])
        cp.kubectl("apply", "-f", "-", check=True, input=docs)
        _wait_admission(load, "bench-cel", enforcing=True)
        results += cells(load, "cel", seconds, rounds, pids)
        kinds = "validatingadmissionpolicybinding,validatingadmissionpolicy"
        cp.kubectl("delete", kinds, CEL_POLICY, check=True)

        process = MlgateProcess(cp.kubeconfig, work / "mlgate.log", webhook_config="mlgate-bench")
        syns = SynCounter(process.port)
        try:
            with process:
                assert process.process is not None
                _wait_admission(load, "bench-mlgate", enforcing=True)
                pids["mlgate"] = process.process.pid
                results += cells(load, "mlgate", seconds, rounds, pids, syns)
        finally:
            syns.close()
            cp.kubectl("delete", WEBHOOK_CONFIG_KINDS, "mlgate-bench", "--ignore-not-found")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.seconds, args.rounds, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
