"""Small builders for realistic test objects shared by the unit tests."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

DIGEST = "sha256:" + "a" * 64
GOOD_IMAGE = f"registry.example.com/ml/serve@{DIGEST}"


def deployment(
    name: str = "fraud-api",
    namespace: str = "ml-prod",
    image: str = GOOD_IMAGE,
    replicas: int = 2,
    gpus: int = 0,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": gpus}} if gpus else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image, "resources": resources}]},
            },
        },
    }


def policy(name: str = "production-ml", mode: str = "Enforce", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "mode": mode,
        "match": {"namespaceSelector": {"matchLabels": {"mlgate.io/governed": "true"}}},
    }
    body.update(spec)
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": name, "generation": 1},
        "spec": body,
    }


def review(
    obj: dict[str, Any] | None,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    *,
    dry_run: bool = False,
    resource: str = "deployments",
    groups: tuple[str, ...] = ("system:authenticated",),
    sub_resource: str | None = None,
) -> dict[str, Any]:
    source = obj or old or {}
    api_version = str(source.get("apiVersion", "v1"))
    group, _, version = api_version.rpartition("/")
    meta = source.get("metadata") or {}
    request: dict[str, Any] = {
        "uid": "3f6c1a9e-0000-4000-8000-000000000001",
        "kind": {"group": group, "version": version, "kind": source.get("kind", "")},
        "resource": {"group": group, "version": version, "resource": resource},  # as for kind
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", ""),
        "operation": operation,
        "userInfo": {"username": "alice", "groups": list(groups)},
        "object": copy.deepcopy(obj),
        "oldObject": copy.deepcopy(old),
        "dryRun": dry_run,
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def realworld() -> Path | None:
    """../shared/realworld (upstream manifests, read-only beside the checkout), or
    $MLGATE_REALWORLD; None where neither exists (tests that need it skip)."""
    here = Path(__file__).resolve().parents[2]
    candidates = [os.environ.get("MLGATE_REALWORLD", "")]
    candidates += [str(p / "shared" / "realworld") for p in (here.parent, here.parent.parent)]
    return next((Path(c) for c in candidates if c and Path(c).is_dir()), None)
