"""Throughput and peak memory of `mlgate check` on a generated multi-document file.

    .venv/bin/python bench/check_throughput.py --docs 10000 [--format json] [--stdin] [--json out]

Beside it: PyYAML's C loader alone on the same file (in this process, best of 3), the floor any
YAML-reading `mlgate check` is measured against, and the start-up of `mlgate check` on one
document.

Runs the installed console script in a child process, so the numbers include interpreter start-up
and are those a CI job sees. Peak RSS is the child's ru_maxrss. Not run by the tests: timings are
measured here, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MLGATE = Path(sys.executable).with_name("mlgate")


def _digest(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _deployment(i: int) -> dict[str, object]:
    # Every 100th workload breaks a rule, so the report path is exercised too.
    image = (
        "nginx:latest"
        if i % 100 == 99
        else f"registry.example.com/ml/svc-{i % 50}@sha256:{_digest(i)}"
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"svc-{i}",
            "namespace": "ml-prod",
            "labels": {"app.kubernetes.io/name": f"svc-{i}"},
            "annotations": {"mlgate.io/model": "fraud-detector@3"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": f"svc-{i}"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": f"svc-{i}"}},
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                    "containers": [
                        {
                            "name": "main",
                            "image": image,
                            "env": [
                                {"name": "MODEL_URI", "value": "s3://models/fraud-detector/v3"}
                            ],
                            "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "8Gi"}},
                        }
                    ],
                },
            },
        },
    }


def documents(count: int) -> Iterator[str]:
    for i in range(count):
        yield "---\n" + yaml.safe_dump(_deployment(i), sort_keys=False)


def measure(manifests: Path, output: str, via_stdin: bool) -> tuple[float, float, int, int]:
    """Wall seconds, CPU seconds (steadier on a busy machine), exit code, peak RSS in KiB."""
    args = [str(MLGATE), "check", "-p", str(REPO / "examples/policies")]
    args += ["--models", str(REPO / "examples/models"), "-o", output]
    args.append("-" if via_stdin else str(manifests))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with manifests.open("rb") as stdin:
        done = subprocess.run(
            args,
            stdin=stdin if via_stdin else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(f"mlgate check failed ({done.returncode}): {done.stderr.decode()}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu, done.returncode, usage.ru_maxrss


def loader_alone(manifests: Path) -> float:
    """CPU seconds PyYAML's C safe loader takes for every document of the file (best of 3)."""
    text = manifests.read_text()
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in yaml.load_all(text, Loader=yaml.CSafeLoader):
            pass
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--format", choices=["text", "json", "sarif"], default="text")
    parser.add_argument("--stdin", action="store_true", help="feed the documents on stdin")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifests = Path(tmp, "workloads.yaml")
        with manifests.open("w") as handle:
            handle.writelines(documents(args.docs))
        size = manifests.stat().st_size
        one = Path(tmp, "one.yaml")
        one.write_text(next(documents(1)))
        startup, _, _, _ = measure(one, args.format, args.stdin)
        elapsed, cpu, code, peak_kib = measure(manifests, args.format, args.stdin)
        loader = loader_alone(manifests)
    print(f"documents      {args.docs} ({size / 2**20:.1f} MiB of YAML)")
    print(f"wall time      {elapsed:.2f} s (exit {code})")
    print(f"CPU time       {cpu:.2f} s")
    print(
        f"throughput     {args.docs / elapsed:,.0f} docs/s ({args.docs / cpu:,.0f} per CPU-second)"
    )
    print(f"peak RSS       {peak_kib / 1024:.0f} MiB")
    print(f"start-up       {startup:.2f} s (one document)")
    print(f"YAML C loader  {args.docs / loader:,.0f} docs per CPU-second alone")
    if args.json:
        result = {
            "docs": args.docs,
            "check_docs_per_s": args.docs / elapsed,
            "check_docs_per_cpu_s": args.docs / cpu,
            "loader_docs_per_cpu_s": args.docs / loader,
            "startup_s": startup,
            "peak_rss_mib": peak_kib / 1024,
        }
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
