"""`make bench`: every benchmark, one after the other. Timings are printed, never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
COMMANDS = [
    [sys.executable, str(BENCH / "webhook_bench.py"), "--rate", "500", "--seconds", "10"],
    [sys.executable, str(BENCH / "check_throughput.py")],
    [sys.executable, str(BENCH / "verify_bench.py")],
    [sys.executable, str(BENCH / "audit_bench.py"), "--workloads", "5000"],
]


def main() -> int:
    failed = 0
    for command in COMMANDS:
        print(f"==> {Path(command[1]).name}", flush=True)
        failed |= subprocess.run(command, check=False).returncode
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
