"""Image references and allowlist globs, attacked like an attacker would."""

from __future__ import annotations

import re

import pytest

from mlgate.engine.references import (
    InvalidReference,
    Reference,
    compile_pattern,
    matches,
    matches_any,
    parse,
)

SHA = "sha256:" + "4f1c" * 16
SHA384 = "sha384:" + "ab" * 48
SHA512 = "sha512:" + "cd" * 64


# --- parsing and normalisation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", Reference("docker.io", "library/nginx", None, None)),
        ("nginx:1.25", Reference("docker.io", "library/nginx", "1.25", None)),
        ("library/nginx", Reference("docker.io", "library/nginx", None, None)),
        ("docker.io/nginx", Reference("docker.io", "library/nginx", None, None)),
        ("docker.io/library/nginx", Reference("docker.io", "library/nginx", None, None)),
        ("index.docker.io/nginx:1", Reference("docker.io", "library/nginx", "1", None)),
        ("registry-1.docker.io/acme/x", Reference("docker.io", "acme/x", None, None)),
        (
            "pytorch/pytorch:2.3.0-cuda12.1",
            Reference("docker.io", "pytorch/pytorch", "2.3.0-cuda12.1", None),
        ),
        ("ghcr.io/acme/trainer:v1", Reference("ghcr.io", "acme/trainer", "v1", None)),
        ("GHCR.IO/acme/trainer", Reference("ghcr.io", "acme/trainer", None, None)),
        ("localhost:5000/x:tag", Reference("localhost:5000", "x", "tag", None)),
        ("localhost/x", Reference("localhost", "x", None, None)),
        ("[::1]:5000/ml/x:tag", Reference("[::1]:5000", "ml/x", "tag", None)),
        ("[fe80::1]/ml/x", Reference("[fe80::1]", "ml/x", None, None)),
        ("10.0.0.1:5000/ml/x", Reference("10.0.0.1:5000", "ml/x", None, None)),
        (f"ghcr.io/acme/x@{SHA}", Reference("ghcr.io", "acme/x", None, SHA)),
        (f"ghcr.io/acme/x:v1@{SHA}", Reference("ghcr.io", "acme/x", "v1", SHA)),
        (f"nginx:latest@{SHA}", Reference("docker.io", "library/nginx", "latest", SHA)),
        (f"ghcr.io/acme/x@{SHA384}", Reference("ghcr.io", "acme/x", None, SHA384)),
        (f"ghcr.io/acme/x@{SHA512}", Reference("ghcr.io", "acme/x", None, SHA512)),
        # an upper-case first component is a host, as in distribution/reference
        ("Registry/x", Reference("registry", "x", None, None)),
        # a single registry-like name without a path is a Docker Hub repository with a tag
        ("localhost:5000", Reference("docker.io", "library/localhost", "5000", None)),
        ("a.b-c.io/e_f.g__h-i", Reference("a.b-c.io", "e_f.g__h-i", None, None)),
    ],
)
def test_parse_normalises_like_the_runtime(text: str, expected: Reference) -> None:
    assert parse(text) == expected


