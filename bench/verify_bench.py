"""Cost of verifying a signed image: cold (registry round trips) and warm (cached).

    .venv/bin/python bench/verify_bench.py [--images 20] [--warm 20000]

Starts Debian's distribution registry on 127.0.0.1 (plain HTTP), pushes images with skopeo and
signs them with cosign (classic and sigstore-bundle formats), then times:

- cold, new client: a fresh verifier and HTTP client per image (TCP connect included);
- cold, pooled connection: a fresh verifier cache per image, connections kept;
- cold by tag: as above, plus the tag -> digest resolution;
- warm: the webhook's call (`await verifier(policies, workload)`) answered from the cache,
  for a one-container and an eight-container workload;
- single-flight: 100 concurrent identical cold lookups.

Needs `make registry-assets`. Not run by the tests: timings are measured here, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.registry.helpers import deployment, policy  # noqa: E402
from tests.registry.lab import DistributionRegistry, Pushed, Tools, cosign_binary  # noqa: E402

from mlgate.api.compile import key_id  # noqa: E402
from mlgate.engine.references import parse  # noqa: E402
from mlgate.registry.client import ClientOptions, RegistryClient  # noqa: E402
from mlgate.registry.cosign import load_key  # noqa: E402
from mlgate.registry.verifier import Verifier, VerifierOptions  # noqa: E402


def summary(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"{label:<44} n={len(samples):<6} median {statistics.median(samples) * 1e3:8.3f} ms"
        f"   p95 {p95 * 1e3:8.3f} ms   mean {statistics.fmean(samples) * 1e3:8.3f} ms"
    )


async def timed(samples: list[float], work: Callable[[], Awaitable[object]]) -> object:
    started = time.perf_counter()
    result = await work()
    samples.append(time.perf_counter() - started)
    return result


async def bench(
    registry: DistributionRegistry, images: dict[str, list[Pushed]], pem: str, warm: int
) -> None:
    key = load_key(key_id(pem), pem)
    options = ClientOptions(insecure_registries=frozenset({registry.host}))
    vopts = VerifierOptions(client=options)
    for fmt, pushed in images.items():
        new_client: list[float] = []
        for image in pushed:
            async with RegistryClient(options) as client:
                report = await timed(
                    new_client,
                    partial(Verifier(client, vopts).verify, parse(image.by_digest), [key]),
                )
                assert getattr(report, "ok", False), report
        print(summary(f"cold, new client ({fmt}, by digest)", new_client))
        pooled: list[float] = []
        by_tag: list[float] = []
        async with RegistryClient(options) as client:
            await Verifier(client, vopts).verify(parse(pushed[0].by_digest), [key])  # connect
            for image in pushed:
                await timed(
                    pooled, partial(Verifier(client, vopts).verify, parse(image.by_digest), [key])
                )
                await timed(
                    by_tag, partial(Verifier(client, vopts).verify, parse(image.by_tag), [key])
                )
        print(summary(f"cold, pooled connection ({fmt}, by digest)", pooled))
        print(summary(f"cold, pooled connection ({fmt}, by tag)", by_tag))

    image = images["classic"][0]
    policies = (policy([f"{registry.host}/ml/*"], [{"publicKey": pem}]),)
    async with RegistryClient(options) as client:
        verifier = Verifier(client, vopts)
        for count in (1, 8):
            workload = deployment([image.by_digest] * count)
            facts = await verifier(policies, workload)
            assert facts[image.by_digest].verified_by, facts
            samples: list[float] = []
            for _ in range(warm):
                await timed(samples, partial(verifier, policies, workload))
            print(summary(f"warm: webhook call, {count} container(s)", samples))

        verifier = Verifier(client, vopts)
        started = time.perf_counter()
        await asyncio.gather(*(verifier.verify(parse(image.by_digest), [key]) for _ in range(100)))
        elapsed = time.perf_counter() - started
        print(
            f"{'single-flight: 100 concurrent identical lookups':<44} {elapsed * 1e3:8.3f} ms "
            f"total, {verifier.registry_verifications} registry verification(s)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="signed images per format")
    parser.add_argument("--warm", type=int, default=20000, help="warm calls to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlgate-verify-bench-") as tmp:
        work = Path(tmp)
        tools = Tools(work / "tools", cosign_binary())
        registry = DistributionRegistry(work / "registry").start()
        try:
            tools.trust(registry)
            key = tools.generate_key("bench")
            images: dict[str, list[Pushed]] = {"classic": [], "bundle": []}
            print(f"preparing {args.images} signed images per format...", flush=True)
            for fmt, pushed_images in images.items():
                for i in range(args.images):
                    pushed = tools.push(registry, f"ml/bench-{fmt}-{i}")
                    tools.sign(registry, pushed, key, bundle=fmt == "bundle")
                    pushed_images.append(pushed)
            asyncio.run(bench(registry, images, key.public_pem, args.warm))
        finally:
            registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
