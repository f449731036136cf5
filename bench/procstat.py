"""CPU time of a process from /proc (Linux), for per-request CPU in the benchmarks."""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as handle:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS
