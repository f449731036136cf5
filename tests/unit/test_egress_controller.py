"""The egress reconciler against an in-memory API: create, restore, update, remove, status."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from mlgate.cluster.client import ApiError
from mlgate.controller.egress import CONDITION, EgressReconciler, egress_condition, up_to_date
from mlgate.controller.state import PolicyState
from mlgate.engine.egress import EffectiveEgress
from tests.unit.factories import policy

NP_PATH = "/apis/networking.k8s.io/v1/namespaces/{}/networkpolicies/mlgate-egress"
STATUS_PATH = "/apis/mlgate.io/v1alpha1/clustermlpolicies/{}/status"
GOVERNED = {"mlgate.io/governed": "true"}
ALLOWLIST = {"networkPolicy": {"allowedCIDRs": ["10.0.0.0/8"], "allowedPorts": [443]}}


class FakeApi:
    """Just enough of KubeClient: objects by path, every write recorded."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.fail_applies: ApiError | None = None

    async def list(self, path: str, params: Mapping[str, str] | None = None) -> list[Any]:
        if path == "/api/v1/namespaces":
            return [copy.deepcopy(o) for p, o in self.objects.items() if p.startswith(path)]
        return [copy.deepcopy(o) for p, o in self.objects.items() if "networkpolicies" in p]

    async def apply(self, path: str, body: dict[str, Any], manager: str = "mlgate") -> Any:
        self.writes.append(("apply", path))
        if self.fail_applies is not None:
            raise self.fail_applies
        self.objects[path] = copy.deepcopy(body)
        return copy.deepcopy(body)

    async def delete(self, path: str) -> Any:
        self.writes.append(("delete", path))
        if self.objects.pop(path, None) is None:
            raise ApiError(404, "NotFound", path)
        return {}

    async def get_or_none(self, path: str) -> Any:
        self.writes.append(("get", path))
        return copy.deepcopy(self.objects.get(path))

    async def patch(self, path: str, body: Any, content_type: str = "") -> Any:
        self.writes.append(("patch", path))
        self.objects[path] = copy.deepcopy(body)
        return body


def namespace(name: str, labels: dict[str, str], phase: str = "Active") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "status": {"phase": phase}}


def policy_body(name: str = "production-ml", **spec: Any) -> dict[str, Any]:
    body = policy(name, **spec)
    body["metadata"]["uid"] = f"uid-{name}"
    return body


def run(
    test: Callable[[EgressReconciler, FakeApi], Coroutine[Any, Any, None]],
    *policies: dict[str, Any],
) -> None:
    async def main() -> None:
        api, state = FakeApi(), PolicyState()
        reconciler = EgressReconciler(api, state)  # type: ignore[arg-type]
        for body in policies:
            assert state.upsert(body).ok
            reconciler.observe_policy(body, deleted=False)
        await test(reconciler, api)

    asyncio.run(main())


def test_a_namespace_entering_scope_gets_the_network_policy_owned_by_the_policy() -> None:
    async def test(reconciler: EgressReconciler, api: FakeApi) -> None:
        reconciler.observe_namespace("ml-prod", namespace("ml-prod", GOVERNED))
        reconciler.observe_namespace("other", namespace("other", {}))
        await reconciler.reconcile_pending()
        body = api.objects[NP_PATH.format("ml-prod")]
        assert NP_PATH.format("other") not in api.objects
        assert body["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "mlgate.io/v1alpha1",
                "kind": "ClusterMLPolicy",
                "name": "production-ml",
                "uid": "uid-production-ml",
            }
        ]
        assert body["spec"]["egress"][1] == {
            "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
            "ports": [{"protocol": "TCP", "port": 443}],
        }
        assert await reconciler.has_managed_policy("ml-prod")
        assert ("get", NP_PATH.format("ml-prod")) not in api.writes  # known from the write

    run(test, policy_body(egress=ALLOWLIST))


