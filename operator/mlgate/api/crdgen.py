"""CustomResourceDefinitions generated from the pydantic models.

Pydantic emits JSON Schema with `$ref`s and `anyOf: [X, null]` for optional fields; Kubernetes
needs a structural schema (everything inlined, one type per node, no `additionalProperties:
false`). This module converts one into the other, so the models stay the only source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from mlgate.api.gpubudget import (
    GPU_BUDGET_KIND,
    GPU_BUDGET_PLURAL,
    GpuBudgetSpec,
    GpuBudgetStatus,
)
from mlgate.api.models import (
    GROUP,
    VERSION,
    ApprovedModelSpec,
    ApprovedModelStatus,
    PolicySpec,
    PolicyStatus,
    WorkloadKindSpec,
    WorkloadKindStatus,
)

_DROPPED_KEYS = frozenset({"title"})
JSON = dict[str, Any]


@dataclass(frozen=True)
class CrdSpec:
    kind: str
    plural: str
    scope: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[JSON, ...]
    short_names: tuple[str, ...]
    description: str


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_READY = {
    "name": "Ready",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
}
_POLICY_COLUMNS = (
    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
    _READY,
    {"name": "Violations", "type": "integer", "jsonPath": ".status.violations"},
    _AGE,
)

CRDS: tuple[CrdSpec, ...] = (
    CrdSpec(
        "ClusterMLPolicy",
        "clustermlpolicies",
        "Cluster",
        PolicySpec,
        PolicyStatus,
        _POLICY_COLUMNS,
        ("cmlp",),
        "Cluster-wide security policy for ML workloads: images, models, egress and GPUs.",
    ),
    CrdSpec(
        "MLPolicy",
        "mlpolicies",
        "Namespaced",
        PolicySpec,
        PolicyStatus,
        _POLICY_COLUMNS,
        ("mlp",),
        "Namespace policy for ML workloads; it can only add restrictions.",
    ),
    CrdSpec(
        "ApprovedModel",
        "approvedmodels",
        "Cluster",
        ApprovedModelSpec,
        ApprovedModelStatus,
        (
            {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
            {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
            {"name": "Expires", "type": "string", "jsonPath": ".spec.expires"},
            {"name": "Revoked", "type": "boolean", "jsonPath": ".spec.revoked"},
            {"name": "Scan", "type": "string", "jsonPath": ".spec.scan.result"},
            {"name": "Signer", "type": "string", "jsonPath": ".spec.signature.signer"},
            {"name": "Digest", "type": "string", "jsonPath": ".spec.digest", "priority": 1},
            {"name": "Scanner", "type": "string", "jsonPath": ".spec.scan.scanner", "priority": 1},
            _READY,
            _AGE,
        ),
        ("am",),
        "A model version that security has approved for use in governed namespaces.",
    ),
    CrdSpec(
        "WorkloadKind",
        "workloadkinds",
        "Cluster",
        WorkloadKindSpec,
        WorkloadKindStatus,
        (
            {"name": "Group", "type": "string", "jsonPath": ".spec.group"},
            {"name": "Kind", "type": "string", "jsonPath": ".spec.kind"},
            _READY,
            _AGE,
        ),
        ("wk",),
        "Teaches mlgate a workload kind without code: where its pods, counts and models are.",
    ),
)

# Not a policy or approval: mlgate's own record, kept apart so policy handling never sees it.
GPU_BUDGET_CRD = CrdSpec(
    GPU_BUDGET_KIND,
    GPU_BUDGET_PLURAL,
    "Namespaced",
    GpuBudgetSpec,
    GpuBudgetStatus,
    (
        {"name": "Target", "type": "string", "jsonPath": ".spec.namespace"},
        {"name": "Used", "type": "integer", "jsonPath": ".status.used"},
        {"name": "Reserved", "type": "integer", "jsonPath": ".status.reserved"},
        {"name": "Charged", "type": "integer", "jsonPath": ".status.charged"},
        {"name": "Quota", "type": "integer", "jsonPath": ".status.quota"},
        _AGE,
    ),
    ("gpub",),
    "GPU reservations and usage of one namespace, recorded by mlgate (read-only for users).",
)


def _resolve(node: Any, defs: JSON) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    any_of = node.get("anyOf")
    if isinstance(any_of, list):
        branches = [b for b in any_of if b != {"type": "null"}]
        if len(branches) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", 0) is None:
                del rest["default"]
            return _resolve({**branches[0], **rest}, defs)
    return {
        key: _structural(key, value, defs)
        for key, value in node.items()
        if key not in _DROPPED_KEYS
    }


def _structural(key: str, value: Any, defs: JSON) -> Any:
    if key == "properties" and isinstance(value, dict):
        return {name: _resolve(schema, defs) for name, schema in value.items()}
    if key == "additionalProperties" and value is False:
        return None
    return _resolve(value, defs)


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if v is not None and k != "$defs"}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def structural_schema(model: type[BaseModel]) -> JSON:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: JSON = _clean(_resolve(raw, raw.get("$defs", {})))
    return schema


def crd(spec: CrdSpec) -> JSON:
    schema: JSON = {
        "type": "object",
        "description": spec.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural_schema(spec.spec),
            "status": structural_schema(spec.status),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{spec.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "mlgate"},
        },
        "spec": {
            "group": GROUP,
            "scope": spec.scope,
            "names": {
                "kind": spec.kind,
                "listKind": f"{spec.kind}List",
                "plural": spec.plural,
                "singular": spec.kind.lower(),
                "shortNames": list(spec.short_names),
                "categories": ["mlgate"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(spec.columns),
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text for every CRD; deterministic, so drift is a plain diff."""
    header = "# Generated by `make crds` from operator/mlgate/api/models.py. Do not edit.\n"
    return {
        f"{GROUP}_{spec.plural}.yaml": header
        + yaml.safe_dump(crd(spec), sort_keys=False, width=100)
        for spec in (*CRDS, GPU_BUDGET_CRD)
    }
