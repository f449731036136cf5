"""GPU quota through the real apiserver with two `mlgate run` replicas behind one webhook URL:
concurrent creates, restarts, owner chains as controllers create them, kinds sharing a name,
quotas over other resources, and the GPUBudget a user reads with kubectl."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from itertools import cycle
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.devcluster import Cluster
from mlgate.devrun import WEBHOOK_CONFIG_KINDS, MlgateProcess, free_port, stand_in_crds
from tests.e2e.test_admission import GOOD, apply, policy_doc, wait_policy, workload

REPO = Path(__file__).resolve().parents[2]
WEBHOOK = "mlgate-gpu-e2e"


class RoundRobin:
    """A TCP balancer on loopback: each connection goes to the next replica (TLS passes through;
    the replicas share one certificate, as behind a Service)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = cycle(ports)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", next(self.ports)), timeout=5)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


class Replicas:
    def __init__(self, cp: Cluster, logs: Path) -> None:
        self.cp, self.logs = cp, logs
        self.ports = [free_port(), free_port()]
        self.balancer = RoundRobin(self.ports)
        self.processes: list[MlgateProcess] = []

    def start(self, index: int) -> MlgateProcess:
        process = MlgateProcess(
            self.cp.kubeconfig,
            self.logs / f"replica-{index}-{uuid.uuid4().hex[:4]}.log",
            webhook_config=WEBHOOK,
            port=self.ports[index],
            extra_args=[
                "--register-webhook-url",
                f"https://127.0.0.1:{self.balancer.port}",
                "--identity",
                f"replica-{index}",
            ],
        )
        self.processes.append(process.start())
        return process

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.balancer.close()


@pytest.fixture(scope="module")
def replicas(
    control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    control_plane.kubectl("apply", "-f", str(REPO / "crds"), check=True)
    control_plane.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(stand_in_crds()))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=True
    )
    control_plane.kubectl("create", "namespace", "mlgate-system")
    group = Replicas(control_plane, tmp_path_factory.mktemp("gpu-replicas"))
    group.start(0)
    group.start(1)
    yield group
    group.stop()
    control_plane.kubectl("delete", WEBHOOK_CONFIG_KINDS, WEBHOOK, "--ignore-not-found")


@pytest.fixture
def quota(control_plane: Cluster, replicas: Replicas, namespace: str) -> Iterator[str]:
    name = f"gpu-{uuid.uuid4().hex[:8]}"
    apply(control_plane, policy_doc(name, namespace, gpu={"namespaceQuota": 8})).check_returncode()
    wait_policy(control_plane, name)
    yield name
    control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def kubectl_apply(cp: Cluster, doc: dict[str, Any]) -> subprocess.Popen[str]:
    cmd = [cp.kubectl_path, "--kubeconfig", str(cp.kubeconfig), "create", "-f", "-"]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None
    proc.stdin.write(yaml.safe_dump(doc))
    proc.stdin.close()
    return proc


def reserved(cp: Cluster, namespace: str) -> int:
    out = cp.kubectl("-n", "mlgate-system", "get", "gpubudget", namespace, "-o", "json")
    if out.returncode != 0:
        return 0
    spec = json.loads(out.stdout)["spec"]
    return sum(sum(r["resources"].values()) for r in spec.get("reservations", []))


def test_twenty_concurrent_creates_through_two_replicas_never_exceed_the_quota(
    control_plane: Cluster, quota: str, namespace: str
) -> None:
    docs = [workload("Deployment", f"d{i}", namespace, GOOD, gpus=1) for i in range(20)]
    procs = [kubectl_apply(control_plane, d) for d in docs]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    admitted = [code for code, _ in results if code == 0]
    refused = [err for code, err in results if code != 0]
    assert len(admitted) == 8, results
    assert all("gpu.namespaceQuota" in err for err in refused), refused
    assert reserved(control_plane, namespace) == 8


