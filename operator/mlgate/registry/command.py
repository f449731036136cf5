"""Command-line entry points of the registry adapter.

- `mlgate verify-image IMAGE --key FILE...`: what the registry holds for one image and whether
  the keys verify it (exit 0 verified, 1 not, 2 bad input);
- the registry options of `mlgate check --verify-images`, and the synchronous fact source that
  lets the offline check verify images exactly as the webhook does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from mlgate.engine.policy import CompiledPolicy, ImageFact
from mlgate.engine.references import InvalidReference, parse
from mlgate.engine.workloads import WorkloadView
from mlgate.registry.auth import AuthConfigError, Credential, parse_docker_config
from mlgate.registry.client import ClientOptions, RegistryClient
from mlgate.registry.cosign import KeyError_, TrustedKey, load_key
from mlgate.registry.options import add_registry_options
from mlgate.registry.verifier import Report, Verifier, VerifierOptions

EXIT_VERIFIED, EXIT_NOT_VERIFIED, EXIT_BAD_INPUT = 0, 1, 2
ImageFacts = Callable[[tuple[CompiledPolicy, ...], WorkloadView], Mapping[str, ImageFact]]


class BadInput(ValueError):
    """An option that cannot be used; the message says which and why."""


def client_options(
    insecure: Sequence[str], ca_file: str | None, request_timeout: float = 3.0
) -> ClientOptions:
    if ca_file and not Path(ca_file).is_file():
        raise BadInput(f"--registry-ca-file {ca_file}: no such file")
    for host in insecure:
        if not host or "/" in host or "://" in host:
            raise BadInput(f"--insecure-registry {host!r}: give HOST or HOST:PORT")
    return ClientOptions(
        insecure_registries=frozenset(h.lower() for h in insecure),
        ca_file=ca_file,
        request_timeout=request_timeout,
    )


def _credentials(path: str | None) -> dict[str, Credential]:
    if path is None:
        home = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
        default = Path(home) / "config.json"
        if not default.is_file():
            return {}
        path = str(default)
    try:
        return parse_docker_config(Path(path).read_bytes())
    except OSError as exc:
        raise BadInput(f"--registry-auth {path}: {exc.strerror or exc}") from None
    except AuthConfigError as exc:
        raise BadInput(f"--registry-auth {path}: {exc}") from None


def verifier_options(args: argparse.Namespace, deadline: float) -> VerifierOptions:
    request_timeout = min(3.0, max(0.5, deadline / 2))
    return VerifierOptions(
        client=client_options(args.insecure_registry, args.registry_ca_file, request_timeout),
        deadline=deadline,
        credentials=_credentials(args.registry_auth),
    )


# ---------------------------------------------------------------------------------------------
# mlgate check --verify-images


@contextlib.contextmanager
def offline_image_facts(args: argparse.Namespace, deadline: float = 20.0) -> Iterator[ImageFacts]:
    """A synchronous ImageVerifier for `mlgate check`, on an event loop of its own.

    Key Secrets (secretRef) cannot be read offline: images that need them fail with that reason.
    """
    options = verifier_options(args, deadline)
    with asyncio.Runner() as runner:
        verifier = Verifier(RegistryClient(options.client), options)

        def facts(
            policies: tuple[CompiledPolicy, ...], workload: WorkloadView
        ) -> Mapping[str, ImageFact]:
            return runner.run(verifier(policies, workload))

        try:
            yield facts
        finally:
            runner.run(verifier.client.close())


# ---------------------------------------------------------------------------------------------
# mlgate verify-image


def configure_verify_image(parser: argparse.ArgumentParser) -> None:
    # Both are required; checked by the handler so a missing one exits 2 with one message.
    parser.add_argument(
        "image", nargs="?", metavar="IMAGE", help="image reference, by tag or by digest"
    )
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="FILE",
        help="trusted public key (PEM: ECDSA, RSA or Ed25519), e.g. cosign.pub (repeatable)",
    )
    add_registry_options(parser)
    parser.add_argument(
        "--timeout", type=float, default=20.0, metavar="SECONDS", help="overall deadline"
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")


def _load_keys(paths: Sequence[str]) -> list[TrustedKey]:
    keys = []
    for path in paths:
        try:
            keys.append(load_key(path, Path(path).read_bytes()))
        except OSError as exc:
            raise BadInput(f"--key {path}: {exc.strerror or exc}") from None
        except KeyError_ as exc:
            raise BadInput(f"--key {path}: {exc}") from None
    return keys


def render_report(report: Report, keys: Sequence[TrustedKey]) -> str:
    labels = {k.id: f"{k.id} (sha256:{k.fingerprint[:16]}...)" for k in keys}
    lines = [f"image:      {report.reference}", f"digest:     {report.digest or '(unknown)'}"]
    lines += [f"            {note}" for note in report.notes]
    if report.found:
        lines.append("signatures:")
        for found in report.found:
            if found.verified_by:
                verdict = "verified by " + ", ".join(
                    labels.get(i, i) for i in sorted(found.verified_by)
                )
            else:
                verdict = found.problem or "not verified"
            lines.append(f"  [{found.format}] {found.location}")
            lines.append(f"      {verdict}")
    else:
        lines.append("signatures: none found")
    if report.ok:
        who = ", ".join(labels.get(i, i) for i in sorted(report.verified_by))
        lines.append(f"result:     VERIFIED by {who}")
    else:
        lines.append(f"result:     NOT VERIFIED: {report.error}")
    return "\n".join(lines) + "\n"


def report_json(report: Report) -> str:
    return (
        json.dumps(
            {
                "image": report.reference,
                "digest": report.digest,
                "verified": report.ok,
                "verifiedBy": sorted(report.verified_by),
                "error": None if report.ok else report.error,
                "signatures": [
                    {
                        "format": f.format,
                        "location": f.location,
                        "verifiedBy": sorted(f.verified_by),
                        "problem": f.problem or None,
                    }
                    for f in report.found
                ],
                "notes": list(report.notes),
            },
            indent=2,
        )
        + "\n"
    )


async def _verify_one(options: VerifierOptions, image: str, keys: list[TrustedKey]) -> Report:
    ref = parse(image)
    async with RegistryClient(options.client) as client:
        verifier = Verifier(client, options)
        return await verifier.verify(ref, keys, options.credentials.get(ref.host))


def verify_image_main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        if not args.image or not args.key:
            raise BadInput("give an IMAGE and at least one --key FILE")
        parse(args.image)
        keys = _load_keys(args.key)
        options = verifier_options(args, max(1.0, args.timeout))
    except (BadInput, InvalidReference) as exc:
        sys.stderr.write(f"mlgate verify-image: {exc}\n")
        return EXIT_BAD_INPUT
    report = asyncio.run(_verify_one(options, args.image, keys))
    out.write(report_json(report) if args.output == "json" else render_report(report, keys))
    out.flush()
    return EXIT_VERIFIED if report.ok else EXIT_NOT_VERIFIED
