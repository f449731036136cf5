"""The ValidatingWebhookConfiguration that routes workloads to mlgate, built from one table.

`mlgate run --register-webhook-url` applies it for local clusters; the Helm chart renders the
same rules (a test keeps the two in step).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from mlgate.engine.egress import MANAGED_NAME
from mlgate.engine.workloads import BUILT_IN_ONLY, SUPPORTED, Kinds, KindSpec

WORKLOADS_WEBHOOK = "workloads.mlgate.io"
# Kinds declared by WorkloadKinds: the operator keeps this entry's rules in step with them, so
# the chart's other entries stay the chart's alone.
EXTENSIONS_WEBHOOK = "extensions.mlgate.io"
NAMESPACES_WEBHOOK = "namespaces.mlgate.io"
NETWORK_POLICIES_WEBHOOK = "networkpolicies.mlgate.io"
VALIDATE_PATH = "/validate"


def _rules(specs: Iterable[KindSpec]) -> list[dict[str, Any]]:
    """One rule per API group, version set and scope, covering the kinds and subresources."""
    grouped: dict[tuple[str, tuple[str, ...], str], list[str]] = defaultdict(list)
    for spec in specs:
        resources = grouped[(spec.group, spec.versions, spec.scope)]
        resources.append(spec.plural)
        resources.extend(f"{spec.plural}/{sub}" for sub in spec.subresources)
    return [
        {
            "apiGroups": [group],
            "apiVersions": list(versions),
            "resources": resources,
            "operations": ["CREATE", "UPDATE"],
            "scope": scope,
        }
        for (group, versions, scope), resources in grouped.items()
    ]


def workload_rules() -> list[dict[str, Any]]:
    """The built-in kinds: the chart renders the same rules."""
    return _rules(SUPPORTED)


def extension_rules(kinds: Kinds) -> list[dict[str, Any]]:
    """The kinds WorkloadKinds declare, sorted so that an unchanged set is an unchanged list."""
    return _rules(sorted(kinds.declared.values(), key=lambda s: (s.group, s.kind)))


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
    *,
    kinds: Kinds = BUILT_IN_ONLY,
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
            {"name": EXTENSIONS_WEBHOOK, "rules": extension_rules(kinds), **common},
            {
                "name": NETWORK_POLICIES_WEBHOOK,
                "rules": network_policy_rules(),
                "matchConditions": network_policy_match_conditions(),
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


def url_client_config(url: str, ca_bundle: str) -> dict[str, Any]:
    return {"url": url.rstrip("/") + VALIDATE_PATH, "caBundle": ca_bundle}