def test_a_restart_in_the_middle_loses_no_reservation(
    control_plane: Cluster, replicas: Replicas, quota: str, namespace: str
) -> None:
    first = workload("Deployment", "first", namespace, GOOD, gpus=2, replicas=3)
    apply(control_plane, first).check_returncode()
    for process in replicas.processes[-2:]:
        process.kill()
    replicas.start(0)
    replicas.start(1)
    out = apply(control_plane, workload("Job", "second", namespace, GOOD, gpus=2, replicas=2))
    assert out.returncode != 0 and "6 in use + 4 requested" in out.stderr, out.stderr
    apply(control_plane, workload("Job", "second", namespace, GOOD, gpus=2)).check_returncode()


def test_same_name_workloads_of_different_kinds_are_separate_charges(
    control_plane: Cluster, quota: str, namespace: str
) -> None:
    apply(control_plane, workload("Deployment", "x", namespace, GOOD, gpus=2, replicas=3))
    out = apply(control_plane, workload("Job", "x", namespace, GOOD, gpus=2, replicas=3))
    assert out.returncode != 0 and "gpu.namespaceQuota" in out.stderr, out.stderr
    apply(control_plane, workload("Pod", "x", namespace, GOOD)).check_returncode()  # no GPUs
    out = apply(control_plane, workload("Job", "x", namespace, GOOD, gpus=2, replicas=2))
    assert out.returncode != 0 and "6 in use + 4 requested" in out.stderr, out.stderr