def test_drift_is_corrected_and_nothing_is_written_when_in_step() -> None:
    async def test(reconciler: EgressReconciler, api: FakeApi) -> None:
        reconciler.observe_namespace("ml-prod", namespace("ml-prod", GOVERNED))
        await reconciler.reconcile_pending()
        path = NP_PATH.format("ml-prod")
        wanted = copy.deepcopy(api.objects[path])
        # Our own write, seen again through the watch: no new write.
        api.writes.clear()
        reconciler.observe_network_policy("ml-prod", wanted)
        await reconciler.reconcile_pending()
        assert [w for w in api.writes if w[0] != "patch"] == []
        # Widened by hand: restored.
        widened = copy.deepcopy(wanted)
        widened["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
        reconciler.observe_network_policy("ml-prod", widened)
        await reconciler.reconcile_pending()
        assert api.objects[path] == wanted and ("apply", path) in api.writes
        # Deleted: recreated.
        api.writes.clear()
        del api.objects[path]
        reconciler.observe_network_policy("ml-prod", None)
        await reconciler.reconcile_pending()
        assert api.objects[path] == wanted

    run(test, policy_body(egress=ALLOWLIST))


def test_leaving_scope_removes_it_and_a_terminating_namespace_is_left_alone() -> None:
    async def test(reconciler: EgressReconciler, api: FakeApi) -> None:
        reconciler.observe_namespace("ml-prod", namespace("ml-prod", GOVERNED))
        await reconciler.reconcile_pending()
        reconciler.observe_namespace("ml-prod", namespace("ml-prod", {}))
        await reconciler.reconcile_pending()
        assert NP_PATH.format("ml-prod") not in api.objects
        assert not await reconciler.has_managed_policy("ml-prod")
        api.writes.clear()
        reconciler.observe_namespace("gone", namespace("gone", GOVERNED, phase="Terminating"))
        await reconciler.reconcile_pending()
        assert [w for w in api.writes if w[0] != "patch"] == []

    run(test, policy_body(egress=ALLOWLIST))


def test_policy_changes_update_and_deletion_removes() -> None:
    async def test(reconciler: EgressReconciler, api: FakeApi) -> None:
        reconciler.observe_namespace("ml-prod", namespace("ml-prod", GOVERNED))
        await reconciler.reconcile_pending()
        path = NP_PATH.format("ml-prod")
        narrower = policy_body(
            "second",
            egress={"networkPolicy": {"manage": False, "allowedCIDRs": ["10.1.0.0/16"]}},
        )
        assert reconciler.state.upsert(narrower).ok
        reconciler.observe_policy(narrower, deleted=False)
        await reconciler.reconcile_pending()
        body = api.objects[path]
        assert body["spec"]["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.1.0.0/16"}}]
        assert body["metadata"]["annotations"] == {
            "mlgate.io/egress-policies": "production-ml,second"
        }
        # Only the managing policy owns it: deleting it (not the other) removes the object.
        assert [r["name"] for r in body["metadata"]["ownerReferences"]] == ["production-ml"]
        first = policy_body(egress=ALLOWLIST)
        reconciler.state.remove(first)
        reconciler.observe_policy(first, deleted=True)
        await reconciler.reconcile_pending()
        assert path not in api.objects

    run(test, policy_body(egress=ALLOWLIST))


def test_resync_repairs_what_the_watch_missed() -> None:
    async def test(reconciler: EgressReconciler, api: FakeApi) -> None:
        api.objects["/api/v1/namespaces/ml-prod"] = namespace("ml-prod", GOVERNED)
        api.objects["/api/v1/namespaces/old"] = namespace("old", {})
        stale = {
            "metadata": {
                "name": "mlgate-egress",
                "namespace": "old",
                "labels": {"app.kubernetes.io/managed-by": "mlgate"},
            },
            "spec": {},
        }
        api.objects[NP_PATH.format("old")] = stale
        await reconciler.resync()
        assert NP_PATH.format("ml-prod") in api.objects
        assert NP_PATH.format("old") not in api.objects

    run(test, policy_body(egress=ALLOWLIST))


def test_status_says_where_and_with_whom_and_is_written_once() -> None:
    async def test(reconciler: EgressReconciler, api: FakeApi) -> None:
        reconciler.observe_namespace("ml-prod", namespace("ml-prod", GOVERNED))
        await reconciler.reconcile_pending()
        status = api.objects[STATUS_PATH.format("production-ml")]["status"]
        [condition] = [c for c in status["conditions"] if c["type"] == CONDITION]
        assert condition["status"] == "True" and condition["reason"] == "Managed"
        assert condition["message"] == "mlgate-egress kept in 1 namespace(s): ml-prod"
        assert condition["observedGeneration"] == 1
        # Until the watch delivers the write, the reconciler remembers it: no second write.
        api.writes.clear()
        reconciler.kick_all()
        await reconciler.reconcile_pending()
        assert api.writes == []

    run(test, policy_body(egress=ALLOWLIST))


def test_apply_failures_are_reported_in_status_and_retried() -> None:
    async def test(reconciler: EgressReconciler, api: FakeApi) -> None:
        api.fail_applies = ApiError(403, "Forbidden", "quota exceeded")
        reconciler.observe_namespace("ml-prod", namespace("ml-prod", GOVERNED))
        await reconciler.reconcile_pending()
        [condition] = api.objects[STATUS_PATH.format("production-ml")]["status"]["conditions"]
        assert condition["reason"] == "ApplyFailed" and "quota exceeded" in condition["message"]
        api.fail_applies = None
        await asyncio.sleep(1.2)  # the first retry comes after one second
        await reconciler.reconcile_pending()
        assert NP_PATH.format("ml-prod") in api.objects

    run(test, policy_body(egress=ALLOWLIST))


def test_up_to_date_ignores_what_others_own() -> None:
    desired = {
        "metadata": {"labels": {"a": "1"}, "annotations": {"b": "2"}},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": []},
    }
    live = copy.deepcopy(desired)
    live["metadata"]["labels"]["extra"] = "x"
    live["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "X", "uid": "1"}]
    del live["spec"]["egress"]  # the apiserver drops an empty list
    assert up_to_date(live, desired)
    live["metadata"]["labels"]["a"] = "changed"
    assert not up_to_date(live, desired)
    assert not up_to_date(None, desired)


def test_egress_condition_names_the_other_contributors() -> None:
    def effective(*policies: str) -> EffectiveEgress:
        return EffectiveEgress(True, (), None, (), policies, policies[:1])

    desired = {"a-ns": effective("p", "q"), "b-ns": effective("q")}
    assert egress_condition("p", True, desired, {})["message"] == (
        "mlgate-egress kept in 1 namespace(s): a-ns (intersected with q)"
    )
    q = egress_condition("q", False, desired, {})
    assert q["reason"] == "Contributing" and "a-ns (intersected with p), b-ns" in q["message"]
    assert egress_condition("r", True, desired, {})["reason"] == "NoNamespaceInScope"
