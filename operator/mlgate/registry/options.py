"""The registry options of `mlgate run`, `check` and `verify-image` (argparse only: cheap to
import, so `mlgate check` without --verify-images never loads the registry client)."""

from __future__ import annotations

import argparse


def add_registry_options(parser: argparse.ArgumentParser, *, auth_file: bool = True) -> None:
    """--insecure-registry, --registry-ca-file and (offline commands) --registry-auth."""
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="reach this registry over plain HTTP (repeatable); every other registry must "
        "serve HTTPS",
    )
    parser.add_argument(
        "--registry-ca-file",
        metavar="FILE",
        help="PEM CA bundle trusted for registries, on top of the system CAs",
    )
    if auth_file:
        parser.add_argument(
            "--registry-auth",
            metavar="FILE",
            help="registry credentials: a docker config.json or .dockerconfigjson file "
            "(default: $DOCKER_CONFIG/config.json or ~/.docker/config.json, if present)",
        )
