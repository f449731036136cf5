"""The background audit at scale: N workloads against 10 policies on a local control plane.

    KUBEBUILDER_ASSETS=... .venv/bin/python bench/audit_bench.py --workloads 5000

Creates the workloads (Deployments, 1 in 20 noncompliant, spread over 10 namespaces), then
times audit passes as the leader runs them: the first pass lists the cluster and writes the
PolicyReports; a steady pass lists and judges again and writes nothing new. Counts the API calls
of each pass and the process's peak memory, and the process CPU of each pass: a steady pass's
CPU divided by the workloads is what the audit costs per workload and pass (compare with a
watch's cost per event in bench/watch_cost.py). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import time
from collections import Counter
from http import HTTPStatus
from pathlib import Path
from typing import Any

from mlgate.cluster.client import ApiError, KubeClient, login, resource_path
from mlgate.controller.audit import Auditor
from mlgate.controller.policy_reports import API_VERSION
from mlgate.controller.state import PolicyState
from mlgate.devcluster import from_env

REPO = Path(__file__).resolve().parents[1]
NAMESPACES = 10
POLICIES = 10


class CountingClient(KubeClient):
    """Counts every API request by method (list pages count one each)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    async def request(
        self, method: str, path: str, body: Any = None, **options: Any
    ) -> dict[str, Any]:
        self.calls[method] += 1
        return await super().request(method, path, body, **options)


def _deployment(i: int) -> dict[str, Any]:
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    image = "nginx:latest" if i % 20 == 0 else f"registry.example.com/ml/svc@sha256:{digest}"
    name = f"svc-{i}"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": f"bench-{i % NAMESPACES}", "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


def _policy(i: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "mode": "Audit",
        "match": {"namespaces": ["bench-*"]},
        "images": {"allowedRegistries": ["registry.example.com/ml/*"], "requireDigest": True},
        "egress": {"allowHostNetwork": False},
        "gpu": {"maxPerPod": 8, "maxPerWorkload": 64},
    }
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": f"bench-{i}", "generation": 1},
        "spec": spec,
    }


async def _create(client: KubeClient, bodies: list[dict[str, Any]], path_of: Any) -> None:
    queue = asyncio.Queue[dict[str, Any]]()
    for body in bodies:
        queue.put_nowait(body)

    async def worker() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            await client.apply(path_of(body), body)

    await asyncio.gather(*(worker() for _ in range(16)))


def _deployment_path(body: dict[str, Any]) -> str:
    meta = body["metadata"]
    return resource_path("apps/v1", "deployments", meta["namespace"], meta["name"])


def _namespace_path(body: dict[str, Any]) -> str:
    return resource_path("v1", "namespaces", name=body["metadata"]["name"])


async def _storage_ready(client: KubeClient) -> None:
    """Freshly established CRDs answer 429 "storage is (re)initializing" for a moment."""
    for _ in range(60):
        try:
            for plural in ("policyreports", "clusterpolicyreports"):
                await client.list(resource_path(API_VERSION, plural))
            await client.list(resource_path("mlgate.io/v1alpha1", "clustermlpolicies"))
        except ApiError as exc:
            if exc.status != HTTPStatus.TOO_MANY_REQUESTS:
                raise
            await asyncio.sleep(1)
        else:
            return


async def _bench(workloads: int) -> None:
    async with CountingClient(login(), timeout=120) as client:
        await _storage_ready(client)
        started = time.monotonic()
        namespaces = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"bench-{i}"}}
            for i in range(NAMESPACES)
        ]
        await _create(client, namespaces, _namespace_path)
        await _create(client, [_deployment(i) for i in range(workloads)], _deployment_path)
        print(f"created {workloads} Deployments in {time.monotonic() - started:.1f}s", flush=True)
        state = PolicyState()
        for i in range(POLICIES):
            body = _policy(i)
            name = body["metadata"]["name"]
            path = resource_path("mlgate.io/v1alpha1", "clustermlpolicies", name=name)
            await client.apply(path, body)
            state.upsert(body)
        for ns in namespaces:
            state.set_namespace(ns["metadata"]["name"], {})
        auditor = Auditor(client, state, "mlgate-system", lambda: True)
        for label in ("first pass (writes reports)", "steady pass (reports unchanged)"):
            client.calls.clear()
            before, cpu = time.perf_counter(), time.process_time()
            outcome = await auditor.audit_once()
            seconds, cpu = time.perf_counter() - before, time.process_time() - cpu
            calls = ", ".join(f"{m} {n}" for m, n in sorted(client.calls.items()))
            violations = sum(outcome.per_policy.values())
            print(
                f"{label}: {outcome.audited} workloads x {POLICIES} policies in {seconds:.2f}s "
                f"({cpu * 1e6 / max(outcome.audited, 1):.0f} µs CPU per workload); "
                f"{violations} violations; API calls: {calls}",
                flush=True,
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the benchmark process (audit): {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", type=int, default=5000)
    args = parser.parse_args()
    with from_env() as cluster:
        cluster.kubectl("apply", "-f", str(REPO / "crds"), check=True)
        reports = REPO / "charts" / "mlgate" / "files" / "policy-report-crds.yaml"
        cluster.kubectl("apply", "-f", str(reports), check=True)
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=True
        )
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        asyncio.run(_bench(args.workloads))


if __name__ == "__main__":
    main()
