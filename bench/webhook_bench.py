"""Webhook latency under load: p50/p99 at a fixed request rate, with warm caches.

The server is the real aiohttp webhook with real TLS and the example policies, in its own process
pinned to one core (no cluster: facts come from the in-memory state, as after the initial sync).
The client sends an open-loop stream of AdmissionReviews (a mix of compliant and noncompliant
Deployments, InferenceServices and PyTorchJobs) from another core, so a slow answer cannot slow
the offered load down. Timings are printed, never asserted.

    .venv/bin/python bench/webhook_bench.py --rate 500 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import uvloop
import yaml
from aiohttp import web

from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.state import PolicyState
from mlgate.devrun import free_port
from mlgate.metrics import Metrics
from mlgate.run import LEDGER_GPU_RULES
from mlgate.webhook import certs
from mlgate.webhook.admission import Admission, Config
from mlgate.webhook.server import Webhook

REPO = Path(__file__).resolve().parents[1]


def _load_state() -> PolicyState:
    state = PolicyState()
    for folder in ("policies", "models"):
        for path in sorted((REPO / "examples" / folder).glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                assert state.upsert(doc).ok, path
    state.set_namespace("ml-prod", {"mlgate.io/governed": "true"})
    return state


async def _serve(port: int, directory: Path) -> None:
    ca = certs.generate_ca("bench-ca", timedelta(days=30))
    leaf = certs.issue_serving(ca, ["localhost"], ["127.0.0.1"], timedelta(days=7))
    (directory / "tls.crt").write_bytes(leaf.cert_pem)
    (directory / "tls.key").write_bytes(leaf.key_pem)
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    # Dry-run requests reserve nothing, so the quota never fills: this measures the hot path.
    admission = Admission(_load_state(), GpuLedger(), Config(gpu_rules=LEDGER_GPU_RULES))
    webhook = Webhook(admission, Metrics())
    webhook.ready.set()
    runner = web.AppRunner(webhook.app(), access_log=None)
    await runner.setup()
    context = certs.server_ssl_context(directory / "tls.crt", directory / "tls.key")
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    gc.freeze()  # as `mlgate run` does once its state is loaded
    (directory / "ready").write_text("ok")
    await asyncio.Event().wait()


def _reviews() -> list[bytes]:
    bodies = []
    for group in ("compliant", "noncompliant"):
        for path in sorted((REPO / "examples" / "workloads" / group).glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                group_name, _, version = doc["apiVersion"].rpartition("/")
                request = {
                    "uid": "bench",
                    "kind": {"group": group_name, "version": version, "kind": doc["kind"]},
                    "resource": {"group": group_name, "version": version, "resource": "x"},
                    "namespace": "ml-prod",
                    "name": doc["metadata"]["name"],
                    "operation": "CREATE",
                    "userInfo": {"username": "bench"},
                    "object": doc,
                    "dryRun": True,
                }
                review = {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": request,
                }
                bodies.append(json.dumps(review).encode())
    return bodies


async def _load(port: int, ca: Path, rate: float, seconds: float) -> list[float]:
    context = ssl.create_default_context(cafile=str(ca))
    bodies = _reviews()
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(ssl=context, limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"https://127.0.0.1:{port}/validate"

        async def one(body: bytes) -> None:
            started = time.perf_counter()
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as r:
                await r.read()
                assert r.status == 200
            latencies.append(time.perf_counter() - started)

        for body in bodies[:50]:  # warm up connections and caches
            await one(body)
        latencies.clear()
        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
    return latencies


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {core})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _pin(0)
        uvloop.run(_serve(args.serve, Path(args.dir)))
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--dir", tmp])
        try:
            deadline = time.monotonic() + 30
            while not (Path(tmp) / "ready").exists():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("benchmark server did not start")
                time.sleep(0.1)
            _pin(1)
            latencies = asyncio.run(_load(port, Path(tmp) / "ca.crt", args.rate, args.seconds))
        finally:
            server.terminate()
            server.wait()
    ms = sorted(x * 1000 for x in latencies)
    quantiles = statistics.quantiles(ms, n=100)
    print(
        f"webhook: {len(ms)} requests at {args.rate:g}/s over {args.seconds:g}s "
        "(server on 1 core, TLS): "
        f"p50 {quantiles[49]:.2f} ms, p90 {quantiles[89]:.2f} ms, p99 {quantiles[98]:.2f} ms, "
        f"max {ms[-1]:.2f} ms"
    )


if __name__ == "__main__":
    main()
