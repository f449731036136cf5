"""The `mlgate` command line: a thin shell that parses arguments and does the I/O.

Subcommands are entries of COMMANDS (name -> help, parser setup, handler), so `run` and
`verify-image` plug in without touching the others. Handlers return the exit code; `main`
never lets a traceback or SystemExit escape, so it can be called in-process by tests.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from mlgate import __version__
from mlgate.check import CheckRequest, ImageFacts, Outcome, run
from mlgate.check_egress import egress_policies
from mlgate.registry.options import add_registry_options
from mlgate.reports import render_json, render_sarif, render_text

EXIT_OK = 0
EXIT_FAILED = 1  # check: a workload would be denied; crds --check: files differ
EXIT_BAD_INPUT = 2  # also argparse's code for usage errors
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

CRD_GLOB = "mlgate.io_*.yaml"


@dataclass(frozen=True, slots=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


def _lazy(module: str, attribute: str) -> Callable[[Any], Any]:
    """`module.attribute`, imported when first called: `mlgate check` in CI must not pay for
    importing the operator (kopf, aiohttp)."""

    def call(arg: Any) -> Any:
        return getattr(importlib.import_module(module), attribute)(arg)

    return call


def write(stream: TextIO, text: str) -> None:
    """Write and flush; a reader that went away (`mlgate check . | head`) is not an error."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        _discard_stdout()


def _discard_stdout() -> None:
    # Python flushes stdout again at exit; pointing it at /dev/null keeps that flush quiet.
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a test's StringIO
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def error(message: str) -> None:
    write(sys.stderr, f"{message}\n")


# ---------------------------------------------------------------------------------------------
# check


def _configure_check(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="manifest files or directories (*.yaml, *.yml, *.json, recursively); - reads stdin",
    )
    parser.add_argument(
        "-p",
        "--policy",
        action="append",
        default=[],
        metavar="POLICY_DIR_OR_FILE",
        help="ClusterMLPolicy/MLPolicy documents (repeatable); policies among the PATH "
        "documents apply too",
    )
    parser.add_argument(
        "--models",
        action="append",
        default=[],
        metavar="FILE",
        help="ApprovedModel documents (repeatable); ApprovedModels among the PATH documents "
        "count too",
    )
    parser.add_argument(
        "--runtimes",
        action="append",
        default=[],
        metavar="PATH",
        help="ServingRuntime, ClusterServingRuntime, LLMInferenceServiceConfig, TrainingRuntime, "
        "ClusterTrainingRuntime and ClusterStorageContainer documents the workloads may name "
        "(repeatable); merged into them, not judged themselves. Runtimes among the PATH "
        "documents count too",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=list(RENDERERS),
        default="text",
        help="report format (default: text)",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        metavar="NS",
        help="namespace of documents that set none, as `kubectl apply -n NS` would; without "
        "it they count as governed by every policy",
    )
    parser.add_argument(
        "--print-egress-policy",
        action="store_true",
        help="judge nothing; print (YAML) the NetworkPolicy mlgate-egress the policies would "
        "keep in --namespace, or in each namespace the documents name",
    )
    parser.add_argument(
        "--verify-images",
        action="store_true",
        help="verify image signatures in the registries (cosign) as the webhook does; keys "
        "in Secrets (secretRef) cannot be read offline",
    )
    add_registry_options(parser)


RENDERERS: dict[str, Callable[[Outcome], str]] = {
    "text": render_text,
    "json": render_json,
    "sarif": lambda outcome: render_sarif(outcome, Path.cwd()),
}


def _report_input_errors(errors: Sequence[str], what: str) -> int:
    for message in errors:
        error(message)
    count = len(errors)
    error(f"mlgate: {count} input error{'s' if count > 1 else ''}; {what}")
    return EXIT_BAD_INPUT


def _print_egress_policy(request: CheckRequest) -> int:
    outcome = egress_policies(request, sys.stdin)
    if outcome.errors:
        return _report_input_errors(outcome.errors, "nothing was generated")
    for namespace in outcome.unmanaged:
        error(f"mlgate: no policy keeps a NetworkPolicy in namespace {namespace}")
    write(sys.stdout, yaml.safe_dump_all(outcome.network_policies, sort_keys=False))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    if not args.verify_images:
        return _check_with(args, None)
    from mlgate.registry.command import BadInput, offline_image_facts  # noqa: PLC0415 - aiohttp

    try:
        with offline_image_facts(args) as verify_images:
            return _check_with(args, verify_images)
    except BadInput as exc:
        error(f"mlgate check: {exc}")
        return EXIT_BAD_INPUT


