"""Image references parsed the way container runtimes resolve them.

Matching is done on the normalised form, so `nginx` is `docker.io/library/nginx` and a path that
merely contains a trusted registry name (`evil.example/ghcr.io/acme/x`) stays on its own host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from mlgate.engine.policy import ImagePattern

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

# Grammar of github.com/distribution/reference.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)
# ASCII only: in a str pattern `\w` would also admit look-alikes such as Cyrillic letters.
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}")
# The algorithms go-digest (so every runtime) accepts, with their lower-case hex lengths.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_MAX_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class Reference:
    host: str  # lower-cased, docker.io for Docker Hub
    path: str  # repository path on that host, e.g. library/nginx
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.host}/{self.path}"

    @property
    def effective_tag(self) -> str | None:
        """The tag a runtime pulls: `latest` when neither tag nor digest is given."""
        if self.tag is None and self.digest is None:
            return "latest"
        return self.tag

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.repository}{tag}{digest}"


class InvalidReference(ValueError):
    """Raised by `parse` with a message that says what is wrong with the reference."""


def _looks_like_host(component: str) -> bool:
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or component.lower() != component
    )


def _split_digest(text: str) -> tuple[str, str | None]:
    name, sep, digest = text.partition("@")
    if not sep:
        return text, None
    if not _DIGEST_RE.fullmatch(digest):
        raise InvalidReference(f"malformed digest {digest!r}")
    algorithm, _, encoded = digest.partition(":")
    length = _DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        raise InvalidReference(
            f"unsupported digest algorithm {algorithm!r} in {digest!r}: use sha256"
        )
    if len(encoded) != length or encoded != encoded.lower():
        raise InvalidReference(
            f"{algorithm} digest must be {length} lower-case hex digits: {digest!r}"
        )
    return name, digest


def _split_tag(name: str) -> tuple[str, str | None]:
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon <= slash:
        return name, None
    tag = name[colon + 1 :]
    if not _TAG_RE.fullmatch(tag):
        raise InvalidReference(f"malformed tag {tag!r}")
    return name[:colon], tag


def _split_host(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and _looks_like_host(first):
        if not _HOST_RE.fullmatch(first):
            raise InvalidReference(f"malformed registry host {first!r}")
        host = first.lower()
        return (DOCKER_HUB if host in _HUB_ALIASES else host), rest
    return DOCKER_HUB, name


@lru_cache(maxsize=8192)
def parse(text: str) -> Reference:
    """Parse and normalise an image reference; raise InvalidReference when it is malformed."""
    if not text or len(text) > _MAX_LENGTH or text != text.strip():
        raise InvalidReference("image reference is empty, too long or padded with spaces")
    name, digest = _split_digest(text)
    name, tag = _split_tag(name)
    host, path = _split_host(name)
    if not _PATH_RE.fullmatch(path):
        raise InvalidReference(
            f"malformed repository path {path!r} (lower-case letters, digits and . _ - only)"
        )
    if host == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return Reference(host=host, path=path, tag=tag, digest=digest)


def _glob_regex(glob: str, wildcard: str) -> re.Pattern[str]:
    parts = (re.escape(p) for p in glob.split("*"))
    return re.compile(wildcard.join(parts))


def compile_pattern(source: str) -> ImagePattern:
    """Compile an allowlist glob such as `ghcr.io/acme/*` or `nginx`.

    The host is matched on its own (a `*` there stays within the host name), so a trusted name
    can never be satisfied by a path on another registry. The first component is a host only
    when it looks like one (a `.`, a `:`, `localhost`), exactly as in image references. In the
    repository path `*` matches any characters, `/` included: `ghcr.io/acme/*` admits
    `ghcr.io/acme/team/model`.
    A tag or digest in the pattern is not allowed: patterns name repositories.
    """
    text = source.strip()
    if not text or any(c in text for c in " @\t"):
        raise InvalidReference(f"invalid image pattern {source!r}")
    first, sep, rest = text.partition("/")
    if not sep and ("." in first or ":" in first):
        raise InvalidReference(
            f"image pattern {source!r} names only a registry host; write {first}/* to allow "
            "every repository on it"
        )
    # The first component names a host exactly when it would in a reference: `myorg*/x` is a
    # Docker Hub namespace glob, never a host glob that `myorg.attacker.com/x` could satisfy.
    if sep and _looks_like_host(first):
        host_glob, path_glob = first.lower(), rest
        if not _HOST_RE.fullmatch(host_glob.replace("*", "0")):
            raise InvalidReference(f"invalid registry host in image pattern {source!r}")
        if host_glob in _HUB_ALIASES:
            host_glob = DOCKER_HUB
    else:
        host_glob, path_glob = DOCKER_HUB, text
    # As in references, a one-component Docker Hub name is an official image: `nginx` (and
    # `docker.io/nginx`) is docker.io/library/nginx, and `ngin*` does not admit `nginevil/x`.
    if host_glob == DOCKER_HUB and "/" not in path_glob:
        path_glob = f"library/{path_glob}"
    if ":" in path_glob:
        raise InvalidReference(f"image pattern {source!r} names a tag; patterns match repositories")
    if not path_glob or not re.fullmatch(r"[a-z0-9._*/-]+", path_glob):
        raise InvalidReference(f"invalid repository glob in image pattern {source!r}")
    return ImagePattern(
        source=source,
        host=_glob_regex(host_glob, r"[^/]*"),
        path=_glob_regex(path_glob, r".*"),
    )


def matches(pattern: ImagePattern, ref: Reference) -> bool:
    return bool(pattern.host.fullmatch(ref.host) and pattern.path.fullmatch(ref.path))


def matches_any(patterns: tuple[ImagePattern, ...], ref: Reference) -> bool:
    return any(matches(p, ref) for p in patterns)
