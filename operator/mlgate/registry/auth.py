"""Registry credentials: dockerconfigjson Secrets and the distribution auth challenges (pure).

Credentials come from `kubernetes.io/dockerconfigjson` (and legacy `kubernetes.io/dockercfg`)
Secrets, matched to a registry by host the way the kubelet does: `https://host/v1/`, `host`,
`host:port` and Docker Hub's `https://index.docker.io/v1/` all name their host.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DOCKER_HUB = "docker.io"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"Credential(username={self.username!r}, password=***)"

    @property
    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    @property
    def fingerprint(self) -> str:
        """Identifies the credential in cache keys without revealing it."""
        return hashlib.sha256(f"{self.username}\0{self.password}".encode()).hexdigest()[:16]


class AuthConfigError(ValueError):
    """A pull Secret that cannot be used; the message says what to fix."""


def registry_host(server: str) -> str:
    """The host[:port] a docker config key names (`https://ghcr.io/v1/` -> `ghcr.io`)."""
    text = server.strip()
    host = urlsplit(text).netloc if "://" in text else text.split("/", 1)[0]
    host = host.lower()
    return DOCKER_HUB if host in _HUB_NAMES else host


def _entry_credential(entry: Any) -> Credential | None:
    if not isinstance(entry, Mapping):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, ValueError):
            return None
        user, sep, password = decoded.partition(":")
        return Credential(user, password) if sep else None
    username, secret = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(secret, str):
        return Credential(username, secret)
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:  # an OAuth2 refresh token, as docker login stores
        return Credential("<token>", token)
    return None


def parse_docker_config(raw: bytes | str) -> dict[str, Credential]:
    """host -> credential from a `.dockerconfigjson` (`{"auths": {...}}`) or `.dockercfg`."""
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"not a docker config JSON document ({exc})") from None
    if not isinstance(doc, Mapping):
        raise AuthConfigError("not a docker config JSON object")
    auths = doc.get("auths", doc)  # .dockercfg is the bare auths map
    if not isinstance(auths, Mapping):
        raise AuthConfigError("`auths` is not an object")
    found: dict[str, Credential] = {}
    for server, entry in auths.items():
        credential = _entry_credential(entry)
        if isinstance(server, str) and credential is not None:
            found.setdefault(registry_host(server), credential)
    return found


SECRET_KEYS = (".dockerconfigjson", ".dockercfg")


def credentials_from_secret(secret: Mapping[str, Any], label: str) -> dict[str, Credential]:
    """Credentials from a Secret object (base64 `data`); raises AuthConfigError naming it."""
    data = secret.get("data")
    if not isinstance(data, Mapping):
        raise AuthConfigError(f"pull Secret {label} has no data")
    for key in SECRET_KEYS:
        value = data.get(key)
        if isinstance(value, str):
            try:
                return parse_docker_config(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise AuthConfigError(f"pull Secret {label} key {key}: {exc}") from None
    raise AuthConfigError(f"pull Secret {label} has neither {' nor '.join(SECRET_KEYS)}")


def merge(configs: Iterable[Mapping[str, Credential]]) -> dict[str, Credential]:
    """First one wins, as the kubelet tries a pod's pull secrets in order."""
    merged: dict[str, Credential] = {}
    for config in configs:
        for host, credential in config.items():
            merged.setdefault(host, credential)
    return merged


# ---------------------------------------------------------------------------------------------
# WWW-Authenticate challenges

_PARAM = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lower-case: "bearer" or "basic"
    params: Mapping[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """`Bearer realm="https://auth",service="reg",scope="repository:x:pull"` -> Challenge."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            break
        value = match.group(2) if match.group(2) is not None else match.group(3) or ""
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = match.end()
    return Challenge(scheme.lower(), params)
