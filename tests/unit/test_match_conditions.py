"""Every CEL expression mlgate ships, evaluated against the requests the apiserver really sends.

A CEL expression that reads a field the request lacks is an error, not false, and under
failurePolicy Fail an erroring match condition refuses the request: so each expression must
evaluate, without error, on every request shape, including the nameless collection delete.
"""

from __future__ import annotations

from typing import Any

import celpy
import celpy.adapter
import pytest

from mlgate.webhook.config import (
    LLM_WEBHOOK,
    NAMESPACES_WEBHOOK,
    NETWORK_POLICIES_WEBHOOK,
    POLICIES_WEBHOOK,
    WORKLOADS_WEBHOOK,
    webhook_configuration,
)
from tests.unit.test_chart import render, webhooks


def _request(operation: str, **fields: Any) -> dict[str, Any]:
    """An AdmissionRequest as the apiserver serialises it: omitempty fields are absent."""
    return {
        "uid": "0f0e8d4c-0000-4000-8000-000000000001",
        "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
        "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
        "requestKind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
        "requestResource": {
            "group": "networking.k8s.io",
            "version": "v1",
            "resource": "networkpolicies",
        },
        "operation": operation,
        "userInfo": {"username": "alice"},
        **fields,
    }


def _netpol(name: str) -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": "ml"}, "spec": {}}


# (request, whether the networkpolicies webhook must be called)
NETWORK_POLICY_REQUESTS: dict[str, tuple[dict[str, Any], bool]] = {
    "create": (_request("CREATE", name="x", namespace="ml", object=_netpol("x")), True),
    "create with generateName": (_request("CREATE", namespace="ml", object=_netpol("")), True),
    "update": (
        _request("UPDATE", name="x", namespace="ml", object=_netpol("x"), oldObject=_netpol("x")),
        True,
    ),
    "delete of another policy": (
        _request("DELETE", name="x", namespace="ml", oldObject=_netpol("x")),
        False,
    ),
    "delete of mlgate-egress": (
        _request(
            "DELETE", name="mlgate-egress", namespace="ml", oldObject=_netpol("mlgate-egress")
        ),
        True,
    ),
    # DELETECOLLECTION: each item is admitted with its old object but no request.name.
    "item of a collection delete": (
        _request("DELETE", namespace="ml", oldObject=_netpol("x")),
        False,
    ),
    "mlgate-egress in a collection delete": (
        _request("DELETE", namespace="ml", oldObject=_netpol("mlgate-egress")),
        True,
    ),
    "collection delete without objects": (_request("DELETE", namespace="ml"), False),
    "old object without metadata": (_request("DELETE", namespace="ml", oldObject={}), False),
    "bare minimum": (_request("DELETE"), False),
}


def _pod(annotations: dict[str, str] | None = None, image: str = "img", phase: str = "") -> Any:
    meta: dict[str, Any] = {"name": "p", "namespace": "ml"}
    if annotations is not None:
        meta["annotations"] = annotations
    status = {"phase": phase} if phase else {}
    return {"kind": "Pod", "metadata": meta, "spec": {"containers": [{"image": image}]}, **status}


def _status_write(old: Any, new: Any) -> dict[str, Any]:
    return _request(
        "UPDATE", name="p", namespace="ml", subResource="status", object=new, oldObject=old
    )


