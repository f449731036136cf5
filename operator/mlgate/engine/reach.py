"""What reaches an LLM's pods: Services by selector, routes by backend, names by host or URL.

Shared by the exposure rule (what must not reach the pods directly) and the guardrail rule
(what a guardrail forwards to). Answers lean towards "may reach": an exposure rule that misses a
path is a hole, and a guardrail that merely may reach the LLM is still checked for exposure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mlgate.engine.llm import LlmTarget, group_of
from mlgate.engine.reads import as_list as _list
from mlgate.engine.reads import as_map as _map
from mlgate.engine.reads import as_str as _str

GATEWAY_GROUP = "gateway.networking.k8s.io"
INFERENCE_POOL_GROUPS = frozenset({"inference.networking.x-k8s.io", "inference.networking.k8s.io"})
OPENSHIFT_ROUTE_GROUP = "route.openshift.io"
CLUSTER_DOMAIN_SUFFIXES = (".svc.cluster.local", ".svc")

# Label keys that operators, not the template, put on pods: a selector on one of them may pick
# the LLM's pods even though the template does not mention it.
_OPERATOR_LABEL_PREFIXES = (
    "pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/",
    "apps.kubernetes.io/", "batch.kubernetes.io/", "job-name", "controller-uid",
    "ray.io/", "leaderworkerset.sigs.k8s.io/", "serving.kserve.io/", "serving.knative.dev/",
    "kaito.sh/", "app.kubernetes.io/", "component", "llm-d.ai/", "inference.networking",
    "kserve.io/",
)  # fmt: skip


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(obj.get("metadata"))


def name_of(obj: Mapping[str, Any]) -> str:
    return _str(meta(obj).get("name"))


def namespace_of(obj: Mapping[str, Any]) -> str:
    return _str(meta(obj).get("namespace"))


def same_namespace(a: str, b: str) -> bool:
    """Namespaces that may be the same: equal, or one unknown. Only `mlgate check` of manifests
    without namespaces (applied with `kubectl -n` later) leaves one unknown; the webhook always
    knows them."""
    return not a or not b or a == b


def is_kind(obj: Mapping[str, Any], group: str, kind: str) -> bool:
    return group_of(_str(obj.get("apiVersion"))) == group and obj.get("kind") == kind


def _operator_key(key: str) -> bool:
    return key.startswith(_OPERATOR_LABEL_PREFIXES)


def selector_may_pick(selector: Mapping[str, Any], target: LlmTarget) -> bool:
    """Whether a Service-style selector (equality on every key) may pick some of the pods.

    A key the pod template sets must match its value; a key an operator adds to pods may match
    whatever its value; any other key the pods do not carry rules them out. An empty selector
    picks nothing (a Service without selector has hand-made endpoints)."""
    if not selector:
        return False
    for labels in target.pod_labels:
        if all(
            labels.get(k) == v if k in labels else _operator_key(k) for k, v in selector.items()
        ):
            return True
    return False


def _selector_labels(value: Any) -> dict[str, str]:
    """An InferencePool selector: `{matchLabels: {...}}` (v1) or a plain label map (v1alpha2)."""
    raw = _map(value)
    labels = raw.get("matchLabels") if isinstance(raw.get("matchLabels"), Mapping) else raw
    return {k: v for k, v in _map(labels).items() if isinstance(k, str) and isinstance(v, str)}


def service_reaches(service: Mapping[str, Any], target: LlmTarget) -> bool:
    if not same_namespace(namespace_of(service), target.namespace):
        return False
    if name_of(service) in target.services:
        return True
    spec = _map(service.get("spec"))
    selector = {k: v for k, v in _map(spec.get("selector")).items() if isinstance(v, str)}
    return selector_may_pick(selector, target)


def _services(related: Sequence[Mapping[str, Any]], namespace: str, name: str) -> Iterator[Any]:
    for obj in related:
        if (
            is_kind(obj, "", "Service")
            and same_namespace(namespace_of(obj), namespace)
            and name_of(obj) == name
        ):
            yield obj


def named_service_reaches(
    name: str, namespace: str, target: LlmTarget, related: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether the Service `namespace/name` leads to the LLM: one its operator makes, or one
    whose selector picks its pods."""
    if not same_namespace(namespace, target.namespace) or not name:
        return False
    if name in target.services:
        return True
    return any(service_reaches(s, target) for s in _services(related, namespace, name))


