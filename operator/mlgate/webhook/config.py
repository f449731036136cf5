"""The Validating- and MutatingWebhookConfiguration that route workloads to mlgate, built from
one table.

`mlgate run --register-webhook-url` applies it for local clusters; the Helm chart renders the
same rules (a test keeps the two in step).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from mlgate.api.crdgen import CRDS
from mlgate.api.models import GROUP, VERSION
from mlgate.engine.egress import MANAGED_NAME
from mlgate.engine.related import RELATED
from mlgate.engine.workloads import BUILT_IN_ONLY, SUPPORTED, Kinds, KindSpec

WORKLOADS_WEBHOOK = "workloads.mlgate.io"
# Kinds declared by WorkloadKinds: the operator keeps this entry's rules in step with them, so
# the chart's other entries stay the chart's alone.
EXTENSIONS_WEBHOOK = "extensions.mlgate.io"
NAMESPACES_WEBHOOK = "namespaces.mlgate.io"
NETWORK_POLICIES_WEBHOOK = "networkpolicies.mlgate.io"
LLM_WEBHOOK = "llm.mlgate.io"
IMAGES_MUTATING_WEBHOOK = "images.mlgate.io"
POLICIES_WEBHOOK = "policies.mlgate.io"
VALIDATE_PATH = "/validate"
MUTATE_PATH = "/mutate"
NAMESPACE_RESOURCES = ("namespaces", "namespaces/status", "namespaces/finalize")
# A /status write of a Pod, Deployment, Job (built-in kinds) can change labels and annotations,
# such as the model annotation (custom resources keep all but .status): every kind's status is
# routed, and workload_match_conditions() sends only the writes that change what is judged.
STATUS = "status"


def _rules(specs: Iterable[KindSpec], *, status: bool = False) -> list[dict[str, Any]]:
    """One rule per API group, version set and scope, covering the kinds and subresources.

    `status` adds every kind's /status: the validating webhook judges status writes that change
    judged fields; the mutating one never sees them (pinning a status write means nothing, and
    kubelets' status updates must not depend on mlgate)."""
    grouped: dict[tuple[str, tuple[str, ...], str], list[str]] = defaultdict(list)
    own = (STATUS,) if status else ()
    for spec in specs:
        scope = spec.scope
        resources = grouped[(spec.group, spec.versions, scope)]
        resources.append(spec.plural)
        resources.extend(f"{spec.plural}/{sub}" for sub in (*own, *spec.subresources))
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


def workload_rules(*, status: bool = False) -> list[dict[str, Any]]:
    """The built-in kinds: the chart renders the same rules."""
    return _rules(SUPPORTED, status=status)


def extension_rules(kinds: Kinds) -> list[dict[str, Any]]:
    """The kinds WorkloadKinds declare, sorted so that an unchanged set is an unchanged list.
    Their /status is not routed: a custom resource's /status changes nothing but status."""
    return _rules(sorted(kinds.declared.values(), key=lambda s: (s.group, s.kind)))


def _or_empty(var: str, field: str) -> str:
    """CEL for `var.field`, or {} when absent: CEL errors on a missing field."""
    parent = field.rpartition(".")[0]
    guards = [f"has({var}.{parent})"] if parent else []
    guard = " && ".join([*guards, f"has({var}.{field})"])
    return f"({guard} ? {var}.{field} : {{}})"


def _unchanged(field: str) -> str:
    return f"{_or_empty('object', field)} == {_or_empty('oldObject', field)}"


def workload_match_conditions() -> list[dict[str, str]]:
    """Status writes (kubelets, controllers: many, and they must work while mlgate is down) are
    sent only when they change what mlgate judges (labels, annotations, spec), and then judged
    like any update; everything else always."""
    judged = " && ".join(_unchanged(f) for f in ("metadata.labels", "metadata.annotations", "spec"))
    return [
        {
            "name": "status-only-when-judged-fields-change",
            "expression": (
                f"!has(request.subResource) || request.subResource != '{STATUS}' || !({judged})"
            ),
        }
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


def namespace_match_conditions() -> list[dict[str, str]]:
    """The scope guard reads labels only: an update that keeps them (the namespace controller's
    /status and /finalize writes while it deletes a namespace) never waits for mlgate."""
    return [{"name": "labels-change", "expression": f"!({_unchanged('metadata.labels')})"}]


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
    those deletes keep working while mlgate is down.

    A collection delete (DELETECOLLECTION, how the namespace controller empties a namespace)
    is admitted item by item with the old object but without request.name. CEL errors on a
    missing field, and under failurePolicy Fail that error refuses the request, so every
    optional field is read behind has(): the name comes from the request or the old object.
    """
    return [
        {
            "name": "delete-only-mlgate-egress",
            "expression": (
                "request.operation != 'DELETE' || "
                f"(has(request.name) && request.name == '{MANAGED_NAME}') || "
                "(oldObject != null && has(oldObject.metadata) && "
                f"has(oldObject.metadata.name) && oldObject.metadata.name == '{MANAGED_NAME}')"
            ),
        }
    ]


def policy_rules() -> list[dict[str, Any]]:
    """mlgate's own resources, compiled on apply: a policy that would not compile is refused.
    Their /status too: status.lastGood is enforced after a restart, so only mlgate writes it."""
    return [
        {
            "apiGroups": [GROUP],
            "apiVersions": [VERSION],
            "resources": [r for crd in CRDS for r in (crd.plural, f"{crd.plural}/{STATUS}")],
            "operations": ["CREATE", "UPDATE"],
            "scope": "*",
        }
    ]


def policy_match_conditions() -> list[dict[str, str]]:
    """Status writes only when they change status.lastGood (conditions, audit counts: never)."""
    return [
        {
            "name": "status-only-when-last-good-changes",
            "expression": (
                f"!has(request.subResource) || request.subResource != '{STATUS}' || "
                f"!({_unchanged('status.lastGood')})"
            ),
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
            {
                "name": WORKLOADS_WEBHOOK,
                "rules": workload_rules(status=True),
                "matchConditions": workload_match_conditions(),
                **common,
            },
            {"name": EXTENSIONS_WEBHOOK, "rules": extension_rules(kinds), **common},
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
                        # /status and /finalize can rewrite the labels too.
                        "resources": list(NAMESPACE_RESOURCES),
                        "operations": ["UPDATE"],
                        "scope": "Cluster",
                    }
                ],
                "matchConditions": namespace_match_conditions(),
                **common,
                # Relabelling must be judged even for namespaces outside every policy's scope
                # today, so only mlgate's own and kube-system are left out.
            },
            {
                "name": POLICIES_WEBHOOK,
                "rules": policy_rules(),
                "matchConditions": policy_match_conditions(),
                **common,
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

    These rules are where mlgate starts: controller.routing empties them while no policy in
    force mutates (webhook.admission.mutates), so creates skip this round trip.
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
