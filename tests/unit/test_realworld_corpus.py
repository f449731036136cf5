"""Every upstream manifest in ../shared/realworld (SOURCES.md there) is judged under a policy
that turns every rule on: verdicts, or input errors for documents that are not Kubernetes
objects, but never an engine error. Found a crash once: labels written as a string."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlgate import cli
from tests.unit.factories import realworld

EVERY_RULE = """
apiVersion: mlgate.io/v1alpha1
kind: ClusterMLPolicy
metadata: {name: every-rule}
spec:
  mode: Enforce
  images: {allowedRegistries: ["registry.example.com/*"], requireDigest: true,
           disallowTags: [latest]}
  models: {requireApproved: true, requireImmutable: true, requireDigest: true}
  egress: {networkPolicy: {manage: true, allowedCIDRs: ["10.0.0.0/8"]}}
  gpu: {maxPerPod: 8, maxPerWorkload: 16, namespaceQuota: 32,
        allowedProducts: ["NVIDIA-H100-80GB-HBM3"]}
  llm: {requireGuardrail: {}, noDirectExposure: true, requireRateLimit: true}
"""


def test_every_upstream_manifest_is_judged_without_an_engine_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = realworld()
    if root is None:
        pytest.skip("../shared/realworld is not present")
    policy = tmp_path / "policy.yaml"
    policy.write_text(EVERY_RULE)
    code = cli.main(["check", "-p", str(policy), "-o", "json", str(root)])
    out, err = capsys.readouterr()
    assert "bug in mlgate" not in err, err
    assert code == 1, err  # judged, and plenty of it is noncompliant under these rules
    report = json.loads(out)
    assert report["summary"]["workloads"] > 400
    assert report["summary"]["denied"] > 0 and report["summary"]["compliant"] > 0