def test_str_and_repository_are_normalised() -> None:
    ref = parse(f"index.docker.io/nginx:1.25@{SHA}")
    assert ref.repository == "docker.io/library/nginx"
    assert str(ref) == f"docker.io/library/nginx:1.25@{SHA}"


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("nginx", "latest"),
        ("nginx:1", "1"),
        (f"nginx@{SHA}", None),
        (f"nginx:LATEST@{SHA}", "LATEST"),
    ],
)
def test_effective_tag(text: str, tag: str | None) -> None:
    assert parse(text).effective_tag == tag


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (" nginx", "padded"),
        ("nginx ", "padded"),
        ("x" * 5000, "too long"),
        ("ghcr.io/Acme/x", "malformed repository path"),
        ("ghcr.io/acme//x", "malformed repository path"),
        ("ghcr.io/acme/x/", "malformed repository path"),
        ("ghcr.io/-acme/x", "malformed repository path"),
        ("ghcr.io/acme/x:", "malformed tag"),
        ("ghcr.io/acme/x:-v1", "malformed tag"),
        ("ghcr.io/acme/x:" + "a" * 129, "malformed tag"),
        # non-ASCII look-alikes are not tags a runtime accepts (a Cyrillic a in "latest")
        ("nginx:l\u0430test", "malformed tag"),
        ("nginx:\u0661", "malformed tag"),
        ("ghcr.io/acme/x@sha256:abc", "malformed digest"),
        ("ghcr.io/acme/x@" + SHA.upper(), "malformed digest"),
        ("ghcr.io/acme/x@sha256:" + "A" * 64, "sha256 digest must be 64 lower-case hex"),
        ("ghcr.io/acme/x@sha256:" + "a" * 65, "sha256 digest must be 64 lower-case hex"),
        # digest algorithms a runtime does not support are not pins
        ("ghcr.io/acme/x@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("ghcr.io/acme/x@sha512:" + "a" * 64, "digest"),
        (f"ghcr.io/acme/x@{SHA}@{SHA}", "malformed digest"),
        ("ghcr.io:abc/x", "malformed"),
        ("gh_cr.io/x", "malformed registry host"),
        ("-ghcr.io/x", "malformed registry host"),
        ("[::1/x", "malformed"),
        ("ghcr.io/acme/x y", "malformed"),
        ("ghcr.io/acme/x\n", "padded"),
        ("https://ghcr.io/acme/x", "malformed"),
    ],
)
def test_parse_rejects_invalid_references(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        parse(text)


# --- allowlist globs -------------------------------------------------------------------------


def _allows(pattern: str, image: str) -> bool:
    return matches(compile_pattern(pattern), parse(image))


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/acme/x",
        "ghcr.io/acme/x:v1",
        f"ghcr.io/acme/x@{SHA}",
        "ghcr.io/acme/team/model:v2",  # `*` spans path segments
        "GHCR.IO/acme/x",  # hosts are case-insensitive
    ],
)
def test_glob_admits_its_repositories(image: str) -> None:
    assert _allows("ghcr.io/acme/*", image)


@pytest.mark.parametrize(
    "image",
    [
        "evil.example/ghcr.io/acme/x",  # a path containing the trusted name stays on its host
        "evil.example:5000/ghcr.io/acme/x",
        "ghcr.io/acme-evil/x",
        "ghcr.io/acmex",
        "ghcr.io/acme",  # the organisation itself is not a repository under it
        "ghcr.io.evil.com/acme/x",
        "ghcr.io:443/acme/x",  # another host:port string: not matched (fails closed)
        "ghcr.io:5000/acme/x",
        "xghcr.io/acme/x",
        "docker.io/acme/x",
        "acme/x",  # Docker Hub
        "ghcr.io/evil/acme/x",
    ],
)
def test_glob_rejects_look_alikes(image: str) -> None:
    assert not _allows("ghcr.io/acme/*", image)


def test_pattern_host_is_case_insensitive() -> None:
    assert _allows("GHCR.IO/acme/*", "ghcr.io/acme/x")


def test_host_wildcard_stays_within_the_host() -> None:
    pattern = compile_pattern("*.gcr.io/proj/*")
    assert matches(pattern, parse("us.gcr.io/proj/trainer:v1"))
    assert matches(pattern, parse("eu.gcr.io/proj/a/b"))
    assert not matches(pattern, parse("gcr.io/proj/trainer"))  # needs a subdomain
    assert not matches(pattern, parse("evil.com/x.gcr.io/proj/trainer"))
    assert not matches(pattern, parse("us.gcr.io.evil.com/proj/trainer"))
    assert not matches(pattern, parse("us.gcr.io/other/trainer"))
    assert not matches(pattern, parse("us.gcr.io:444/proj/trainer"))


