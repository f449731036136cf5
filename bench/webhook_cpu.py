"""The webhook alone: CPU per request of mlgate's server vs an aiohttp+TLS+json.loads floor.

Both servers run in their own process pinned to one core, with uvloop and TLS as `mlgate run`
serves; `wrk` (Debian package `wrk`) drives each with the same AdmissionReview (bench/workload.py)
over kept-alive connections from the other core. CPU per request is the server's process CPU time
(/proc) over the requests wrk completed, so a busy machine changes throughput more than it
changes the ratio. Without wrk, a pooled aiohttp client in this process stands in (slower, so
fewer requests per second; CPU per request on the server side is what is compared).

    .venv/bin/python bench/webhook_cpu.py --seconds 5 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
import workload
from aiohttp import web
from procstat import cpu_seconds
from webhook_bench import _serve

from mlgate import logs
from mlgate.devrun import free_port
from mlgate.webhook import certs

SERVERS = ("floor-constant", "floor-json", "mlgate")
# A fresh TLS connection per request (`Connection: close`): what each connection the apiserver
# cannot reuse costs the webhook.
NEW_CONNECTION = "+ new TLS connection per request"
CONNECTIONS = 8


async def _floor(port: int, directory: Path, decode: bool) -> None:
    """aiohttp + TLS answering allowed: with `decode`, after json.loads of the review."""
    constant = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}

    async def validate(request: web.Request) -> web.Response:
        body = await request.read()
        uid = json.loads(body)["request"]["uid"] if decode else "constant"
        return web.json_response(constant | {"response": {"uid": uid, "allowed": True}})

    ca = certs.generate_ca("bench-ca", timedelta(days=1))
    leaf = certs.issue_serving(ca, ["localhost"], ["127.0.0.1"], timedelta(days=1))
    (directory / "tls.crt").write_bytes(leaf.cert_pem)
    (directory / "tls.key").write_bytes(leaf.key_pem)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/validate", validate)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = certs.server_ssl_context(directory / "tls.crt", directory / "tls.key")
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    gc.freeze()
    (directory / "ready").write_text("ok")
    await asyncio.Event().wait()


def _wrk(port: int, body: Path, seconds: float, close: bool = False, *, directory: Path) -> int:
    script = directory / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "-s", str(script)]
    if close:
        command += ["-H", "Connection: close"]
    done = subprocess.run(
        [*_pinned(1), *command, f"https://127.0.0.1:{port}/validate"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"(\d+) requests in", done.stdout)
    if not found or "Non-2xx" in done.stdout:
        raise SystemExit(f"wrk failed:\n{done.stdout}{done.stderr}")
    return int(found.group(1))


def _python_client(port: int, body: Path, seconds: float, close: bool = False) -> int:
    """wrk's job for a machine without wrk: CONNECTIONS pooled connections, one request each
    in flight."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    data = body.read_bytes()
    # Loopback to a throwaway certificate: the server's identity is not what is measured.
    context = ssl._create_unverified_context()

    async def run() -> int:
        done = 0
        connector = aiohttp.TCPConnector(ssl=context, limit=CONNECTIONS, force_close=close)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            until = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < until:
                    url = f"https://127.0.0.1:{port}/validate"
                    async with session.post(url, data=data) as response:
                        await response.read()
                        if response.status != 200:
                            raise SystemExit(f"the server answered {response.status}")
                    done += 1

            await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        return done

    return asyncio.run(run())


def _pinned(core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core)]
    return []


def measure(server: str, seconds: float, close: bool = False) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        body = directory / "review.json"
        body.write_bytes(workload.review())
        serve = ["--serve", server, "--port", str(port), "--dir", tmp]
        child = subprocess.Popen(
            [*_pinned(0), sys.executable, __file__, *serve], stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while not (directory / "ready").exists():
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit(f"{server} server did not start")
                time.sleep(0.1)
            load = partial(_wrk, directory=directory) if shutil.which("wrk") else _python_client
            load(port, body, 1)  # warm up
            before = cpu_seconds(child.pid)
            requests = load(port, body, seconds, close=close)
            used = cpu_seconds(child.pid) - before
        finally:
            child.terminate()
            child.wait()
    return {
        "server": f"{server} {NEW_CONNECTION}" if close else server,
        "driver": "wrk" if shutil.which("wrk") else "aiohttp client",
        "requests": requests,
        "rps": requests / seconds,
        "cpu_us_per_request": used / requests * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--only", action="append", choices=SERVERS, help="a subset of servers")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.serve == "mlgate":
            logs.configure("INFO")  # as `mlgate run` logs by default (to /dev/null here)
            uvloop.run(_serve(args.port, args.dir))
        else:
            uvloop.run(_floor(args.port, args.dir, decode=args.serve == "floor-json"))
        return
    if not shutil.which("wrk"):
        print("webhook_cpu: no wrk (apt-get install wrk): a Python client drives the servers")
    results = [measure(server, args.seconds) for server in args.only or SERVERS]
    if "mlgate" in (args.only or SERVERS):
        results.append(measure("mlgate", args.seconds, close=True))
    for r in results:
        print(f"{r['server']:15} {r['rps']:8,.0f} req/s  {r['cpu_us_per_request']:6.0f} µs CPU/req")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
