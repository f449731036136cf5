"""`mlgate run` as a child process against a (local) cluster, for the demo and e2e tests.

The webhook is registered by URL on 127.0.0.1 with a self-managed certificate, the way
`make demo` runs it; a real cluster would use the Helm chart's Service instead.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from mlgate.engine.related import RELATED
from mlgate.engine.workloads import SUPPORTED

# Both configurations `mlgate run --register-webhook-url` creates, for `kubectl delete` after a
# run: one left behind would make the apiserver fail every governed request (failurePolicy Fail).
WEBHOOK_CONFIG_KINDS = "validatingwebhookconfiguration,mutatingwebhookconfiguration"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MlgateProcess:
    """`mlgate run` in a child process; the context manager stops it (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        namespace: str = "mlgate-system",
        webhook_config: str = "mlgate",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 60.0,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.namespace = namespace
        self.webhook_config = webhook_config
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlgate", "run",
            "--kubeconfig", str(self.kubeconfig),
            "--namespace", self.namespace,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--cert-ip", "127.0.0.1",
            "--webhook-config", self.webhook_config,
            "--mutating-webhook-config", self.webhook_config,
            "--register-webhook-url", self.url,
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready()
        return self

    def _probe(self, path: str) -> int:
        # Loopback readiness probe only: the server's CA is what the apiserver must trust.
        context = ssl._create_unverified_context()  # noqa: S323
        try:
            with urllib.request.urlopen(self.url + path, context=context, timeout=2) as resp:  # noqa: S310
                status: int = resp.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"mlgate run exited with {code}:\n{self.log_tail()}")
            if self._probe("/readyz") == 200:
                return
            time.sleep(0.2)
        waited = f"{self.ready_timeout:g}s"
        raise RuntimeError(f"mlgate run not ready after {waited}:\n{self.log_tail()}")

    def metrics(self) -> str:
        context = ssl._create_unverified_context()  # noqa: S323
        with urllib.request.urlopen(self.url + "/metrics", context=context, timeout=5) as resp:  # noqa: S310
            text: str = resp.read().decode()
            return text

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """Simulate a crash: SIGKILL, no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_BUILT_IN_GROUPS = frozenset({"", "apps", "batch", "networking.k8s.io", "resource.k8s.io"})


# Gateways are not read by the llm rules (routes name them), but demos and tests create them.
_GATEWAY = ("gateway.networking.k8s.io", "Gateway", "gateways", ("v1",), "Namespaced")


def _stand_in_kinds() -> list[tuple[str, str, str, tuple[str, ...], str]]:
    """(group, kind, plural, versions, scope) of every custom kind mlgate judges or reads:
    the supported workload kinds, and the guardrail, gateway and route kinds of the llm rules."""
    kinds = {
        (s.group, s.plural): (s.group, s.kind, s.plural, s.versions, s.scope) for s in SUPPORTED
    }
    for r in RELATED:
        scope = "Namespaced" if r.namespaced else "Cluster"
        kinds.setdefault((r.group, r.plural), (r.group, r.kind, r.plural, r.versions, scope))
    kinds.setdefault((_GATEWAY[0], _GATEWAY[2]), _GATEWAY)
    return [k for k in kinds.values() if k[0] not in _BUILT_IN_GROUPS]


def _approval(group: str) -> dict[str, str]:
    """The apiserver protects *.k8s.io groups: a CRD there must say it is not API-reviewed."""
    if group.endswith((".k8s.io", ".kubernetes.io")):
        return {"api-approved.kubernetes.io": "unapproved, mlgate stand-in for tests"}
    return {}


def stand_in_crds() -> list[dict[str, Any]]:
    """Schema-less CRDs for every supported ML kind, so a bare control plane can store them.

    Real clusters install KServe, Kubeflow, Ray, ... themselves; mlgate only needs the kinds to
    exist to be called for them.
    """
    crds = []
    for group, kind, plural, versions, scope in _stand_in_kinds():
        schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        crds.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.{group}", "annotations": _approval(group)},
                "spec": {
                    "group": group,
                    "scope": scope,
                    "names": {
                        "kind": kind,
                        "plural": plural,
                        "singular": kind.lower(),
                        "listKind": f"{kind}List",
                    },
                    "versions": [
                        {
                            "name": version,
                            "served": True,
                            "storage": i == 0,
                            "schema": {"openAPIV3Schema": schema},
                        }
                        for i, version in enumerate(versions)
                    ],
                },
            }
        )
    return crds
