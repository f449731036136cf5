"""`mlgate run` with some of its watches left out, for bench/watch_cost.py (any version of
mlgate: it imports only what every version has).

    python bench/watch_child.py owners-,inventory- run --kubeconfig ...

Arguments: watches to leave out (comma-separated kopf handler id prefixes, watch-<plural> for a
controller/watch.py watch, full-<plural> for that watch with whole objects), then `mlgate`'s own.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any

import kopf

from mlgate import cli


def run(skip: Sequence[str], argv: list[str]) -> int:
    """`mlgate run` with the watches `skip` names not started."""
    real = kopf.on.event

    def event(*args: Any, id: str | None = None, **kwargs: Any) -> Any:
        if id is not None and any(id.startswith(p) for p in skip):
            return lambda fn: fn
        return real(*args, id=id, **kwargs)

    kopf.on.event = event
    if importlib.util.find_spec("mlgate.controller.watch") is not None:
        watch = importlib.import_module("mlgate.controller.watch")
        original = watch.ListWatch.run

        async def skipping(self: Any) -> None:
            if f"watch-{self.plural}" in skip:
                self.synced.set()
                return
            self.metadata_only = self.metadata_only and f"full-{self.plural}" not in skip
            await original(self)

        watch.ListWatch.run = skipping
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(run(tuple(p for p in sys.argv[1].split(",") if p), sys.argv[2:]))