MODEL = {"mlgate.io/model": "approved"}
_SCALE = {"kind": "Scale", "metadata": {"name": "d"}, "spec": {"replicas": 3}}
WORKLOAD_REQUESTS: dict[str, tuple[dict[str, Any], bool]] = {
    "create": (_request("CREATE", namespace="ml", object=_pod()), True),
    "update": (_request("UPDATE", name="p", object=_pod(), oldObject=_pod()), True),
    "scale": (
        _request("UPDATE", name="d", subResource="scale", object=_SCALE, oldObject=_SCALE),
        True,
    ),
    "ephemeral containers": (
        _request(
            "UPDATE", name="p", subResource="ephemeralcontainers", object=_pod(), oldObject=_pod()
        ),
        True,
    ),
    "status only": (_status_write(_pod(MODEL), _pod(MODEL, phase="Running")), False),
    "status only, no annotations": (_status_write(_pod(), _pod(phase="Running")), False),
    "status changes the model annotation": (
        _status_write(_pod(MODEL), _pod({"mlgate.io/model": "evil"})),
        True,
    ),
    "status adds an annotation": (_status_write(_pod(), _pod(MODEL)), True),
    "status changes a label": (
        _status_write(_pod(), {**_pod(), "metadata": {"name": "p", "labels": {"a": "b"}}}),
        True,
    ),
    "status drops the annotations": (_status_write(_pod(MODEL), _pod()), True),
    "status changes the spec": (_status_write(_pod(), _pod(image="other")), True),
    "status of an object without spec": (
        _status_write({"metadata": {}}, {"metadata": {}, "status": {}}),
        False,
    ),
}


def _namespace(labels: dict[str, str] | None, phase: str = "Active") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "ml"}
    if labels is not None:
        meta["labels"] = labels
    return {"kind": "Namespace", "metadata": meta, "status": {"phase": phase}}


def _namespace_write(old: Any, new: Any, sub: str = "") -> dict[str, Any]:
    fields: dict[str, Any] = {"name": "ml", "object": new, "oldObject": old}
    return _request("UPDATE", **fields, **({"subResource": sub} if sub else {}))


SCOPED = {"team": "ml", "mlgate.io/governed": "true"}
NAMESPACE_REQUESTS: dict[str, tuple[dict[str, Any], bool]] = {
    "relabel": (_namespace_write(_namespace(SCOPED), _namespace({"team": "ml"})), True),
    "drop all labels": (_namespace_write(_namespace(SCOPED), _namespace(None)), True),
    "label a bare namespace": (_namespace_write(_namespace(None), _namespace(SCOPED)), True),
    "relabel through /status": (
        _namespace_write(_namespace(SCOPED), _namespace({}), "status"),
        True,
    ),
    "relabel through /finalize": (
        _namespace_write(_namespace(SCOPED), _namespace({}), "finalize"),
        True,
    ),
    "namespace controller: status": (
        _namespace_write(_namespace(SCOPED), _namespace(SCOPED, "Terminating"), "status"),
        False,
    ),
    "namespace controller: finalize": (
        _namespace_write(_namespace(None), _namespace(None, "Terminating"), "finalize"),
        False,
    ),
    "annotations only": (_namespace_write(_namespace(SCOPED), _namespace(SCOPED)), False),
    "no metadata": (_namespace_write({}, {}), False),
}


def _policy(last_good: str | None, ready: str = "True") -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": ready}]}
    if last_good is not None:
        status["lastGood"] = {"generation": 1, "spec": last_good}
    return {"kind": "ClusterMLPolicy", "metadata": {"name": "p"}, "spec": {}, "status": status}


def _policy_write(old: Any, new: Any, sub: str = "status") -> dict[str, Any]:
    fields: dict[str, Any] = {"name": "p", "object": new, "oldObject": old}
    return _request("UPDATE", **fields, **({"subResource": sub} if sub else {}))


POLICY_REQUESTS: dict[str, tuple[dict[str, Any], bool]] = {
    "create": (_request("CREATE", name="p", object=_policy(None)), True),
    "spec update": (_policy_write(_policy("{}"), _policy("{}"), sub=""), True),
    "conditions only": (_policy_write(_policy("{}"), _policy("{}", "False")), False),
    "first lastGood": (_policy_write(_policy(None), _policy("{}")), True),
    "lastGood rewritten": (_policy_write(_policy("{}"), _policy('{"mode":"Audit"}')), True),
    "lastGood dropped": (_policy_write(_policy("{}"), _policy(None)), True),
    "no status at all": (_policy_write({"metadata": {}}, {"metadata": {}}), False),
}


