"""Real parts on loopback for the registry tests: Debian's distribution registry, skopeo and a
cosign built from source, plus OCI image layouts built here and a token service.

Everything listens on 127.0.0.1 and every process runs in its own process group, stopped by the
fixtures that start it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from mlgate.devcluster import CertificateAuthority
from mlgate.devrun import free_port
from tests.registry.htpasswd import htpasswd_line

REPO_ROOT = Path(__file__).resolve().parents[2]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
COSIGN_PASSWORD = "mlgate-test-password"


class ToolMissing(RuntimeError):
    pass


def tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else "")
    if not found:
        raise ToolMissing(
            f"{name} not found: run `make registry-assets` (installs it with apt-get)"
        )
    return found


def cosign_binary() -> str:
    proc = subprocess.run(
        [str(REPO_ROOT / "hack" / "cosign-assets.sh"), "--print"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ToolMissing(proc.stderr.strip() or "cosign not built: run `make registry-assets`")
    return proc.stdout.strip()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    context = ssl._create_unverified_context()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} server exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):
                return
        except urllib.error.HTTPError:
            return  # 401: up, and asking for credentials
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not up after {timeout}s: {log.read_text(errors='replace')[-3000:]}")


# ---------------------------------------------------------------------------------------------
# Token service (the distribution "token" auth scheme: Docker Hub, GHCR, Harbor, ... work so)


class TokenService:
    """Issues ES256 JWTs with an x5c header to a fixed user, for the registry's `auth: token`."""

    def __init__(self, workdir: Path, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlgate-test-token-signer")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = workdir / "token-signer.crt"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.service, self.issuer = "mlgate-test-registry", "mlgate-test-issuer"
        self.requests = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                service.requests += 1
                query = parse_qs(urlsplit(self.path).query)
                header = self.headers.get("Authorization", "")
                expected = base64.b64encode(f"{service.user}:{service.password}".encode()).decode()
                if header != f"Basic {expected}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps(
                    {"token": service.token(query.get("scope", [])), "expires_in": 300}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def token(self, scopes: Sequence[str]) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")[0], scope.split(":")[1], scope.split(":")[2]
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.issuer,
            "sub": self.user,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 30,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def start(self) -> TokenService:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------
# The distribution registry


@dataclass
class Auth:
    user: str
    password: str

    @property
    def creds(self) -> str:
        return f"{self.user}:{self.password}"

    def dockerconfigjson(self, host: str) -> bytes:
        auth = base64.b64encode(self.creds.encode()).decode()
        return json.dumps({"auths": {host: {"auth": auth}}}).encode()


class DistributionRegistry:
    """`docker-registry serve` (distribution v2) on 127.0.0.1: plain HTTP, TLS, basic or token
    auth."""

    def __init__(
        self,
        workdir: Path,
        *,
        ca: CertificateAuthority | None = None,
        basic: Auth | None = None,
        token: TokenService | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca = ca
        self.auth = basic or (Auth(token.user, token.password) if token else None)
        self.basic = basic
        self.token = token
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "registry.log"
        self.ca_file: Path | None = None

    @property
    def tls(self) -> bool:
        return self.ca is not None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _config(self) -> str:
        http: dict[str, Any] = {"addr": self.host, "secret": uuid.uuid4().hex}
        if self.ca is not None:
            cert, key = self.ca.issue_files(
                self.workdir, "registry", "127.0.0.1", ip_addresses=["127.0.0.1"], server=True
            )
            http["tls"] = {"certificate": str(cert), "key": str(key)}
            self.ca_file = self.workdir / "ca.crt"
            self.ca_file.write_bytes(self.ca.cert_pem)
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "data")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if self.basic is not None:
            path = self.workdir / "htpasswd"
            path.write_text(htpasswd_line(self.basic.user, self.basic.password))
            config["auth"] = {"htpasswd": {"realm": "mlgate-test", "path": str(path)}}
        if self.token is not None:
            config["auth"] = {
                "token": {
                    "realm": self.token.realm,
                    "service": self.token.service,
                    "issuer": self.token.issuer,
                    "rootcertbundle": str(self.token.bundle),
                }
            }
        return json.dumps(config)  # JSON is YAML

    def start(self) -> DistributionRegistry:
        config = self.workdir / "config.yml"
        config.write_text(self._config())
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [tool("docker-registry"), "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        _wait_http(f"{self.url}/v2/", 30, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    # -- raw distribution API (to plant what no honest tool would push) -------------------------

    def _headers(self) -> dict[str, str]:
        if self.auth is None:
            return {}
        if self.basic is not None:
            return {"Authorization": "Basic " + base64.b64encode(self.auth.creds.encode()).decode()}
        assert self.token is not None
        return {"Authorization": "Bearer " + self.token.token(["repository:*:pull,push"])}

    def _open(self, request: urllib.request.Request) -> Any:
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
        for key, value in self._headers().items():
            request.add_header(key, value)
        return urllib.request.urlopen(request, timeout=30, context=context)

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        start = urllib.request.Request(f"{self.url}/v2/{repo}/blobs/uploads/", method="POST")
        with self._open(start) as response:
            location = response.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        put = urllib.request.Request(
            f"{location}{sep}digest={digest}",
            data=data,
            method="PUT",
            headers={"Content-Type": "application/octet-stream"},
        )
        with self._open(put):
            pass
        return digest

    def put_manifest(self, repo: str, reference: str, manifest: dict[str, Any]) -> str:
        body = json.dumps(manifest).encode()
        request = urllib.request.Request(
            f"{self.url}/v2/{repo}/manifests/{reference}",
            data=body,
            method="PUT",
            headers={"Content-Type": manifest["mediaType"]},
        )
        with self._open(request):
            pass
        return sha256(body)

    def get_manifest(self, repo: str, reference: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/v2/{repo}/manifests/{reference}",
            headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
        )
        with self._open(request) as response:
            doc: dict[str, Any] = json.loads(response.read())
            return doc

    def get_blob(self, repo: str, digest: str) -> bytes:
        with self._open(urllib.request.Request(f"{self.url}/v2/{repo}/blobs/{digest}")) as r:
            data: bytes = r.read()
            return data


# ---------------------------------------------------------------------------------------------
# Images as OCI layouts, pushed with skopeo


def _layer(seed: str) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = f"mlgate test image {seed}\n".encode()
        info = tarfile.TarInfo("model/README")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), sha256(uncompressed)


class Layout:
    """An OCI image layout directory holding one image (or index) under one tag."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(self, seed: str, arch: str = "amd64") -> dict[str, Any]:
        layer, diff_id = _layer(f"{seed}-{arch}")
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": {"seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(json.dumps(config).encode(), OCI_CONFIG),
            "layers": [self.blob(layer, OCI_LAYER)],
        }
        return self.blob(json.dumps(manifest).encode(), OCI_MANIFEST)

    def tag(self, descriptor: dict[str, Any], tag: str) -> None:
        entry = dict(descriptor, annotations={"org.opencontainers.image.ref.name": tag})
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
        (self.path / "index.json").write_text(json.dumps(index))


@dataclass(frozen=True)
class Pushed:
    host: str
    repo: str
    tag: str
    digest: str

    @property
    def by_tag(self) -> str:
        return f"{self.host}/{self.repo}:{self.tag}"

    @property
    def by_digest(self) -> str:
        return f"{self.host}/{self.repo}@{self.digest}"


@dataclass(frozen=True)
class CosignKey:
    name: str
    private: Path  # cosign-encrypted private key
    public_pem: str


class Tools:
    """skopeo and cosign, pointed at the lab's registries."""

    def __init__(self, workdir: Path, cosign: str) -> None:
        self.workdir = workdir
        self.cosign_path = cosign
        self.skopeo_path = tool("skopeo")
        self.docker_config = workdir / "docker"
        self.docker_config.mkdir(parents=True, exist_ok=True)
        self._auths: dict[str, Any] = {}
        self.ca_bundle = workdir / "ca-bundle.crt"
        system = Path("/etc/ssl/certs/ca-certificates.crt")
        self.ca_bundle.write_bytes(system.read_bytes() if system.exists() else b"")
        self.counter = 0

    def trust(self, registry: DistributionRegistry) -> None:
        if registry.ca is not None:
            with self.ca_bundle.open("ab") as bundle:
                bundle.write(registry.ca.cert_pem)
        if registry.auth is not None:
            auth = base64.b64encode(registry.auth.creds.encode()).decode()
            self._auths[registry.host] = {"auth": auth}
            (self.docker_config / "config.json").write_text(json.dumps({"auths": self._auths}))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            COSIGN_PASSWORD=COSIGN_PASSWORD,
            DOCKER_CONFIG=str(self.docker_config),
            REGISTRY_AUTH_FILE=str(self.docker_config / "config.json"),
            SSL_CERT_FILE=str(self.ca_bundle),
            HOME=str(self.workdir),
            TUF_ROOT=str(self.workdir / "tuf"),
            SIGSTORE_NO_CACHE="true",
        )
        return env

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.workdir,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    # -- keys -----------------------------------------------------------------------------------

    def generate_key(self, name: str) -> CosignKey:
        prefix = self.workdir / "keys" / name
        prefix.parent.mkdir(exist_ok=True)
        self.run(self.cosign_path, "generate-key-pair", "--output-key-prefix", str(prefix))
        return CosignKey(name, prefix.with_suffix(".key"), prefix.with_suffix(".pub").read_text())

    def import_key(self, name: str, private: Any) -> CosignKey:
        """A key made here (RSA, Ed25519, ...) imported into cosign's format."""
        prefix = self.workdir / "keys" / name
        prefix.parent.mkdir(exist_ok=True)
        pem = prefix.with_suffix(".pem")
        pem.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.run(
            self.cosign_path,
            "import-key-pair",
            "--key",
            str(pem),
            "--output-key-prefix",
            str(prefix),
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return CosignKey(name, prefix.with_suffix(".key"), public.decode())

    # -- images ---------------------------------------------------------------------------------

    def push(
        self,
        registry: DistributionRegistry,
        repo: str,
        tag: str = "v1",
        *,
        seed: str | None = None,
        arches: Sequence[str] = (),
    ) -> Pushed:
        self.counter += 1
        layout = Layout(self.workdir / "layouts" / f"{repo.replace('/', '_')}-{self.counter}")
        seed = seed or uuid.uuid4().hex
        if arches:
            manifests = []
            for arch in arches:
                descriptor = layout.image(seed, arch)
                manifests.append(dict(descriptor, platform={"architecture": arch, "os": "linux"}))
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
            top = layout.blob(json.dumps(index).encode(), OCI_INDEX)
        else:
            top = layout.image(seed)
        layout.tag(top, tag)
        digest_file = layout.path.with_suffix(".digest")
        self.run(
            self.skopeo_path,
            "copy",
            "--quiet",
            *(["--all"] if arches else []),
            "--preserve-digests",
            f"--dest-tls-verify={'true' if registry.tls else 'false'}",
            *(["--dest-creds", registry.auth.creds] if registry.auth else []),
            "--digestfile",
            str(digest_file),
            f"oci:{layout.path}:{tag}",
            f"docker://{registry.host}/{repo}:{tag}",
        )
        digest = digest_file.read_text().strip()
        assert digest == top["digest"], (digest, top)
        return Pushed(registry.host, repo, tag, digest)

    def copy(self, registry: DistributionRegistry, src: str, dst: str) -> None:
        """skopeo copy between two references of the same registry, digests preserved."""
        tls = "true" if registry.tls else "false"
        creds = (
            ["--src-creds", registry.auth.creds, "--dest-creds", registry.auth.creds]
            if registry.auth
            else []
        )
        self.run(
            self.skopeo_path,
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            f"--src-tls-verify={tls}",
            f"--dest-tls-verify={tls}",
            *creds,
            f"docker://{registry.host}/{src}",
            f"docker://{registry.host}/{dst}",
        )

    # -- signing --------------------------------------------------------------------------------

    def _registry_flags(self, registry: DistributionRegistry) -> list[str]:
        return [] if registry.tls else ["--allow-insecure-registry", "--allow-http-registry"]

    def sign(
        self, registry: DistributionRegistry, image: Pushed, key: CosignKey, *, bundle: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """cosign sign --key, no transparency log, classic or sigstore-bundle format."""
        return self.run(
            self.cosign_path,
            "sign",
            "--key",
            str(key.private),
            "--tlog-upload=false",
            "--yes",
            *self._registry_flags(registry),
            *(["--new-bundle-format=true", "--use-signing-config=false"] if bundle else []),
            image.by_digest,
        )

    def verify(
        self, registry: DistributionRegistry, image: str, key: CosignKey, *, bundle: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """cosign's own verdict, to compare ours with."""
        pub = self.workdir / "keys" / f"{key.name}.pub"
        pub.write_text(key.public_pem)
        return self.run(
            self.cosign_path,
            "verify",
            "--key",
            str(pub),
            "--insecure-ignore-tlog=true",
            *self._registry_flags(registry),
            *(["--new-bundle-format=true"] if bundle else []),
            image,
            check=False,
        )

    def sign_blob(self, key: CosignKey, payload: bytes) -> str:
        """cosign sign-blob: base64 signature over arbitrary bytes (for crafted payloads)."""
        path = self.workdir / f"payload-{uuid.uuid4().hex}.json"
        path.write_bytes(payload)
        out = self.run(
            self.cosign_path,
            "sign-blob",
            "--key",
            str(key.private),
            "--tlog-upload=false",
            "--yes",
            str(path),
        )
        return out.stdout.strip().splitlines()[-1]

    def attach_signature(
        self, registry: DistributionRegistry, image: Pushed, payload: bytes, signature: str
    ) -> None:
        """cosign attach signature: a payload and its signature as a classic .sig layer."""
        payload_path = self.workdir / f"attach-{uuid.uuid4().hex}.json"
        payload_path.write_bytes(payload)
        sig_path = payload_path.with_suffix(".sig")
        sig_path.write_text(signature)
        self.run(
            self.cosign_path,
            "attach",
            "signature",
            "--payload",
            str(payload_path),
            "--signature",
            str(sig_path),
            *self._registry_flags(registry),
            image.by_digest,
        )


def simplesigning_payload(
    image: Pushed, digest: str | None = None, kind: str = "cosign container image signature"
) -> bytes:
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": f"{image.host}/{image.repo}"},
                "image": {"docker-manifest-digest": digest or image.digest},
                "type": kind,
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()


def new_private_key(kind: str) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


@contextlib.contextmanager
def running(*servers: Any) -> Iterator[None]:
    started = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        yield
    finally:
        for server in reversed(started):
            server.stop()
