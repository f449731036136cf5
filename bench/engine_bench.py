"""Engine decisions per second on one AdmissionReview, against json.loads of the same bytes.

`decide` is what the webhook does after decoding: parse the review, view the workload, gather
the facts (all in memory here, as after the initial sync) and evaluate the example policies
(mlgate.webhook.admission.Admission.review, which never suspends when nothing blocks). Each
figure is the best of a few timed batches, so a busy machine disturbs it less.

    .venv/bin/python bench/engine_bench.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import workload
from webhook_bench import _load_state

from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.run import LEDGER_GPU_RULES
from mlgate.webhook.admission import Admission, Config, Outcome
from mlgate.webhook.review import parse_review


def _now(coroutine: Coroutine[Any, Any, Outcome]) -> Outcome:
    """The result of a coroutine that finishes without suspending."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: Outcome = done.value
        return result
    coroutine.close()
    raise RuntimeError("the admission suspended: the benchmark measures the in-memory path")


def per_second(action: Callable[[], object], seconds: float) -> float:
    """Calls per second: the best of 5 batches of about seconds/5 each."""
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.05:
        action()
        count += 1
    batch = max(1, int(count / 0.05 * seconds / 5))
    best = 0.0
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(batch):
            action()
        best = max(best, batch / (time.perf_counter() - started))
    return best


def measure(seconds: float) -> dict[str, Any]:
    body = workload.review()
    admission = Admission(_load_state(), GpuLedger(), Config(gpu_rules=LEDGER_GPU_RULES))
    decoded = json.loads(body)
    outcome = _now(admission.review(parse_review(decoded)))
    if not outcome.allowed:
        raise SystemExit(f"the benchmark workload is denied: {outcome.message}")
    decide = per_second(lambda: _now(admission.review(parse_review(decoded))), seconds)
    decode = per_second(lambda: json.loads(body), seconds)
    both = per_second(lambda: _now(admission.review(parse_review(json.loads(body)))), seconds)
    return {
        "review_bytes": len(body),
        "decisions_per_s": decide,
        "json_loads_per_s": decode,
        "decode_and_decide_per_s": both,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    r = measure(args.seconds)
    print(
        f"review {r['review_bytes']:,} B: {r['decisions_per_s']:,.0f} decisions/s, "
        f"json.loads {r['json_loads_per_s']:,.0f}/s, "
        f"both {r['decode_and_decide_per_s']:,.0f}/s"
    )
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