def _exposure(kind: str, spec: Any = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "chat", "namespace": "ml-prod"}}
    if spec is not None:
        obj["spec"] = spec
    group = "networking.k8s.io" if kind == "Ingress" else ""
    request = _request("CREATE", name="chat", object=obj)
    request["kind"] = {"group": group, "version": "v1", "kind": kind}
    return request


# llm.noDirectExposure: only Services that reach outside the cluster are sent (ClusterIP ones,
# most Services, keep working while mlgate is down); Ingresses and routes always.
LLM_REQUESTS: dict[str, tuple[dict[str, Any], bool]] = {
    "ClusterIP Service": (_exposure("Service", {"type": "ClusterIP", "ports": []}), False),
    "Service with the default type": (_exposure("Service", {"selector": {"app": "a"}}), False),
    "LoadBalancer Service": (_exposure("Service", {"type": "LoadBalancer"}), True),
    "NodePort Service": (_exposure("Service", {"type": "NodePort"}), True),
    "externalIPs": (_exposure("Service", {"externalIPs": ["192.0.2.1"]}), True),
    "Service without a spec": (_exposure("Service"), True),
    "Ingress": (_exposure("Ingress", {"rules": []}), True),
}
REQUESTS = {
    LLM_WEBHOOK: LLM_REQUESTS,
    POLICIES_WEBHOOK: POLICY_REQUESTS,
    WORKLOADS_WEBHOOK: WORKLOAD_REQUESTS,
    NETWORK_POLICIES_WEBHOOK: NETWORK_POLICY_REQUESTS,
    NAMESPACES_WEBHOOK: NAMESPACE_REQUESTS,
}


def _hooks(source: str) -> list[dict[str, Any]]:
    if source == "chart":
        return list(webhooks(render()).values())
    return list(webhook_configuration("mlgate", {}, "mlgate-system")["webhooks"])


@pytest.fixture(autouse=True)
def null_inequality(monkeypatch: pytest.MonkeyPatch) -> None:
    """cel-go, the apiserver's CEL, compares any value with null (`oldObject != null`);
    cel-python does for == but raises for != on maps. Give != the same answer as !(==)."""
    original = celpy.celtypes.MapType.__ne__

    def ne(self: celpy.celtypes.MapType, other: Any) -> bool:
        return True if other is None else original(self, other)

    monkeypatch.setattr(celpy.celtypes.MapType, "__ne__", ne)


def evaluate(expression: str, request: dict[str, Any]) -> Any:
    env = celpy.Environment()
    program = env.program(env.compile(expression))
    # As the apiserver binds them: object and oldObject are null when the request lacks them.
    variables = {
        "request": request,
        "object": request.get("object"),
        "oldObject": request.get("oldObject"),
    }
    return program.evaluate({k: celpy.adapter.json_to_cel(v) for k, v in variables.items()})


@pytest.mark.parametrize("source", ["generated", "chart"])
def test_match_conditions_never_error_and_route_as_intended(source: str) -> None:
    conditions = [
        (hook["name"], c["expression"])
        for hook in _hooks(source)
        for c in hook.get("matchConditions", [])
    ]
    # A webhook that gains conditions needs its own table of request shapes here.
    assert {name for name, _ in conditions} == set(REQUESTS)
    for name, expression in conditions:
        for shape, (request, called) in REQUESTS[name].items():
            result = evaluate(expression, request)
            assert isinstance(result, celpy.celtypes.BoolType), f"{source} {shape}: {result!r}"
            assert bool(result) is called, f"{source} {shape}"


def test_the_old_condition_fails_on_a_collection_delete() -> None:
    """The check above can fail: the condition mlgate used to ship errors on this shape."""
    old = "request.operation != 'DELETE' || request.name == 'mlgate-egress'"
    request, _ = NETWORK_POLICY_REQUESTS["item of a collection delete"]
    with pytest.raises(celpy.evaluation.CELEvalError, match="name"):
        evaluate(old, request)
