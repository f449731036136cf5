"""llm.noDirectExposure: nothing outside the cluster reaches an LLM's pods around its guardrail.

Exposure objects are a Service of type LoadBalancer or NodePort (or with externalIPs), an
Ingress, a Gateway API route and an OpenShift Route. Judged both ways, so creation order cannot
step around the rule: an exposure object is refused when it reaches an LLM of its namespace, and
an LLM is refused while an exposure object already reaches it. A Gateway API route through a
Gateway (or itself) that a gateway guardrail policy targets passes the guardrail, so it is not
direct; the guardrail's own Services and routes reach the guardrail, not the LLM's pods.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mlgate.engine import reach
from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.guardrails import (
    GATEWAY_POLICY,
    is_gateway_guardrail,
    router_gateways,
    target_refs,
)
from mlgate.engine.llm import LlmTarget, group_of
from mlgate.engine.reads import as_list as _list
from mlgate.engine.reads import as_map as _map
from mlgate.engine.reads import as_str as _str

_EXTERNAL_TYPES = frozenset({"LoadBalancer", "NodePort"})
KNATIVE_VISIBILITY = "networking.knative.dev/visibility"


def _operator_exposure(obj: Mapping[str, Any]) -> Iterator[str]:
    """NVIDIA's operators (NIMService, ...) make the Service or Ingress `spec.expose` asks for."""
    if group_of(_str(obj.get("apiVersion"))) != "apps.nvidia.com":
        return
    expose = _map(_map(obj.get("spec")).get("expose"))
    if _map(expose.get("service")).get("type") in _EXTERNAL_TYPES:
        yield "spec.expose.service.type"
    ingress = _map(expose.get("ingress"))
    if ingress.get("enabled") is True or _map(ingress.get("spec")):
        yield "spec.expose.ingress"


def _knative_public(obj: Mapping[str, Any]) -> bool:
    """A Knative Service is reachable from outside unless labelled cluster-local."""
    if (
        group_of(_str(obj.get("apiVersion"))) != "serving.knative.dev"
        or obj.get("kind") != "Service"
    ):
        return False
    return _map(reach.meta(obj).get("labels")).get(KNATIVE_VISIBILITY) != "cluster-local"


def is_exposure(obj: Mapping[str, Any]) -> bool:
    group, kind = group_of(_str(obj.get("apiVersion"))), _str(obj.get("kind"))
    return (
        (group, kind) in {("", "Service"), ("networking.k8s.io", "Ingress")}
        or (group == reach.OPENSHIFT_ROUTE_GROUP and kind == "Route")
        or reach.is_gateway_route(obj)
        or _is_reference_grant(obj)
    )


def _is_reference_grant(obj: Mapping[str, Any]) -> bool:
    return group_of(_str(obj.get("apiVersion"))) == reach.GATEWAY_GROUP and (
        obj.get("kind") == "ReferenceGrant"
    )


def _granted(
    grant: Mapping[str, Any], target: LlmTarget, related: Sequence[Mapping[str, Any]]
) -> Iterator[str]:
    """A ReferenceGrant lets routes of other namespaces, which this namespace's policies do not
    see, use its Services or InferencePools as backends: one naming the LLM's (or naming none,
    so every one) is exposure in waiting."""
    namespace = reach.namespace_of(grant)
    for i, to in enumerate(_list(_map(grant.get("spec")).get("to"))):
        ref = _map(to)
        if ref.get("kind") not in ("Service", "InferencePool"):
            continue  # Secrets for TLS certificates, ...
        if not _str(ref.get("name")):
            if reach.same_namespace(namespace, target.namespace):
                yield f"spec.to[{i}]"
        elif reach.backend_reaches(ref, namespace, target, related):
            yield f"spec.to[{i}]"


def _service_paths(service: Mapping[str, Any]) -> Iterator[str]:
    spec = _map(service.get("spec"))
    if spec.get("type") in _EXTERNAL_TYPES:
        yield "spec.type"
    if _list(spec.get("externalIPs")):
        yield "spec.externalIPs"


