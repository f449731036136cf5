"""Hostile AdmissionReviews through the real HTTP server: any depth, any size the apiserver
can send, any shape. Each gets an mlgate answer (never an HTTP 500); scale-downs and
metadata-only updates pass whatever the object looks like."""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from kopf._cogs.clients import api as kopf_api

from mlgate import jsonbound
from mlgate.cluster import kopfjson
from mlgate.engine.workloads import SUPPORTED
from tests.unit.factories import deployment, review
from tests.unit.test_server import make_webhook, serve

DEEP = 20_000  # the apiserver's JSON decoder allows 10000 levels per object


def nested(depth: int) -> Any:
    node: Any = "bottom"
    for i in range(depth):
        node = {"k": node} if i % 2 else [node]
    return node


def raw(body: dict[str, Any], marker: str, replacement: str) -> bytes:
    """Serialise with a placeholder, then splice in text json.dumps could not produce."""
    text = json.dumps(body)
    assert f'"{marker}"' in text
    return text.replace(f'"{marker}"', replacement).encode()


def deep_text(depth: int) -> str:
    return '{"k":' * depth + '"bottom"' + "}" * depth


async def post(client: TestClient[Any, Any], data: bytes) -> dict[str, Any]:
    response = await client.post("/validate", data=data)
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = (await response.json())["response"]
    return answer


def run(data: list[bytes]) -> tuple[list[dict[str, Any]], str]:
    webhook = make_webhook()
    webhook.ready.set()
    answers: list[dict[str, Any]] = []
    metrics: list[str] = []

    async def body(client: TestClient[Any, Any]) -> None:
        for item in data:
            answers.append(await post(client, item))
        metrics.append(await (await client.get("/metrics")).text())

    serve(webhook, body)
    return answers, metrics[0]


def test_depth_beyond_python_recursion_is_judged_and_updates_pass() -> None:
    old = deployment(replicas=3)
    old["spec"]["extra"] = "DEEP"  # preserved unknown fields of a custom resource, say
    smaller = copy.deepcopy(old)
    smaller["spec"]["replicas"] = 1
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"team": "risk"}
    deep = deep_text(DEEP)
    create = raw(review(old), "DEEP", deep)
    scale_down = raw(review(smaller, "UPDATE", old), "DEEP", deep)
    metadata = raw(review(relabelled, "UPDATE", old), "DEEP", deep)
    (judged, scaled, labelled), _ = run([create, scale_down, metadata])
    assert judged["uid"] == review(old)["request"]["uid"]
    assert judged["allowed"] is True  # judged: nothing mlgate reads is down there
    assert scaled["allowed"] is True and labelled["allowed"] is True


@pytest.mark.parametrize("field", ["env", "image", "resources"])
def test_deep_nesting_inside_a_container_is_judged(field: str) -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0][field] = "DEEP"
    (answer,), _ = run([raw(review(obj), "DEEP", "[" + deep_text(DEEP) + "]")])
    assert answer["uid"] == review(obj)["request"]["uid"]
    assert answer["allowed"] or answer["status"]["message"].startswith("mlgate"), answer


def test_the_largest_review_the_apiserver_can_send_is_answered() -> None:
    # 3 MiB of characters Go escapes as \\u003c, in object and oldObject.
    old = deployment(annotations={"note": "<" * (3 * 1024 * 1024)})
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 1
    data = json.dumps(review(new, "UPDATE", old)).replace("<", "\\u003c").encode()
    assert len(data) > 36 * 1024 * 1024
    (answer,), _ = run([data])
    assert answer["allowed"] is True


WEIRD: tuple[Any, ...] = (None, "text", 7, True, [], {}, [None], {"": {}}, nested(300))


def _mutations(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into `obj`, to replace what is there with something of another shape."""
    found = [path] if path else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += _mutations(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found += _mutations(value, (*path, i))
    return found


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize("kind", ["Deployment", "Pod"])
def test_every_field_of_every_wrong_shape_gets_an_answer(kind: str) -> None:
    base = deployment(gpus=1, annotations={"mlgate.io/model": "m@1"})
    if kind == "Pod":
        base = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": base["metadata"],
            "spec": base["spec"]["template"]["spec"],
        }
    bodies = [
        json.dumps(review(_replace(base, path, weird), resource=f"{kind.lower()}s")).encode()
        for path in _mutations(base)
        if path[0] != "metadata" or len(path) > 1
        for weird in WEIRD
    ]
    answers, metrics = run(bodies)
    assert len(answers) == len(bodies)
    for answer in answers:
        assert answer["allowed"] or answer["status"]["message"].startswith("mlgate")
    # Wrong shapes are judged or refused as unjudgeable, never an internal error (a bug).
    assert 'reason="internal"' not in metrics, metrics


def test_scale_downs_and_metadata_updates_pass_for_every_kind_whatever_the_shape() -> None:
    bodies, deep = [], deep_text(2 * sys.getrecursionlimit())  # too deep for json, still fast
    for spec in SUPPORTED:
        group = f"{spec.group}/" if spec.group else ""
        odd = {"replicas": 4, "template": "not a template", "x": "DEEP"}
        old = {"apiVersion": f"{group}{spec.versions[0]}", "kind": spec.kind,
               "metadata": {"name": "w", "namespace": "ml-prod"}, "spec": odd}  # fmt: skip
        down = copy.deepcopy(old)
        down["spec"]["replicas"] = 2
        labelled = copy.deepcopy(old)
        labelled["metadata"]["labels"] = {"a": "b"}
        for new in (down, labelled):
            # json.dumps itself recurses: the deep part is spliced in as text.
            bodies.append(raw(review(new, "UPDATE", old, resource=spec.plural), "DEEP", deep))
    answers, _ = run(bodies)
    assert all(a["allowed"] for a in answers), [a for a in answers if not a["allowed"]][:1]


def test_bounded_loads_keeps_equal_subtrees_equal_and_different_ones_different() -> None:
    a, b = deep_text(5000), deep_text(5001)
    assert jsonbound.loads(a) == jsonbound.loads(a)
    assert jsonbound.loads(a) != jsonbound.loads(b)
    shallow = {"x": [1, {"y": "[{"}]}
    assert jsonbound.loads(json.dumps(shallow)) == shallow
    with pytest.raises(ValueError, match="never closed"):
        jsonbound.loads("[" * 50_000)


def test_kopf_decodes_watch_events_of_any_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf_api, "json", json)  # as kopf ships, and restored afterwards
    monkeypatch.setattr(aiohttp.ClientResponse, "json", aiohttp.ClientResponse.json)
    event = '{"type":"ADDED","object":' + deep_text(DEEP) + "}"
    with pytest.raises(RecursionError):
        kopf_api.json.loads(event)
    kopfjson.install()
    assert kopf_api.json.loads(event)["type"] == "ADDED"
