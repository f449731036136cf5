"""One charge per GPU: reservations keyed by kind and name, children charged to their root owner,
optimistic concurrency across replicas, and records that outlive a restart."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from mlgate.controller.gpu_budget import MemoryBudgetStore
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.gpu_reconcile import BudgetReconciler
from mlgate.controller.handlers import observe_pod, observe_workload
from mlgate.controller.state import PolicyState
from mlgate.engine.gpu_usage import ObservedPod, Records, loads, total
from mlgate.metrics import Metrics
from mlgate.run import LEDGER_GPU_RULES
from mlgate.webhook.admission import Admission, Config, Outcome
from mlgate.webhook.review import parse_review
from tests.unit.factories import GOOD_IMAGE, deployment, policy, review

NS = "ml-prod"
GOVERNED = {"mlgate.io/governed": "true"}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def state_with(*policies: dict[str, Any]) -> PolicyState:
    state = PolicyState()
    for body in policies:
        assert state.upsert(body).ok
    state.set_namespace(NS, GOVERNED)
    return state


class Cluster:
    """What the webhook reads: objects by (plural, name), and one shared budget store."""

    def __init__(self, *policies: dict[str, Any]) -> None:
        self.state = state_with(*policies)
        self.store = MemoryBudgetStore()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    async def lookup(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> Mapping[str, Any] | None:
        return self.objects.get((plural, name))

    def replica(self, ledger: GpuLedger | None = None) -> Admission:
        return Admission(
            self.state,
            ledger or GpuLedger(),
            Config(own_namespace="mlgate-system", gpu_rules=LEDGER_GPU_RULES),
            object_lookup=self.lookup,
            budgets=self.store,
            now=lambda: NOW,
        )


def judge(admission: Admission, body: dict[str, Any], resource: str = "deployments") -> Outcome:
    return asyncio.run(admission.review(parse_review(review(body, resource=resource))))


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["ownerReferences"] = [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": f"uid-{owner['metadata']['name']}",
            "controller": True,
        }
    ]
    return obj


def replicaset(name: str, owner: dict[str, Any], replicas: int, gpus: int) -> dict[str, Any]:
    body = deployment(name, replicas=replicas, gpus=gpus)
    body["kind"] = "ReplicaSet"
    return owned_by(body, owner)


def pod(name: str, gpus: int, resource: str = "nvidia.com/gpu") -> dict[str, Any]:
    limits = {resource: gpus} if gpus else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": {
            "containers": [{"name": "m", "image": GOOD_IMAGE, "resources": {"limits": limits}}]
        },
    }


def kind(body: dict[str, Any], api_version: str, kind_: str) -> dict[str, Any]:
    return {**copy.deepcopy(body), "apiVersion": api_version, "kind": kind_}


QUOTA_8 = policy(gpu={"namespaceQuota": 8})


def test_same_name_workloads_of_different_kinds_are_charged_separately() -> None:
    admission = Cluster(QUOTA_8).replica()
    assert judge(admission, deployment("x", replicas=3, gpus=2)).allowed
    job = kind(deployment("x", replicas=1, gpus=2), "batch/v1", "Job")
    job["spec"] = {"parallelism": 3, "template": job["spec"]["template"]}
    denied = judge(admission, job, "jobs")
    assert not denied.allowed and "6 in use + 6 requested" in denied.message
    sts = kind(deployment("x", replicas=1, gpus=2), "apps/v1", "StatefulSet")
    assert judge(admission, sts, "statefulsets").allowed  # 6 + 2 = 8
    assert not judge(admission, pod("x", 1), "pods").allowed  # full: Pod x is a third charge


def test_a_workload_without_gpus_cannot_erase_another_reservation() -> None:
    admission = Cluster(QUOTA_8).replica()
    assert judge(admission, deployment("x", replicas=3, gpus=2)).allowed
    assert judge(admission, pod("x", 0), "pods").allowed
    assert judge(admission, kind(deployment("x"), "apps/v1", "StatefulSet"), "statefulsets").allowed
    denied = judge(admission, deployment("y", replicas=2, gpus=2))
    assert not denied.allowed and "6 in use + 4 requested" in denied.message


def test_deployment_replicaset_and_pods_are_one_charge() -> None:
    cluster = Cluster(QUOTA_8)
    ledger = GpuLedger()
    admission = cluster.replica(ledger)
    web = deployment("web", replicas=3, gpus=2)
    assert judge(admission, web).allowed
    rs = replicaset("web-5d8f", web, replicas=3, gpus=2)
    # The ReplicaSet is not in the watch cache yet: its owner is read from the apiserver.
    assert judge(admission, rs, "replicasets").allowed
    cluster.objects[("replicasets", "web-5d8f")] = rs
    pods = [owned_by(pod(f"web-5d8f-{i}", 2), rs) for i in range(3)]
    for p in pods:
        assert judge(admission, p, "pods").allowed, "a compliant child was refused"
        observe_pod(ledger, "ADDED", p)
    # Still one charge of 6: a second Deployment's 2 GPUs fit, and its ReplicaSet too.
    other = deployment("other", replicas=1, gpus=2)
    assert judge(admission, other).allowed
    assert judge(admission, replicaset("other-1", other, replicas=1, gpus=2), "replicasets").allowed
    # A fourth pod beyond web's reservation is charged on its own: the quota is full.
    extra = judge(admission, owned_by(pod("web-5d8f-x", 2), rs), "pods")
    assert not extra.allowed and "beyond the reservation of Deployment.apps web" in extra.message


def test_pods_of_an_unknown_owner_are_charged_by_themselves() -> None:
    admission = Cluster(QUOTA_8).replica()
    owner = {"apiVersion": "example.com/v1", "kind": "Trainer", "metadata": {"name": "t"}}
    for i in range(4):
        assert judge(admission, owned_by(pod(f"t-{i}", 2), owner), "pods").allowed
    assert not judge(admission, owned_by(pod("t-4", 2), owner), "pods").allowed


def test_quota_over_a_non_default_resource() -> None:
    tpu = policy(gpu={"resources": ["google.com/tpu"], "namespaceQuota": 4})
    admission = Cluster(tpu).replica()
    assert judge(admission, pod("a", 4, "google.com/tpu"), "pods").allowed
    assert judge(admission, pod("b", 8), "pods").allowed  # nvidia.com/gpu is not this quota's
    denied = judge(admission, pod("c", 1, "google.com/tpu"), "pods")
    assert not denied.allowed and "4 in use + 1 requested" in denied.message


def test_two_replicas_under_twenty_concurrent_creates_never_exceed_the_quota() -> None:
    cluster = Cluster(QUOTA_8)
    replicas = [cluster.replica(), cluster.replica()]

    async def race() -> list[Outcome]:
        return list(
            await asyncio.gather(
                *(
                    replicas[i % 2].review(
                        parse_review(review(deployment(f"d{i}", replicas=1, gpus=1)))
                    )
                    for i in range(20)
                )
            )
        )

    outcomes = asyncio.run(race())
    assert sum(o.allowed for o in outcomes) == 8
    budget = asyncio.run(cluster.store.read(NS))
    assert sum(r.amounts["nvidia.com/gpu"] for r in budget.reservations.values()) == 8


def test_a_restarted_replica_keeps_every_reservation() -> None:
    cluster = Cluster(QUOTA_8)
    assert judge(cluster.replica(), deployment("a", replicas=3, gpus=2)).allowed
    restarted = cluster.replica(GpuLedger())  # empty caches, no pods seen yet
    denied = judge(restarted, deployment("b", replicas=2, gpus=2))
    assert not denied.allowed and "6 in use + 4 requested" in denied.message


def test_charges_take_the_larger_of_reservation_and_pods() -> None:
    dep, rs = ("apps", "Deployment", "web"), ("apps", "ReplicaSet", "web-1")
    pods = [
        ObservedPod((("", "Pod", "p1"), rs, dep), {"nvidia.com/gpu": 2}),
        ObservedPod((("", "Pod", "p2"), rs, dep), {"nvidia.com/gpu": 2}),
        ObservedPod((("", "Pod", "bare"),), {"nvidia.com/gpu": 1}),
    ]
    table = loads(pods, Records({dep: {"nvidia.com/gpu": 6}}))
    assert {k[2]: total(v) for k, v in table.items()} == {
        "web": {"nvidia.com/gpu": 6},
        "bare": {"nvidia.com/gpu": 1},
    }
    over = loads(pods, Records({dep: {"nvidia.com/gpu": 3}}))
    assert total(over[dep]) == {"nvidia.com/gpu": 4}


class Reconciled:
    def __init__(self, cluster: Cluster, ledger: GpuLedger) -> None:
        self.reconciler = BudgetReconciler(
            cluster.store,
            ledger,
            cluster.state,
            cluster.lookup,
            LEDGER_GPU_RULES,
            Metrics(),
            lambda: True,
            lambda: NOW + timedelta(minutes=5),
        )

    def run(self) -> None:
        asyncio.run(self.reconciler.round())


def test_reconciler_drops_gone_lowers_shrunk_and_folds_covered_children() -> None:
    cluster, ledger = Cluster(policy(gpu={"namespaceQuota": 16})), GpuLedger()
    admission = cluster.replica(ledger)
    web = deployment("web", replicas=2, gpus=2)
    assert judge(admission, web).allowed
    assert judge(admission, deployment("gone", replicas=1, gpus=1)).allowed
    assert judge(admission, deployment("small", replicas=3, gpus=1)).allowed
    # A child created while its owner's reservation is full is reserved on its own...
    observe_workload(ledger, "ADDED", web)
    rs = replicaset("web-2", web, replicas=2, gpus=2)
    for i in range(2):
        observe_pod(ledger, "ADDED", owned_by(pod(f"web-1-{i}", 2), web))
    assert judge(admission, rs, "replicasets").allowed
    budget = asyncio.run(cluster.store.read(NS))
    assert ("apps", "ReplicaSet", "web-2") in budget.reservations
    # ...and folded into it once the old pods are gone; "gone" was never created; small shrank.
    for i in range(2):
        observe_pod(ledger, "DELETED", owned_by(pod(f"web-1-{i}", 2), web))
    cluster.objects[("deployments", "web")] = web
    cluster.objects[("replicasets", "web-2")] = rs
    cluster.objects[("deployments", "small")] = deployment("small", replicas=1, gpus=1)
    observe_workload(ledger, "ADDED", rs)
    Reconciled(cluster, ledger).run()
    after = asyncio.run(cluster.store.read(NS)).reservations
    assert {k[2]: dict(r.amounts) for k, r in after.items()} == {
        "web": {"nvidia.com/gpu": 4},
        "small": {"nvidia.com/gpu": 1},
    }
    status = cluster.store.statuses[NS]
    assert (status["reserved"], status["charged"], status["quota"]) == (5, 5, 16)


def test_dra_template_devices_are_reserved_and_counted_against_the_quota() -> None:
    cluster = Cluster(policy(gpu={"namespaceQuota": 48}))
    cluster.objects[("resourceclaimtemplates", "sixteen")] = {
        "spec": {
            "spec": {
                "devices": {
                    "requests": [
                        {"name": "g", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 16}}
                    ]
                }
            }
        }
    }
    admission = cluster.replica()
    claimed = pod("c0", 0)
    claimed["spec"]["resourceClaims"] = [{"name": "g", "resourceClaimTemplateName": "sixteen"}]
    for i in range(3):
        claimed["metadata"]["name"] = f"c{i}"
        assert judge(admission, claimed, "pods").allowed
    claimed["metadata"]["name"] = "c3"
    denied = judge(admission, claimed, "pods")
    assert not denied.allowed and "48 in use + 16 requested" in denied.message
    cluster.objects[("pods", "c0")] = claimed | {"metadata": {"name": "c0", "namespace": NS}}
    Reconciled(cluster, GpuLedger()).run()  # the reconciler reads the claims too: kept at 16
    assert asyncio.run(cluster.store.read(NS)).reservations[("", "Pod", "c0")].amounts == {
        "gpu.nvidia.com.deviceclass.resource.k8s.io/devices": 16
    }
    missing = pod("m", 0)
    missing["spec"]["resourceClaims"] = [{"name": "g", "resourceClaimName": "not-yet"}]
    refused = judge(admission, missing, "pods")
    assert not refused.allowed and "ResourceClaim not-yet" in refused.message