def _owned(doc: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    doc["metadata"]["ownerReferences"] = [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    return doc


def _create(cp: Cluster, doc: dict[str, Any]) -> dict[str, Any]:
    out = cp.kubectl("create", "-o", "json", "-f", "-", input=yaml.safe_dump(doc))
    assert out.returncode == 0, out.stderr
    created: dict[str, Any] = json.loads(out.stdout)
    return created


def test_deployment_replicaset_and_pods_as_controllers_create_them_are_one_charge(
    control_plane: Cluster, quota: str, namespace: str
) -> None:
    web = _create(control_plane, workload("Deployment", "web", namespace, GOOD, 2, replicas=3))
    rs_doc = workload("Deployment", "web-5d8f", namespace, GOOD, gpus=2, replicas=3)
    rs_doc["kind"] = "ReplicaSet"
    rs = _create(control_plane, _owned(rs_doc, web))
    for _ in range(3):  # named as the ReplicaSet controller names them
        pod = workload("Pod", "", namespace, GOOD, gpus=2)
        pod["metadata"] = {"generateName": "web-5d8f-", "namespace": namespace}
        _create(control_plane, _owned(pod, rs))  # a refusal here fails the test
    other = workload("Deployment", "other", namespace, GOOD, gpus=2)
    apply(control_plane, other).check_returncode()
    extra = apply(control_plane, _owned(workload("Pod", "web-x", namespace, GOOD, gpus=2), rs))
    assert extra.returncode != 0 and "beyond the reservation" in extra.stderr, extra.stderr


def test_quota_over_a_non_default_resource(
    control_plane: Cluster, replicas: Replicas, namespace: str
) -> None:
    name = f"tpu-{uuid.uuid4().hex[:8]}"
    tpu = {"resources": ["google.com/tpu"], "namespaceQuota": 4}
    apply(control_plane, policy_doc(name, namespace, gpu=tpu)).check_returncode()
    wait_policy(control_plane, name)
    try:
        pod = workload("Pod", "a", namespace, GOOD)
        pod["spec"]["containers"][0]["resources"] = {"limits": {"google.com/tpu": 4}}
        apply(control_plane, pod).check_returncode()
        pod["metadata"]["name"] = "b"
        pod["spec"]["containers"][0]["resources"] = {"limits": {"google.com/tpu": 1}}
        out = apply(control_plane, pod)
        assert out.returncode != 0 and "4 in use + 1 requested" in out.stderr, out.stderr
    finally:
        control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def test_budget_is_readable_with_kubectl_and_as_gauges(
    control_plane: Cluster, replicas: Replicas, quota: str, namespace: str
) -> None:
    apply(control_plane, workload("Deployment", "seen", namespace, GOOD, gpus=2, replicas=2))
    deadline = time.monotonic() + 60
    while True:
        out = control_plane.kubectl("-n", "mlgate-system", "get", "gpubudget", namespace)
        row = out.stdout.splitlines()[1].split() if out.returncode == 0 else []
        if row[2:6] == ["0", "4", "4", "8"]:
            break  # NAME TARGET USED RESERVED CHARGED QUOTA AGE (no pods without controllers)
        assert time.monotonic() < deadline, out.stdout + out.stderr
        time.sleep(1)
    metrics = "".join(p.metrics() for p in replicas.processes[-2:])
    assert f'mlgate_gpu_quota{{namespace="{namespace}"}} 8.0' in metrics


def _claim_spec(mode: str = "ExactCount", count: int = 16) -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": "gpu.nvidia.com", "allocationMode": mode}
    if mode == "ExactCount":
        exactly["count"] = count
    return {"devices": {"requests": [{"name": "gpus", "exactly": exactly}]}}


def _claimed_pod(name: str, namespace: str, **ref: str) -> dict[str, Any]:
    pod = workload("Pod", name, namespace, GOOD)
    pod["spec"]["resourceClaims"] = [{"name": "gpus", **ref}]
    return pod


def test_dra_claims_and_templates_count_in_every_rule(
    control_plane: Cluster, replicas: Replicas, namespace: str
) -> None:
    name = f"dra-{uuid.uuid4().hex[:8]}"
    limits = {"maxPerPod": 16, "namespaceQuota": 48}
    apply(control_plane, policy_doc(name, namespace, gpu=limits)).check_returncode()
    wait_policy(control_plane, name)
    meta = {"namespace": namespace}
    dra = "resource.k8s.io/v1"
    try:
        template = {
            "apiVersion": dra,
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": "sixteen", **meta},
            "spec": {"spec": _claim_spec()},
        }
        apply(control_plane, template).check_returncode()
        for i in range(3):  # a template claim counts per pod
            ref = {"resourceClaimTemplateName": "sixteen"}
            apply(control_plane, _claimed_pod(f"t{i}", namespace, **ref)).check_returncode()
        out = apply(
            control_plane, _claimed_pod("t3", namespace, resourceClaimTemplateName="sixteen")
        )
        assert out.returncode != 0 and "48 in use + 16 requested" in out.stderr, out.stderr
        # A claim is judged itself: more devices than one pod may hold, or every device.
        for spec, why in ((_claim_spec(count=64), "64"), (_claim_spec("All"), "unbounded")):
            claim = {
                "apiVersion": dra,
                "kind": "ResourceClaim",
                "metadata": {"name": f"c-{why}", **meta},
                "spec": spec,
            }
            out = apply(control_plane, claim)
            assert out.returncode != 0 and "gpu.maxPerPod" in out.stderr, out.stderr
        out = apply(control_plane, _claimed_pod("s", namespace, resourceClaimName="absent"))
        assert out.returncode != 0 and "ResourceClaim absent" in out.stderr, out.stderr
    finally:
        control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def test_killing_a_replica_during_concurrent_creates_neither_overruns_nor_loses(
    control_plane: Cluster, replicas: Replicas, quota: str, namespace: str
) -> None:
    docs = [workload("Deployment", f"k{i}", namespace, GOOD, gpus=1) for i in range(12)]
    procs = [kubectl_apply(control_plane, d) for d in docs[:6]]
    replicas.processes[-2].kill()  # replica 0 dies with requests in flight
    procs += [kubectl_apply(control_plane, d) for d in docs[6:]]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    replicas.start(0)
    admitted = sum(code == 0 for code, _ in results)
    # Requests the dead replica was answering fail closed; a reservation it wrote just before
    # dying stays counted (until the reconciler finds no such Deployment): never fewer.
    assert 0 < admitted <= 8, results
    assert admitted <= reserved(control_plane, namespace) <= 8
