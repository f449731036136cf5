"""The Validating- and MutatingWebhookConfiguration that route workloads to mlgate, built from
one table.

`mlgate run --register-webhook-url` applies it for local clusters; the Helm chart renders the
same rules (a test keeps the two in step).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mlgate.engine.egress import MANAGED_NAME
from mlgate.engine.related import RELATED
from mlgate.engine.workloads import SUPPORTED

WORKLOADS_WEBHOOK = "workloads.mlgate.io"
NAMESPACES_WEBHOOK = "namespaces.mlgate.io"
NETWORK_POLICIES_WEBHOOK = "networkpolicies.mlgate.io"
LLM_WEBHOOK = "llm.mlgate.io"
IMAGES_MUTATING_WEBHOOK = "images.mlgate.io"
VALIDATE_PATH = "/validate"
MUTATE_PATH = "/mutate"


def workload_rules() -> list[dict[str, Any]]:
    """One rule per API group and version set, covering every supported kind and subresource."""
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = defaultdict(list)
    for spec in SUPPORTED:
        resources = grouped[(spec.group, spec.versions)]
        resources.append(spec.plural)
        resources.extend(f"{spec.plural}/{sub}" for sub in spec.subresources)
    return [
        {
            "apiGroups": [group],
            "apiVersions": list(versions),
            "resources": resources,
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
        for (group, versions), resources in grouped.items()
    ]


def llm_rules() -> list[dict[str, Any]]:
    """What llm.noDirectExposure judges (Services, Ingresses, routes) and the LLM-serving kinds
    that are not workload kinds (NIMService, Kaito Workspace): one rule per group and versions."""
    supported = {(s.group, s.kind) for s in SUPPORTED}
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = defaultdict(list)
    for kind in RELATED:
        if kind.exposure or (kind.workload and (kind.group, kind.kind) not in supported):
            grouped[(kind.group, kind.versions)].append(kind.plural)
    return [
        {
            "apiGroups": [group],
            "apiVersions": list(versions),
            "resources": resources,
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
        for (group, versions), resources in grouped.items()
    ]


def llm_match_conditions() -> list[dict[str, str]]:
    """A ClusterIP Service reaches nothing outside the cluster: the apiserver need not ask, and
    such Services keep working while mlgate is down. Never errors: every field is tested."""
    return [
        {
            "name": "external-services-only",
            "expression": "request.kind.kind != 'Service' || !has(object.spec) || "
            "(has(object.spec.type) && object.spec.type in ['LoadBalancer', 'NodePort']) || "
            "has(object.spec.externalIPs)",
        }
    ]


def network_policy_rules() -> list[dict[str, Any]]:
    """User NetworkPolicies are judged for widening egress; DELETE only to guard mlgate-egress."""
    return [
        {
            "apiGroups": ["networking.k8s.io"],
            "apiVersions": ["v1"],
            "resources": ["networkpolicies"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "scope": "Namespaced",
        }
    ]


def network_policy_match_conditions() -> list[dict[str, str]]:
    """Deleting any other NetworkPolicy only narrows egress: the apiserver need not ask, and
    those deletes keep working while mlgate is down."""
    return [
        {
            "name": "delete-only-mlgate-egress",
            "expression": f"request.operation != 'DELETE' || request.name == '{MANAGED_NAME}'",
        }
    ]


def _excluded_namespaces(own_namespace: str) -> dict[str, Any]:
    return {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": sorted({"kube-system", own_namespace}),
            }
        ]
    }


def webhook_configuration(
    name: str,
    client_config: dict[str, Any],
    own_namespace: str,
    failure_policy: str = "Fail",
    timeout_seconds: int = 10,
) -> dict[str, Any]:
    common = {
        "clientConfig": client_config,
        "admissionReviewVersions": ["v1"],
        # Reservations and Events happen only for real requests, never for dry runs.
        "sideEffects": "NoneOnDryRun",
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "timeoutSeconds": timeout_seconds,
        "namespaceSelector": _excluded_namespaces(own_namespace),
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "mlgate"}},
        "webhooks": [
            {"name": WORKLOADS_WEBHOOK, "rules": workload_rules(), **common},
            {
                "name": NETWORK_POLICIES_WEBHOOK,
                "rules": network_policy_rules(),
                "matchConditions": network_policy_match_conditions(),
                **common,
            },
            {
                "name": LLM_WEBHOOK,
                "rules": llm_rules(),
                "matchConditions": llm_match_conditions(),
                **common,
            },
            {
                "name": NAMESPACES_WEBHOOK,
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["namespaces"],
                        "operations": ["UPDATE"],
                        "scope": "Cluster",
                    }
                ],
                **common,
                # Relabelling must be judged even for namespaces outside every policy's scope
                # today, so only mlgate's own and kube-system are left out.
            },
        ],
    }


def url_client_config(url: str, ca_bundle: str, path: str = VALIDATE_PATH) -> dict[str, Any]:
    return {"url": url.rstrip("/") + path, "caBundle": ca_bundle}


def mutating_webhook_configuration(
    name: str,
    client_config: dict[str, Any],
    own_namespace: str,
    failure_policy: str = "Fail",
    timeout_seconds: int = 10,
) -> dict[str, Any]:
    """Image tags pinned to their verified digest (mlgate.webhook.mutation), for the same
    workloads and namespaces the validating webhook judges.

    Pinning has no side effects, so dry runs are mutated alike. IfNeeded reinvokes mlgate when a
    later mutating webhook changes the object (e.g. injects a sidecar with a tag), so every image
    that reaches validation is pinned; pinning is idempotent, so the reinvocation is safe.
    """
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "mlgate"}},
        "webhooks": [
            {
                "name": IMAGES_MUTATING_WEBHOOK,
                "rules": workload_rules(),
                "clientConfig": client_config,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": failure_policy,
                "matchPolicy": "Equivalent",
                "timeoutSeconds": timeout_seconds,
                "reinvocationPolicy": "IfNeeded",
                "namespaceSelector": _excluded_namespaces(own_namespace),
            }
        ],
    }
