"""`make bench`: every benchmark, one after the other. Timings are printed, never asserted.

The side-by-side ones (issue 16) also write their tables into docs/benchmarks.md.
`--only NAME` (repeatable) runs a subset; the page then shows only what ran.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import report

BENCH = Path(__file__).resolve().parent
PAGE = BENCH.parent / "docs" / "benchmarks.md"
# name -> (script, arguments, whether it writes a JSON result for the page)
BENCHMARKS: dict[str, tuple[str, list[str], bool]] = {
    "side_by_side": ("side_by_side.py", ["--seconds", "2", "--rounds", "3"], True),
    "webhook": ("webhook_cpu.py", ["--seconds", "5"], True),
    "engine": ("engine_bench.py", ["--seconds", "2"], True),
    "check": ("check_throughput.py", ["--docs", "10000"], True),
    "watches": ("watch_cost.py", ["--seconds", "2", "--rounds", "2"], False),
    "latency": ("webhook_bench.py", ["--rate", "500", "--seconds", "10"], False),
    "verify": ("verify_bench.py", [], False),
    "audit": ("audit_bench.py", ["--workloads", "5000"], False),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS))
    args = parser.parse_args()
    failed = 0
    data: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or BENCHMARKS:
            script, arguments, writes = BENCHMARKS[name]
            command = [sys.executable, str(BENCH / script), *arguments]
            out = Path(tmp, f"{name}.json")
            if writes:
                command += ["--json", str(out)]
            print(f"==> {script}", flush=True)
            failed |= subprocess.run(command, check=False).returncode
            if writes and out.exists():
                data[name] = json.loads(out.read_text())
    if data:
        report.write(PAGE, data)
        print(f"==> tables written to {PAGE}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