def _check_with(args: argparse.Namespace, verify_images: ImageFacts | None) -> int:
    if not args.paths and not args.print_egress_policy:
        error("mlgate check: give at least one PATH (- reads stdin)")
        return EXIT_BAD_INPUT
    request = CheckRequest(
        paths=args.paths,
        now=datetime.now(UTC),
        policy_paths=args.policy,
        model_paths=args.models,
        runtime_paths=args.runtimes,
        namespace=args.namespace,
        verify_images=verify_images,
    )
    if args.print_egress_policy:
        return _print_egress_policy(request)
    outcome = run(request, sys.stdin)
    if outcome.errors:
        return _report_input_errors(outcome.errors, "nothing was judged")
    write(sys.stdout, RENDERERS[args.output](outcome))
    return outcome.exit_code


# ---------------------------------------------------------------------------------------------
# crds


def _configure_crds(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True, type=Path, metavar="DIR")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming the files that differ from the generated ones",
    )


def _differences(directory: Path, rendered: dict[str, str]) -> list[str]:
    """Generated files that are missing or changed, and stale ones no model generates."""
    differing = []
    for name, text in rendered.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            differing.append(name)
    stale = [p.name for p in directory.glob(CRD_GLOB) if p.name not in rendered]
    return sorted(differing + stale)


def _crds(args: argparse.Namespace) -> int:
    # Only `crds` renders CRDs: `mlgate check` does not pay for importing the generator.
    from mlgate.api.crdgen import render_all  # noqa: PLC0415

    directory: Path = args.output_dir
    rendered = render_all()
    try:
        if args.check:
            differing = _differences(directory, rendered)
            if differing:
                error(
                    f"mlgate: {directory} differs from the CRDs the models generate: "
                    f"{', '.join(differing)}; run `make crds`"
                )
                return EXIT_FAILED
            return EXIT_OK
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(CRD_GLOB):
            if stale.name not in rendered:
                stale.unlink()
        for name, text in rendered.items():
            (directory / name).write_text(text, encoding="utf-8", newline="\n")
    except OSError as exc:
        error(f"mlgate: {exc.filename or directory}: {exc.strerror or exc}")
        return EXIT_BAD_INPUT
    write(sys.stdout, f"wrote {len(rendered)} CRDs to {directory}\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# version


def _version(args: argparse.Namespace) -> int:
    write(sys.stdout, f"mlgate {__version__}\n")
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "approve-model": Command(
        "vet a model file or directory (digest, unsafe-pickle scan, OMS signature) and write "
        "its ApprovedModel: exit 0 approved, 1 refused, 2 bad input",
        _lazy("mlgate.provenance.command", "configure_approve"),
        _lazy("mlgate.provenance.command", "approve_main"),
    ),
    "check": Command(
        "judge manifests offline: exit 0 compliant, 1 would be denied, 2 bad input",
        _configure_check,
        _check,
    ),
    "crds": Command(
        "write the CustomResourceDefinitions generated from the models", _configure_crds, _crds
    ),
    "report": Command(
        "print the cluster's current violations from mlgate's PolicyReports: exit 0 none, "
        "1 violations, 2 cannot read them",
        _lazy("mlgate.cluster_report", "configure_parser"),
        _lazy("mlgate.cluster_report", "main"),
    ),
    "run": Command(
        "run the operator and the validating webhook (in cluster, or against a kubeconfig)",
        _lazy("mlgate.run", "configure_parser"),
        _lazy("mlgate.run", "main"),
    ),
    "verify-image": Command(
        "show an image's cosign signatures and whether --key verifies it: exit 0 verified, "
        "1 not verified, 2 bad input",
        _lazy("mlgate.registry.command", "configure_verify_image"),
        _lazy("mlgate.registry.command", "verify_image_main"),
    ),
    "verify-model": Command(
        "check a model's files against its approved digest (or OMS signature): exit 0 "
        "verified, 1 not verified, 2 bad input",
        _lazy("mlgate.provenance.command", "configure_verify"),
        _lazy("mlgate.provenance.command", "verify_main"),
    ),
    "version": Command("print the version", lambda parser: None, _version),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the `selected` subcommand gets its options, so that the others'
    modules need not be imported (`mlgate run` pulls in kopf and aiohttp)."""
    parser = argparse.ArgumentParser(
        prog="mlgate", description="Admission control for ML workloads on Kubernetes."
    )
    parser.add_argument("--version", action="version", version=f"mlgate {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subcommands.add_parser(name, help=command.help, description=command.help)
        if name == selected:
            command.configure(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def _subcommand(argv: Sequence[str]) -> str | None:
    # The top-level options take no values, so the first other word names the subcommand.
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mlgate` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(_subcommand(argv)).parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