def host_names(value: str, default_namespace: str) -> tuple[str, str] | None:
    """The (Service, namespace) a URL or in-cluster host name points at, if it is one."""
    text = value.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host = text.split("/", 1)[0].rsplit("@", 1)[-1]
    host = host.split(":", 1)[0].lower().rstrip(".")
    for suffix in CLUSTER_DOMAIN_SUFFIXES:
        if host.endswith(suffix):
            host = host[: -len(suffix)]
            break
    parts = host.split(".")
    if not parts[0] or len(parts) > 2:  # an external host: not an in-cluster Service
        return None
    return parts[0], parts[1] if len(parts) == 2 else default_namespace


def names_target(
    value: str, namespace: str, target: LlmTarget, related: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether a guardrail's target value (a name, host name or URL) leads to the LLM."""
    found = host_names(value, namespace)
    if found is None:
        return False
    service, svc_namespace = found
    return named_service_reaches(service, svc_namespace, target, related)


def _pool_reaches(
    name: str, namespace: str, target: LlmTarget, related: Sequence[Mapping[str, Any]]
) -> bool:
    for obj in related:
        group = group_of(_str(obj.get("apiVersion")))
        if (
            group in INFERENCE_POOL_GROUPS
            and obj.get("kind") == "InferencePool"
            and name_of(obj) == name
            and same_namespace(namespace_of(obj), namespace)
            and same_namespace(namespace, target.namespace)
        ):
            selector = _selector_labels(_map(obj.get("spec")).get("selector"))
            if selector_may_pick(selector, target):
                return True
    # An LLMInferenceService's own pool is named after it.
    return (
        target.kind == "LLMInferenceService"
        and same_namespace(namespace, target.namespace)
        and (name.startswith(target.name))
    )


def backend_reaches(
    ref: Mapping[str, Any],
    route_namespace: str,
    target: LlmTarget,
    related: Sequence[Mapping[str, Any]],
) -> bool:
    """Whether a Gateway API backendRef leads to the LLM (a Service or an InferencePool)."""
    kind = _str(ref.get("kind")) or "Service"
    name = _str(ref.get("name"))
    namespace = _str(ref.get("namespace")) or route_namespace
    if kind == "Service":
        return named_service_reaches(name, namespace, target, related)
    if kind == "InferencePool":
        return _pool_reaches(name, namespace, target, related)
    return False


def route_backends(route: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(field path, backendRef) of a Gateway API route; filters may mirror to a backend too."""
    for i, rule in enumerate(_list(_map(route.get("spec")).get("rules"))):
        for j, ref in enumerate(_list(_map(rule).get("backendRefs"))):
            if isinstance(ref, Mapping):
                yield f"spec.rules[{i}].backendRefs[{j}]", ref
        for j, flt in enumerate(_list(_map(rule).get("filters"))):
            mirror = _map(_map(flt).get("requestMirror")).get("backendRef")
            if isinstance(mirror, Mapping):
                yield f"spec.rules[{i}].filters[{j}].requestMirror.backendRef", mirror


def is_gateway_route(obj: Mapping[str, Any]) -> bool:
    kind = _str(obj.get("kind"))
    return group_of(_str(obj.get("apiVersion"))) == GATEWAY_GROUP and kind.endswith("Route")


def route_parents(route: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(kind, namespace, name) of a route's parents (Gateways, by default)."""
    for raw in _list(_map(route.get("spec")).get("parentRefs")):
        ref = _map(raw)
        kind = _str(ref.get("kind")) or "Gateway"
        yield kind, _str(ref.get("namespace")) or namespace_of(route), _str(ref.get("name"))


def route_reaches(
    route: Mapping[str, Any], target: LlmTarget, related: Sequence[Mapping[str, Any]]
) -> bool:
    namespace = namespace_of(route)
    return any(backend_reaches(ref, namespace, target, related) for _, ref in route_backends(route))
