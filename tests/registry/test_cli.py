"""`mlgate verify-image` and `mlgate check --verify-images`, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.registry.lab import CosignKey, DistributionRegistry, Tools


def mlgate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlgate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd or Path.cwd())},
    )


def write_key(tmp_path: Path, key: CosignKey) -> str:
    path = tmp_path / f"{key.name}.pub"
    path.write_text(key.public_pem)
    return str(path)


def test_verify_image(
    tmp_path: Path,
    tools: Tools,
    plain: DistributionRegistry,
    trusted_key: CosignKey,
    other_key: CosignKey,
) -> None:
    image = tools.push(plain, "ml/cli")
    tools.sign(plain, image, trusted_key)
    tools.sign(plain, image, other_key, bundle=True)
    key = write_key(tmp_path, trusted_key)
    insecure = ["--insecure-registry", plain.host]

    ok = mlgate("verify-image", image.by_tag, "--key", key, *insecure, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"digest:     {image.digest}" in ok.stdout
    assert "[cosign]" in ok.stdout and "[bundle]" in ok.stdout  # every signature found is shown
    assert "result:     VERIFIED by" in ok.stdout and key in ok.stdout

    other = write_key(tmp_path, other_key)
    both = mlgate(
        "verify-image",
        image.by_digest,
        "--key",
        key,
        "--key",
        other,
        *insecure,
        "-o",
        "json",
        cwd=tmp_path,
    )
    assert both.returncode == 0
    assert sorted(json.loads(both.stdout)["verifiedBy"]) == sorted([key, other])

    unsigned = tools.push(plain, "ml/cli-unsigned")
    no = mlgate("verify-image", unsigned.by_digest, "--key", key, *insecure, cwd=tmp_path)
    assert no.returncode == 1
    assert "NOT VERIFIED: no cosign signature found" in no.stdout

    http = mlgate("verify-image", image.by_digest, "--key", key, cwd=tmp_path)  # not insecure
    assert http.returncode == 1 and "unreachable" in http.stdout

    for bad in (
        ["verify-image", image.by_digest],
        ["verify-image", "Not A Reference", "--key", key],
        ["verify-image", image.by_digest, "--key", str(tmp_path / "missing.pub")],
        ["verify-image", image.by_digest, "--key", key, "--registry-ca-file", "/nonexistent"],
    ):
        out = mlgate(*bad, cwd=tmp_path)
        assert out.returncode == 2, (bad, out.stdout, out.stderr)
        assert out.stderr.startswith("mlgate verify-image: ")


def _policy(registry: DistributionRegistry, key: CosignKey) -> dict[str, Any]:
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": "signed-only"},
        "spec": {
            "mode": "Enforce",
            "images": {
                "signatures": [
                    {"images": [f"{registry.host}/ml/*"], "keys": [{"publicKey": key.public_pem}]}
                ]
            },
        },
    }


def _deployment(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}] * 3},
            },
        },
    }


def test_check_verify_images(
    tmp_path: Path, tools: Tools, plain: DistributionRegistry, trusted_key: CosignKey
) -> None:
    signed = tools.push(plain, "ml/check-signed")
    tools.sign(plain, signed, trusted_key, bundle=True)
    unsigned = tools.push(plain, "ml/check-unsigned")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(_policy(plain, trusted_key)))
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_deployment("good", signed.by_tag)))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_deployment("bad", unsigned.by_digest)))
    flags = ["--verify-images", "--insecure-registry", plain.host, "-p", str(policy)]

    out = mlgate("check", *flags, str(good), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    out = mlgate("check", *flags, str(good), str(bad), cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "images.signature" in out.stdout
    assert f"no cosign signature found for {unsigned.by_digest}" in out.stdout
    # Without --verify-images signatures stay unverified, and say so.
    out = mlgate("check", "-p", str(policy), str(good), cwd=tmp_path)
    assert out.returncode == 0 and "signature not verified offline" in out.stdout, out.stdout
    out = mlgate("check", *flags, "--registry-ca-file", "/nonexistent", str(good), cwd=tmp_path)
    assert out.returncode == 2 and "--registry-ca-file" in out.stderr
