"""`mlgate approve-model` and `mlgate verify-model`: vet a model's files, record the evidence.

approve-model: digest (OMS manifest), unsafe-serialisation scan, optional OMS signature; writes
the ApprovedModel (stdout, --output FILE) or applies it (--apply). A scan that is not clean
refuses approval unless --allow-unsafe with --reason, which is recorded.

verify-model: recompute the digest of a directory and compare with the approved one(s); the
init container mlgate injects after a model download runs it, and so can CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlgate.api import models as api
from mlgate.api.compile import describe_validation_error
from mlgate.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, error, write
from mlgate.engine.policy import Signer
from mlgate.provenance.artifacts import ArtifactError, Scan, digest, scan
from mlgate.provenance.signatures import MISSING_TRUST, SignatureError, Trust, verify

_NOT_DNS = re.compile(r"[^a-z0-9.-]+")
_MAX_FINDINGS = 100


def _add_trust_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("OMS signature (verified offline)")
    group.add_argument("--signature", type=Path, metavar="FILE", help="OMS signature bundle")
    group.add_argument("--public-key", type=Path, metavar="PEM", help="signer's public key")
    group.add_argument(
        "--certificate-chain",
        type=Path,
        action="append",
        default=[],
        metavar="PEM",
        help="trusted certificates the signing certificate must chain to (repeatable)",
    )
    group.add_argument(
        "--trust-root", type=Path, metavar="JSON", help="sigstore trust configuration"
    )
    group.add_argument("--identity", help="sigstore signer identity (with --trust-root)")
    group.add_argument("--issuer", help="sigstore OIDC issuer (with --trust-root)")


def _trust(args: argparse.Namespace) -> Trust:
    return Trust(
        public_key=args.public_key,
        certificates=tuple(args.certificate_chain),
        trust_root=args.trust_root,
        identity=args.identity,
        issuer=args.issuer,
    )


def configure_approve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="PATH", help="model file or directory")
    parser.add_argument("--model", help="model name (default: the file or directory name)")
    parser.add_argument("--version", dest="model_version", required=True, help="model version")
    parser.add_argument("--name", help="ApprovedModel name (default: <model>-<version>)")
    parser.add_argument(
        "--uri",
        action="append",
        default=[],
        help="where workloads load it from (repeatable); pin revisions (hf://o/m@<commit>)",
    )
    parser.add_argument("--approved-by", help="who approves it")
    parser.add_argument("--expires", help="RFC 3339 time after which the approval is void")
    parser.add_argument(
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        help="namespaces that may use it (repeatable; default: all)",
    )
    parser.add_argument(
        "--allow-unsafe",
        action="store_true",
        help="approve even if the scan is not clean (needs --reason, which is recorded)",
    )
    parser.add_argument("--reason", help="why an unsafe model is approved anyway")
    _add_trust_options(parser)
    out = parser.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the YAML here")
    out.add_argument("--apply", action="store_true", help="create or update it in the cluster")
    parser.add_argument("--kubeconfig", help="kubeconfig for --apply (default: $KUBECONFIG)")


def _scan_record(result: Scan, reason: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "scanner": result.scanner,
        "version": result.version,
        "result": result.result,
        "findings": list(result.findings[:_MAX_FINDINGS]),
    }
    if reason and not result.clean:
        record["allowedUnsafeReason"] = reason
    return record


def _signature_record(signer: Signer, args: argparse.Namespace) -> dict[str, Any]:
    record: dict[str, Any] = {"method": signer.method, "signer": signer.key_id or signer.identity}
    if signer.issuer:
        record["issuer"] = signer.issuer
    if signer.method == "key":
        # Stored so mlgate can re-verify it: a recorded key signer counts only with its proof.
        record["publicKey"] = args.public_key.read_text(encoding="utf-8")
        bundle = json.loads(args.signature.read_text(encoding="utf-8"))
        record["bundle"] = json.dumps(bundle, separators=(",", ":"))
    return record


def _document(args: argparse.Namespace, digest: str, found: Scan, signer: Signer | None) -> Any:
    model = args.model or args.path.resolve().name
    name = args.name or _NOT_DNS.sub("-", f"{model}-{args.model_version}".lower()).strip("-.")
    spec: dict[str, Any] = {
        "model": model,
        "version": args.model_version,
        "uris": args.uri,
        "digest": digest,
        "scan": _scan_record(found, args.reason),
    }
    if signer is not None:
        spec["signature"] = _signature_record(signer, args)
    if args.approved_by:
        spec["approvedBy"] = args.approved_by
    if args.expires:
        spec["expires"] = args.expires
    if args.namespaces:
        spec["namespaces"] = args.namespaces
    doc = {"apiVersion": api.API_VERSION, "kind": "ApprovedModel", "metadata": {"name": name}}
    doc["spec"] = spec
    api.ApprovedModel.model_validate(doc)  # the apiserver would refuse what this refuses
    return doc


def _refusal(args: argparse.Namespace, found: Scan) -> str | None:
    if found.clean:
        return None
    listed = "".join(f"\n  {f}" for f in found.findings)
    if not args.allow_unsafe:
        return (
            f"{args.path}: {found.scanner} {found.version} found the model {found.result}; "
            f"not approved:{listed}\nvet it, convert it to a format that runs no code "
            "(safetensors), or approve it anyway with --allow-unsafe --reason TEXT"
        )
    return None


def _emit(args: argparse.Namespace, doc: Any) -> int:
    text = yaml.safe_dump(doc, sort_keys=False)
    if args.apply:
        return _apply(args, doc)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        write(sys.stdout, text)
    return EXIT_OK


def _apply(args: argparse.Namespace, doc: Any) -> int:
    import os  # noqa: PLC0415 - only --apply needs the cluster client (kopf, aiohttp)

    from mlgate.cluster.client import ApiError, KubeClient, login, resource_path  # noqa: PLC0415

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig

    async def apply() -> None:
        path = resource_path(api.API_VERSION, "approvedmodels", name=doc["metadata"]["name"])
        async with KubeClient(login()) as client:
            await client.apply(path, doc, manager="mlgate-approve-model")

    try:
        asyncio.run(apply())
    except (ApiError, OSError) as exc:
        error(f"mlgate approve-model: cannot apply ApprovedModel {doc['metadata']['name']}: {exc}")
        return EXIT_FAILED
    write(sys.stdout, f"approvedmodel.mlgate.io/{doc['metadata']['name']} applied\n")
    return EXIT_OK


def _trust_problem(args: argparse.Namespace) -> str | None:
    if args.signature is not None and not _trust(args).given:
        return MISSING_TRUST
    return None


def approve_main(args: argparse.Namespace) -> int:
    if problem := _trust_problem(args):
        error(f"mlgate approve-model: {problem}")
        return EXIT_BAD_INPUT
    if args.allow_unsafe and not args.reason:
        error("mlgate approve-model: --allow-unsafe needs --reason TEXT (it is recorded)")
        return EXIT_BAD_INPUT
    if args.expires:
        try:
            datetime.fromisoformat(args.expires)
        except ValueError:
            error(f"mlgate approve-model: --expires {args.expires!r} is not an RFC 3339 time")
            return EXIT_BAD_INPUT
    try:
        found = scan(args.path)
        refusal = _refusal(args, found)
        if refusal:
            error(f"mlgate approve-model: {refusal}")
            return EXIT_FAILED
        content = digest(args.path)
        signer = (
            verify(args.path, args.signature, _trust(args), content) if args.signature else None
        )
        doc = _document(args, content, found, signer)
    except (ArtifactError, SignatureError) as exc:
        error(f"mlgate approve-model: {exc}")
        return EXIT_FAILED
    except ValidationError as exc:
        error(f"mlgate approve-model: {describe_validation_error(exc)}")
        return EXIT_BAD_INPUT
    return _emit(args, doc)


# ---------------------------------------------------------------------------------------------
# verify-model


def configure_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="PATH", help="model file or directory")
    parser.add_argument(
        "--digest",
        action="append",
        default=[],
        metavar="sha256:HEX",
        help="approved digest (repeatable: any one matching verifies)",
    )
    _add_trust_options(parser)


def verify_main(args: argparse.Namespace) -> int:
    if not args.digest and not args.signature:
        error("mlgate verify-model: give --digest sha256:... and/or --signature")
        return EXIT_BAD_INPUT
    if problem := _trust_problem(args):
        error(f"mlgate verify-model: {problem}")
        return EXIT_BAD_INPUT
    try:
        actual = digest(args.path)
        if args.signature:
            verify(args.path, args.signature, _trust(args), actual)
    except (ArtifactError, SignatureError) as exc:
        error(f"mlgate verify-model: NOT VERIFIED: {exc}")
        return EXIT_FAILED
    if args.digest and actual not in args.digest:
        error(
            f"mlgate verify-model: NOT VERIFIED: {args.path} has digest {actual}, not the "
            f"approved {' or '.join(args.digest)}: its files were changed, added or removed "
            "after approval"
        )
        return EXIT_FAILED
    write(sys.stdout, f"mlgate verify-model: {args.path} verified ({actual})\n")
    return EXIT_OK