def _ingress_backends(ingress: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(path, Service name) of every backend of an Ingress, networking/v1 and the older form."""
    spec = _map(ingress.get("spec"))
    backends = [
        ("spec.defaultBackend", spec.get("defaultBackend")),
        ("spec.backend", spec.get("backend")),
    ]
    for i, rule in enumerate(_list(spec.get("rules"))):
        for j, path in enumerate(_list(_map(_map(rule).get("http")).get("paths"))):
            backends.append((f"spec.rules[{i}].http.paths[{j}].backend", _map(path).get("backend")))
    for path, raw in backends:
        backend = _map(raw)
        name = _str(_map(backend.get("service")).get("name")) or _str(backend.get("serviceName"))
        if name:
            yield path, name


def _route_backends(route: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    spec = _map(route.get("spec"))
    to = _map(spec.get("to"))
    if (_str(to.get("kind")) or "Service") == "Service" and _str(to.get("name")):
        yield "spec.to", _str(to.get("name"))
    for i, alt in enumerate(_list(spec.get("alternateBackends"))):
        if (_str(_map(alt).get("kind")) or "Service") == "Service":
            yield f"spec.alternateBackends[{i}]", _str(_map(alt).get("name"))


def gateway_guarded(route: Mapping[str, Any], related: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every Gateway the route attaches to (or the route itself) is targeted by a gateway
    guardrail policy: then its traffic passes the guardrail."""
    policies = [
        o for o in related
        if is_gateway_guardrail(o)
    ]  # fmt: skip
    refs = {ref for p in policies for ref in target_refs(p)}
    own = (route.get("kind"), reach.namespace_of(route), reach.name_of(route))
    if own in refs:
        return True
    parents = list(reach.route_parents(route))
    return bool(parents) and all(p in refs for p in parents)


def _unguarded_gateways(
    gateways: set[tuple[str, str]], related: Sequence[Mapping[str, Any]]
) -> list[str]:
    refs = {
        (namespace, name)
        for o in related
        if is_gateway_guardrail(o)
        for kind, namespace, name in target_refs(o)
        if kind == "Gateway"
    }
    return sorted(f"{ns}/{name}" for ns, name in gateways - refs)


def reaches(
    obj: Mapping[str, Any], target: LlmTarget, related: Sequence[Mapping[str, Any]]
) -> Iterator[str]:
    """Field paths at which the exposure object `obj` reaches the LLM's pods directly."""
    namespace = reach.namespace_of(obj)
    kind = obj.get("kind")
    if kind == "Service" and group_of(_str(obj.get("apiVersion"))) == "":
        if reach.service_reaches(obj, target):
            yield from _service_paths(obj)
    elif kind == "Ingress":
        for path, name in _ingress_backends(obj):
            if reach.named_service_reaches(name, namespace, target, related):
                yield path
    elif reach.is_gateway_route(obj):
        if gateway_guarded(obj, related):
            return
        for path, ref in reach.route_backends(obj):
            if reach.backend_reaches(ref, namespace, target, related):
                yield path
    elif _is_reference_grant(obj):
        yield from _granted(obj, target, related)
    elif kind == "Route":
        for path, name in _route_backends(obj):
            if reach.named_service_reaches(name, namespace, target, related):
                yield path


def _describe(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')} {reach.namespace_of(obj)}/{reach.name_of(obj)}"


_FIX = (
    "expose the guardrail instead (its Service or route), or route through a Gateway a "
    "guardrail policy targets; keep the LLM's own Service ClusterIP"
)


def exposure_findings(
    obj: Mapping[str, Any], target: LlmTarget, related: Sequence[Mapping[str, Any]]
) -> list[Finding]:
    """An exposure object being admitted, against one LLM of its namespace."""
    return [
        Finding(
            Rule.LLM_DIRECT_EXPOSURE,
            path,
            f"{_describe(obj)} reaches LLM {target.describe()} directly, around its guardrail; "
            + _FIX,
        )
        for path in dict.fromkeys(reaches(obj, target, related))
    ]


def _on_node_paths(obj: Mapping[str, Any]) -> Iterator[str]:
    """Where the object puts its pods on the node's network (hostNetwork) or opens a node port
    (hostPort): reachable from outside the cluster with no Service at all."""
    stack: list[tuple[Any, str]] = [(obj.get("spec"), "spec")]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if not isinstance(node, Mapping | list) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node))
            continue
        if node.get("hostNetwork") is True:
            yield f"{path}.hostNetwork"
        if "hostPort" in node and node.get("hostPort") not in (None, 0):
            yield f"{path}.hostPort"
        stack.extend((value, f"{path}.{key}") for key, value in node.items())


def exposed_findings(
    obj: Mapping[str, Any], target: LlmTarget, related: Sequence[Mapping[str, Any]]
) -> list[Finding]:
    """An LLM being admitted: its own host ports and host network, and the exposure objects
    already in its namespace."""
    found = [
        Finding(
            Rule.LLM_DIRECT_EXPOSURE,
            path,
            f"{path.rsplit('.', 1)[-1]} exposes LLM {target.describe()} on its node, around its "
            "guardrail; remove it and reach the LLM through its guardrail",
        )
        for path in dict.fromkeys(_on_node_paths(obj))
    ]
    for path in _operator_exposure(obj):
        found.append(
            Finding(
                Rule.LLM_DIRECT_EXPOSURE,
                path,
                f"{path} has the operator expose LLM {target.describe()} outside the cluster, "
                "around its guardrail; keep it ClusterIP and expose the guardrail instead",
            )
        )
    if _knative_public(obj):
        found.append(
            Finding(
                Rule.LLM_DIRECT_EXPOSURE,
                "metadata.labels",
                f"Knative serves LLM {target.describe()} on its public ingress; label it "
                f"{KNATIVE_VISIBILITY}: cluster-local and reach it through its guardrail",
            )
        )
    if target.kind == "LLMInferenceService" and isinstance(
        _map(_map(obj.get("spec")).get("router")).get("route"), Mapping
    ):
        # KServe makes an HTTPRoute straight to the pods: through the gateway's guardrail only.
        unguarded = _unguarded_gateways(router_gateways(obj), related)
        if unguarded:
            found.append(
                Finding(
                    Rule.LLM_DIRECT_EXPOSURE,
                    "spec.router.route",
                    f"spec.router.route has KServe route LLM {target.describe()} through Gateway "
                    f"{', '.join(unguarded)}, which no gateway guardrail policy "
                    f"({GATEWAY_POLICY}) targets; add one, or drop spec.router.route and serve "
                    "it through its guardrail",
                )
            )
    for other in related:
        if is_exposure(other) and reach.same_namespace(reach.namespace_of(other), target.namespace):
            paths = list(dict.fromkeys(reaches(other, target, related)))
            if paths:
                found.append(
                    Finding(
                        Rule.LLM_DIRECT_EXPOSURE,
                        "metadata.name",
                        f"{_describe(other)} ({', '.join(paths)}) already reaches this LLM's pods "
                        f"directly, around its guardrail; remove it or {_FIX}",
                    )
                )
    return found
