"""Policies cannot fail open, across restarts, behind the real kube-apiserver.

mlgate refuses a policy that would not compile; one that got in anyway while mlgate was down
(its webhook configuration gone) keeps its last good version in force after the restart,
from status.lastGood, and a policy that never had a good version denies in its scope.

Own module, no module-wide mlgate: the test needs a window with no mlgate at all.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from mlgate.devcluster import Cluster
from mlgate.devrun import WEBHOOK_CONFIG_KINDS, MlgateProcess
from tests.e2e.test_egress import apply, eventually, get_json

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_CONFIG = "mlgate-fail-closed-e2e"
GOOD = "registry.example.com/ml/serve@sha256:" + "a" * 64
ELSEWHERE = "docker.io/evil/miner@sha256:" + "b" * 64
UNCOMPILABLE = {"allowedRegistries": ["ghcr.io/acme/x:latest"]}  # schema-valid, not compilable


def policy(name: str, namespace: str, images: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": name},
        "spec": {"mode": "Enforce", "match": {"namespaces": [namespace]}, "images": images},
    }


def deployment(name: str, namespace: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "m", "image": image}]},
            },
        },
    }


def ready(cp: Cluster, name: str) -> dict[str, Any] | None:
    status = (get_json(cp, "clustermlpolicy", name) or {}).get("status", {})
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)


def test_policies_fail_closed_across_restarts(
    control_plane: Cluster, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    cp.kubectl("apply", "-f", str(REPO / "crds"), check=True)
    cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=True)
    cp.kubectl("create", "namespace", "mlgate-system")
    kept, never = f"kept-{uuid.uuid4().hex[:6]}", f"never-{uuid.uuid4().hex[:6]}"
    registry = {"allowedRegistries": ["registry.example.com/ml/*"]}
    try:
        with MlgateProcess(cp.kubeconfig, tmp_path / "first.log", webhook_config=WEBHOOK_CONFIG):
            apply(cp, policy(kept, namespace, registry)).check_returncode()
            eventually(
                lambda: (get_json(cp, "cmlp", kept) or {}).get("status", {}).get("lastGood"),
                "the compiled spec persisted in status.lastGood",
            )
            refused = apply(cp, policy(kept, namespace, UNCOMPILABLE))
            assert refused.returncode != 0
            assert "policies.mlgate.io" in refused.stderr
            assert "spec.images.allowedRegistries[0]" in refused.stderr, refused.stderr

        # mlgate is down and its webhook configuration is gone: invalid specs get in.
        cp.kubectl("delete", "validatingwebhookconfiguration", WEBHOOK_CONFIG, check=True)
        apply(cp, policy(kept, namespace, UNCOMPILABLE)).check_returncode()
        apply(cp, policy(never, namespace, UNCOMPILABLE)).check_returncode()

        with MlgateProcess(cp.kubeconfig, tmp_path / "second.log", webhook_config=WEBHOOK_CONFIG):
            condition = eventually(
                lambda: ((c := ready(cp, kept)) and c["status"] == "False" and c) or None,
                f"{kept} reported invalid after the restart",
                timeout=60,
            )
            # Restored from status.lastGood (the message names it on the first compile).
            assert "names a tag" in condition["message"]
            assert (
                "generation 1" in condition["message"] and "stays in force" in condition["message"]
            )
            denied = apply(cp, deployment("compliant", namespace, GOOD))
            assert denied.returncode != 0
            assert f"[{never}] policy.invalid" in denied.stderr, denied.stderr
            assert f"policy {never} has no valid version in force" in denied.stderr

            cp.kubectl("delete", "clustermlpolicy", never, check=True)
            eventually(
                lambda: apply(cp, deployment("compliant", namespace, GOOD)).returncode == 0 or None,
                "the compliant workload admitted once the never-good policy is gone",
            )
            elsewhere = apply(cp, deployment("elsewhere", namespace, ELSEWHERE))
            assert elsewhere.returncode != 0
            assert f"[{kept}] images.registry" in elsewhere.stderr, elsewhere.stderr
            stored = get_json(cp, "cmlp", kept) or {}
            saved = json.loads(stored["status"]["lastGood"]["spec"])
            assert saved["images"]["allowedRegistries"] == registry["allowedRegistries"]
    finally:
        cp.kubectl("delete", "clustermlpolicy", kept, never, "--ignore-not-found")
        cp.kubectl("delete", WEBHOOK_CONFIG_KINDS, WEBHOOK_CONFIG, "--ignore-not-found")
