"""The one workload every side-by-side benchmark judges, and the AdmissionReview it arrives in.

A compliant 3-container Deployment under the example policy (images from the allowed registry,
pinned by digest; an approved model; CPU and memory limits; no GPUs, so that real creates never
fill the example policy's namespace GPU quota and every cell measures the same allowed path).
The review carries `managedFields` as the apiserver sends them: half of a real object's bytes.
"""

from __future__ import annotations

import json
from typing import Any

NAMESPACE = "ml-prod"  # governed in the example set-up (bench/webhook_bench.py)
DIGEST = "sha256:" + "9df1b86c761159b5cae0273f6e908138fde36829ed5998fa04895c15db2f8738"
CONTAINERS = ("api", "sidecar", "metrics")
FLAGS = ("CACHE", "BATCHING", "TRACING", "SHADOW_SCORING", "EXPLAIN", "DRIFT_CHECK")


def _container(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "image": f"registry.example.com/ml/fraud-{name}:1.4.2@{DIGEST}",
        "ports": [{"containerPort": port, "protocol": "TCP"}],
        "env": [
            {"name": "MODEL_URI", "value": "s3://models/fraud-detector/v3"},
            *({"name": f"FEATURE_{flag}", "value": "enabled"} for flag in FLAGS),
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 5},
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
    }


def deployment(name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name, "team": "risk"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"mlgate.io/model": "fraud-detector@3"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [_container(c, 8080 + i) for i, c in enumerate(CONTAINERS)],
                },
            },
        },
    }


def _fields(node: Any) -> Any:
    """fieldsV1 of a node, built the way the apiserver spells it (f:, k:, v: keys)."""
    if isinstance(node, dict):
        return {f"f:{key}": _fields(value) for key, value in node.items()}
    if isinstance(node, list):
        out: dict[str, Any] = {}
        for item in node:
            if isinstance(item, dict) and "name" in item:
                out[f'k:{{"name":"{item["name"]}"}}'] = {".": {}, **_fields(item)}
            elif isinstance(item, dict) and "containerPort" in item:
                key = f'k:{{"containerPort":{item["containerPort"]},"protocol":"TCP"}}'
                out[key] = {".": {}, **_fields(item)}
            else:
                out[f"v:{json.dumps(item)}"] = {}
        return out
    return {}


def stored(name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The object as the apiserver hands it to a webhook: defaults, uid, managedFields."""
    obj = deployment(name, namespace)
    managed = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    obj["metadata"] |= {
        "uid": "5f0c8f43-2b5e-4c35-9f5f-3b1a8e5d2c11",
        "creationTimestamp": "2026-11-30T05:00:00Z",
        "generation": 1,
        "managedFields": [
            {
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "apps/v1",
                "time": "2026-11-30T05:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": _fields(managed),
            }
        ],
    }
    spec = obj["spec"]
    spec |= {"revisionHistoryLimit": 10, "progressDeadlineSeconds": 600}
    spec["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    pod = spec["template"]["spec"]
    pod |= {
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "securityContext": {},
        "schedulerName": "default-scheduler",
    }
    for container in pod["containers"]:
        container |= {
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        }
    return obj


def review(name: str = "fraud-api", *, dry_run: bool = True) -> bytes:
    """The AdmissionReview the apiserver posts for a CREATE of `stored(name)`."""
    request = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": name,
        "namespace": NAMESPACE,
        "operation": "CREATE",
        "userInfo": {"username": "bench", "groups": ["system:authenticated"]},
        "object": stored(name),
        "oldObject": None,
        "dryRun": dry_run,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    }
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return json.dumps(body, separators=(",", ":")).encode()