@pytest.mark.parametrize(
    ("pattern", "image", "expected"),
    [
        ("nginx", "nginx:1.25", True),
        ("nginx", "docker.io/library/nginx", True),
        ("nginx", "index.docker.io/library/nginx", True),
        ("docker.io/nginx", "nginx", True),
        ("index.docker.io/nginx", "nginx:1", True),
        ("docker.io/library/*", "python:3.11", True),
        ("library/*", "python:3.11", True),
        ("nginx", "evil/nginx", False),
        ("nginx", "ghcr.io/library/nginx", False),
        ("pytorch/*", "pytorch/pytorch:2.3.0", True),
        ("pytorch/*", "pytorchevil/pytorch", False),
        ("pytorch/*", "ghcr.io/pytorch/pytorch", False),
        # a wildcard in a Docker Hub namespace is not a host wildcard
        ("myorg*/*", "myorg-ml/trainer", True),
        ("myorg*/*", "myorg.attacker.com/trainer", False),
        ("myorg*/*", "myorg:5000/trainer", False),
        # a one-component Docker Hub glob names official images only
        ("ngin*", "nginx:1.25", True),
        ("ngin*", "nginevil/x", False),
        ("*", "python:3.11", True),
        ("*", "acme/x", False),
        ("*", "ghcr.io/acme/x", False),
        ("*/*", "acme/x", True),
        ("localhost:5000/*", "localhost:5000/x:tag", True),
        ("localhost:5000/*", "localhost:5001/x", False),
        ("localhost:5000/*", "localhost/x", False),
        ("[::1]:5000/ml/*", "[::1]:5000/ml/x:tag", True),
        ("registry.example.com/ml/*", "registry.example.com/ml/llm/vllm:0.5", True),
        ("registry.example.com/ml/*", "registry.example.com/mlevil/x", False),
        ("registry.example.com/ml/llm", "registry.example.com/ml/llm:1", True),
        ("registry.example.com/ml/llm", "registry.example.com/ml/llm2", False),
        ("registry.example.com/ml/llm", "registry.example.com/ml/llm/sub", False),
    ],
)
def test_pattern_semantics(pattern: str, image: str, expected: bool) -> None:
    assert _allows(pattern, image) is expected


def test_matches_any() -> None:
    patterns = (compile_pattern("ghcr.io/acme/*"), compile_pattern("registry.example.com/ml/*"))
    assert matches_any(patterns, parse("registry.example.com/ml/x"))
    assert not matches_any(patterns, parse("quay.io/acme/x"))
    assert not matches_any((), parse("ghcr.io/acme/x"))


def test_pattern_keeps_its_source() -> None:
    assert compile_pattern("GHCR.IO/acme/*").source == "GHCR.IO/acme/*"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "invalid image pattern"),
        ("   ", "invalid image pattern"),
        ("ghcr.io/acme/x:v1", "names a tag"),
        (f"ghcr.io/acme/x@{SHA}", "invalid image pattern"),
        ("ghcr.io/Acme/*", "invalid repository glob"),
        ("ghcr.io/", "invalid repository glob"),
        ("ghcr.io/ac me/*", "invalid image pattern"),
        ("ghcr.io/acme/\u0445", "invalid repository glob"),
        ("ghcr.io:abc/acme/*", "invalid registry host"),
        ("gh_cr.io/acme/*", "invalid registry host"),
        ("ghcr..io/acme/*", "invalid registry host"),
        ("ghcr.io:/acme/*", "invalid registry host"),
        ("[::1/acme/*", "invalid registry host"),
    ],
)
def test_invalid_patterns_are_rejected(pattern: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        compile_pattern(pattern)


@pytest.mark.parametrize("pattern", ["ghcr.io", "localhost:5000", "registry.example.com"])
def test_bare_registry_host_pattern_is_rejected_with_a_hint(pattern: str) -> None:
    with pytest.raises(InvalidReference, match=rf"write {re.escape(pattern)}/\*"):
        compile_pattern(pattern)
