"""mlgate run behind the real kube-apiserver: the admission contract of design section 5."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.devcluster import Cluster
from mlgate.devrun import WEBHOOK_CONFIG_KINDS, MlgateProcess, stand_in_crds
from mlgate.webhook.config import workload_rules

REPO = Path(__file__).resolve().parents[2]
GOOD = "registry.example.com/ml/serve@sha256:" + "a" * 64
BAD = "docker.io/library/nginx:latest"


def running_mlgate(
    control_plane: Cluster,
    tmp_path_factory: pytest.TempPathFactory,
    webhook_config: str,
    *args: str,
    crds: Sequence[dict[str, Any]] = (),
) -> Iterator[MlgateProcess]:
    """`mlgate run ARGS` with mlgate's CRDs, the stand-in ML CRDs and `crds`, registering
    webhook configurations named `webhook_config`; both are removed when it stops, so no dead
    webhook outlives the module."""
    docs = [*stand_in_crds(), *crds]
    control_plane.kubectl("apply", "-f", str(REPO / "crds"), check=True)
    control_plane.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(docs))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=True
    )
    control_plane.kubectl("create", "namespace", "mlgate-system")
    log = tmp_path_factory.mktemp("mlgate") / "mlgate.log"
    with MlgateProcess(
        control_plane.kubeconfig,
        log,
        webhook_config=webhook_config,
        extra_args=list(args),
    ) as process:
        yield process
    control_plane.kubectl("delete", WEBHOOK_CONFIG_KINDS, webhook_config, "--ignore-not-found")


@pytest.fixture(scope="module")
def mlgate(
    control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlgateProcess]:
    yield from running_mlgate(
        control_plane, tmp_path_factory, "mlgate-e2e", "--audit-interval", "1"
    )


def apply(
    cp: Cluster, *docs: dict[str, Any], args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl("apply", *args, "-f", "-", input=yaml.safe_dump_all(docs))


def policy_doc(name: str, namespace: str, mode: str = "Enforce", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": name},
        "spec": {"mode": mode, "match": {"namespaces": [namespace]}, **spec},
    }


def wait_policy(cp: Cluster, name: str, timeout: float = 20.0) -> None:
    """Until the operator has compiled the policy's current generation (status says so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cp.kubectl("get", "clustermlpolicy", name, "-o", "json")
        if out.returncode == 0:
            body = json.loads(out.stdout)
            ready = [
                c for c in body.get("status", {}).get("conditions", []) if c["type"] == "Ready"
            ]
            gen = body["metadata"]["generation"]
            if ready and ready[0]["status"] == "True" and ready[0].get("observedGeneration") == gen:
                return
        time.sleep(0.2)
    raise AssertionError(
        f"policy {name} not Ready: {cp.kubectl('get', 'cmlp', name, '-o', 'yaml').stdout}"
    )


@pytest.fixture
def enforce(control_plane: Cluster, mlgate: MlgateProcess, namespace: str) -> Iterator[str]:
    """An Enforce policy on this namespace: registry allowlist, digests, no hostNetwork, GPUs."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    apply(
        control_plane,
        policy_doc(
            name,
            namespace,
            images={"allowedRegistries": ["registry.example.com/ml/*"], "requireDigest": True},
            egress={"allowHostNetwork": False},
            gpu={"maxPerPod": 4, "maxPerWorkload": 8, "namespaceQuota": 8},
        ),
    ).check_returncode()
    wait_policy(control_plane, name)
    yield name
    control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def pod_spec(image: str, gpus: int = 0) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": gpus}} if gpus else {}
    return {"containers": [{"name": "main", "image": image, "resources": resources}]}


def workload(
    kind: str, name: str, namespace: str, image: str, gpus: int = 0, replicas: int = 1
) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    template = {"metadata": {"labels": {"app": name}}, "spec": pod_spec(image, gpus)}
    job_template = {"spec": {**pod_spec(image, gpus), "restartPolicy": "Never"}}
    bodies: dict[str, dict[str, Any]] = {
        "Deployment": {
            "apiVersion": "apps/v1",
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": template,
            },
        },
        "Job": {
            "apiVersion": "batch/v1",
            "spec": {"parallelism": replicas, "template": job_template},
        },
        "CronJob": {
            "apiVersion": "batch/v1",
            "spec": {
                "schedule": "0 * * * *",
                # one Job at a time: runs allowed to overlap count as unbounded
                "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": {"template": job_template}},
            },
        },
        "Pod": {"apiVersion": "v1", "spec": pod_spec(image, gpus)},
        "InferenceService": {
            "apiVersion": "serving.kserve.io/v1beta1",
            # A custom predictor: one naming a model format needs a ServingRuntime
            # (tests/e2e/test_runtimes.py); Serverless needs maxReplicas to be bounded.
            "spec": {"predictor": {"maxReplicas": replicas, **pod_spec(image, gpus)}},
        },
        "PyTorchJob": {
            "apiVersion": "kubeflow.org/v1",
            "spec": {
                "pytorchReplicaSpecs": {
                    "Master": {"replicas": 1, "template": {"spec": pod_spec(GOOD)}},
                    "Worker": {"replicas": replicas, "template": {"spec": pod_spec(image, gpus)}},
                }
            },
        },
        "RayCluster": {
            "apiVersion": "ray.io/v1",
            "spec": {
                "headGroupSpec": {"template": {"spec": pod_spec(GOOD)}},
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu",
                        "replicas": replicas,
                        "minReplicas": replicas,
                        "maxReplicas": replicas,
                        "template": {"spec": pod_spec(image, gpus)},
                    }
                ],
            },
        },
    }
    return {"kind": kind, "metadata": meta, **bodies[kind]}


KINDS = ["Deployment", "Job", "CronJob", "Pod", "InferenceService", "PyTorchJob", "RayCluster"]


@pytest.mark.parametrize("kind", KINDS)
def test_compliant_admitted_noncompliant_denied(
    control_plane: Cluster, enforce: str, namespace: str, kind: str
) -> None:
    ok = apply(control_plane, workload(kind, "good", namespace, GOOD, gpus=1))
    assert ok.returncode == 0, ok.stderr
    bad = apply(control_plane, workload(kind, "bad", namespace, BAD))
    assert bad.returncode != 0
    assert 'admission webhook "workloads.mlgate.io" denied the request' in bad.stderr
    assert "images.registry" in bad.stderr and "images.digest" in bad.stderr
    assert f"[{enforce}]" in bad.stderr


def test_gpu_and_host_network_rules(control_plane: Cluster, enforce: str, namespace: str) -> None:
    greedy = workload("PyTorchJob", "greedy", namespace, GOOD, gpus=4, replicas=3)
    out = apply(control_plane, greedy)
    assert out.returncode != 0 and "gpu.maxPerWorkload" in out.stderr, out.stderr
    host = workload("Deployment", "host", namespace, GOOD)
    host["spec"]["template"]["spec"]["hostNetwork"] = True
    out = apply(control_plane, host)
    assert out.returncode != 0 and "egress.hostNetwork" in out.stderr


def test_warn_mode_warnings_reach_the_client(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str
) -> None:
    name = f"warn-{uuid.uuid4().hex[:8]}"
    apply(
        control_plane, policy_doc(name, namespace, "Warn", images={"requireDigest": True})
    ).check_returncode()
    wait_policy(control_plane, name)
    try:
        out = apply(control_plane, workload("Deployment", "warned", namespace, BAD))
        assert out.returncode == 0, out.stderr
        assert f"Warning: mlgate [{name}] images.digest" in out.stderr
    finally:
        control_plane.kubectl("delete", "clustermlpolicy", name)


def test_dry_run_same_verdict_no_reservation(
    control_plane: Cluster, enforce: str, namespace: str
) -> None:
    bad = apply(
        control_plane, workload("Deployment", "bad", namespace, BAD), args=("--dry-run=server",)
    )
    assert bad.returncode != 0 and "images.registry" in bad.stderr
    for attempt in range(3):  # 3 x 6 GPUs dry-run against a quota of 8: nothing is reserved
        out = apply(
            control_plane,
            workload("Deployment", f"big{attempt}", namespace, GOOD, gpus=3, replicas=2),
            args=("--dry-run=server",),
        )
        assert out.returncode == 0, out.stderr
    real = apply(control_plane, workload("Deployment", "big", namespace, GOOD, gpus=3, replicas=2))
    assert real.returncode == 0, real.stderr


def test_pod_image_update_and_ephemeral_container_denied(
    control_plane: Cluster, enforce: str, namespace: str
) -> None:
    apply(control_plane, workload("Pod", "runner", namespace, GOOD)).check_returncode()
    out = control_plane.kubectl("-n", namespace, "set", "image", "pod/runner", f"main={BAD}")
    assert out.returncode != 0 and "images.registry" in out.stderr
    debug = {"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox:1.36"}]}}
    out = control_plane.kubectl(
        "-n", namespace, "patch", "pod", "runner", "--subresource=ephemeralcontainers",
        "--type=strategic", "-p", json.dumps(debug),
    )  # fmt: skip
    assert out.returncode != 0
    assert "spec.ephemeralContainers[0].image" in out.stderr


def test_scale_down_of_noncompliant_deployment_allowed(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str
) -> None:
    apply(
        control_plane, workload("Deployment", "legacy", namespace, BAD, replicas=4)
    ).check_returncode()
    name = f"late-{uuid.uuid4().hex[:8]}"
    apply(
        control_plane, policy_doc(name, namespace, images={"requireDigest": True})
    ).check_returncode()
    wait_policy(control_plane, name)
    try:
        down = control_plane.kubectl(
            "-n",
            namespace,
            "patch",
            "deployment",
            "legacy",
            "--type=merge",
            "-p",
            '{"spec":{"replicas":1}}',
        )
        assert down.returncode == 0, down.stderr
        up = control_plane.kubectl(
            "-n",
            namespace,
            "patch",
            "deployment",
            "legacy",
            "--type=merge",
            "-p",
            '{"spec":{"replicas":6}}',
        )
        assert up.returncode != 0 and "images.digest" in up.stderr
    finally:
        control_plane.kubectl("delete", "clustermlpolicy", name)


def test_namespace_relabel_escape_denied(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str
) -> None:
    name = f"scope-{uuid.uuid4().hex[:8]}"
    label = f"e2e.mlgate.io/{name}"
    control_plane.kubectl("label", "namespace", namespace, f"{label}=governed", check=True)
    scoped = policy_doc(name, namespace, images={"requireDigest": True})
    scoped["spec"]["match"] = {"namespaceSelector": {"matchLabels": {label: "governed"}}}
    apply(control_plane, scoped).check_returncode()
    wait_policy(control_plane, name)
    rbac = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces"],
                    "verbs": ["get", "patch", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}
            ],
        },
    ]
    apply(control_plane, *rbac).check_returncode()
    mallory = control_plane.user_kubeconfig("mallory", ["ml-team"])
    try:
        escape = control_plane.kubectl(
            "label", "namespace", namespace, f"{label}-", kubeconfig=mallory
        )
        assert escape.returncode != 0, escape.stdout
        assert "namespaces.mlgate.io" in escape.stderr and name in escape.stderr
        harmless = control_plane.kubectl(
            "label", "namespace", namespace, "team=risk", kubeconfig=mallory
        )
        assert harmless.returncode == 0, harmless.stderr
        admin = control_plane.kubectl("label", "namespace", namespace, f"{label}-")
        assert admin.returncode == 0, admin.stderr
    finally:
        control_plane.kubectl("delete", "clustermlpolicy,clusterrole,clusterrolebinding", name)


def test_policy_edited_live_changes_verdicts(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str
) -> None:
    name = f"live-{uuid.uuid4().hex[:8]}"
    other = "ghcr.io/acme/model-server@sha256:" + "b" * 64
    apply(
        control_plane,
        policy_doc(name, namespace, images={"allowedRegistries": ["registry.example.com/ml/*"]}),
    ).check_returncode()
    wait_policy(control_plane, name)
    try:
        assert (
            apply(control_plane, workload("Deployment", "acme", namespace, other)).returncode != 0
        )
        widened = policy_doc(
            name,
            namespace,
            images={"allowedRegistries": ["registry.example.com/ml/*", "ghcr.io/acme/*"]},
        )
        apply(control_plane, widened).check_returncode()
        deadline = time.monotonic() + 10
        while (
            apply(control_plane, workload("Deployment", "acme", namespace, other)).returncode != 0
        ):
            assert time.monotonic() < deadline, "edited policy not in force within 10 s"
            time.sleep(0.3)
    finally:
        control_plane.kubectl("delete", "clustermlpolicy", name)


def test_invalid_policy_edit_is_refused_and_the_policy_stays_in_force(
    control_plane: Cluster, enforce: str, namespace: str
) -> None:
    # The structural schema lets this through (a glob pattern is fine) but the glob is not a
    # valid image pattern: the webhook compiles it like the operator would and refuses it.
    bad = policy_doc(enforce, namespace, images={"allowedRegistries": ["ghcr.io/acme/x:latest"]})
    refused = apply(control_plane, bad)
    assert refused.returncode != 0
    assert "policies.mlgate.io" in refused.stderr and "names a tag" in refused.stderr
    assert "spec.images.allowedRegistries[0]" in refused.stderr, refused.stderr
    assert apply(control_plane, workload("Deployment", "bad", namespace, BAD)).returncode != 0


def test_concurrent_gpu_creates_cannot_both_exceed_quota(
    control_plane: Cluster, enforce: str, namespace: str
) -> None:
    def start(name: str) -> subprocess.Popen[str]:
        body = yaml.safe_dump(workload("Deployment", name, namespace, GOOD, gpus=2, replicas=3))
        cmd = [
            control_plane.kubectl_path,
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "apply",
            "-f",
            "-",
        ]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdin is not None
        proc.stdin.write(body)
        proc.stdin.close()
        return proc

    procs = [start("gpu-a"), start("gpu-b")]
    results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    assert any("gpu.namespaceQuota" in err for _, err in results)


def test_killed_webhook_fails_closed_but_kube_system_works(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str, tmp_path: Path
) -> None:
    victim = MlgateProcess(
        control_plane.kubeconfig, tmp_path / "victim.log", webhook_config="mlgate-victim"
    )
    with victim:
        victim.kill()
    try:
        out = apply(control_plane, workload("Deployment", "orphan", namespace, GOOD))
        assert out.returncode != 0
        assert "failed calling webhook" in out.stderr and "mlgate.io" in out.stderr
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"probe-{uuid.uuid4().hex[:6]}", "namespace": "kube-system"},
        }
        system = apply(
            control_plane, {**workload("Deployment", cm["metadata"]["name"], "kube-system", BAD)}
        )
        assert system.returncode == 0, system.stderr
        control_plane.kubectl("-n", "kube-system", "delete", "deployment", cm["metadata"]["name"])
    finally:
        control_plane.kubectl("delete", WEBHOOK_CONFIG_KINDS, "mlgate-victim", "--ignore-not-found")


def test_deleting_a_workload_frees_its_gpu_reservation(
    control_plane: Cluster, enforce: str, namespace: str
) -> None:
    first = workload("Deployment", "first", namespace, GOOD, gpus=2, replicas=3)
    apply(control_plane, first).check_returncode()
    second = workload("Deployment", "second", namespace, GOOD, gpus=2, replicas=3)
    out = apply(control_plane, second)
    assert out.returncode != 0 and "gpu.namespaceQuota" in out.stderr
    control_plane.kubectl("-n", namespace, "delete", "deployment", "first", check=True)
    deadline = time.monotonic() + 10
    while apply(control_plane, second).returncode != 0:
        assert time.monotonic() < deadline, "the deleted workload's GPUs were not released"
        time.sleep(0.3)


def test_kubectl_scale_up_is_judged(control_plane: Cluster, enforce: str, namespace: str) -> None:
    apply(
        control_plane, workload("Deployment", "scaled", namespace, GOOD, gpus=2, replicas=2)
    ).check_returncode()
    up = control_plane.kubectl("-n", namespace, "scale", "deployment/scaled", "--replicas=9")
    assert up.returncode != 0 and "gpu.maxPerWorkload" in up.stderr, up.stderr
    down = control_plane.kubectl("-n", namespace, "scale", "deployment/scaled", "--replicas=1")
    assert down.returncode == 0, down.stderr


def test_background_audit_counts_existing_violations(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str
) -> None:
    apply(control_plane, workload("Deployment", "legacy", namespace, BAD)).check_returncode()
    name = f"audit-{uuid.uuid4().hex[:8]}"
    apply(
        control_plane, policy_doc(name, namespace, "Audit", images={"requireDigest": True})
    ).check_returncode()
    try:
        deadline = time.monotonic() + 20
        while True:
            out = control_plane.kubectl(
                "get", "clustermlpolicy", name, "-o", "jsonpath={.status.violations}"
            )
            if out.stdout.strip() == "1":
                break
            assert time.monotonic() < deadline, f"status.violations is {out.stdout!r}"
            time.sleep(0.5)
        columns = control_plane.kubectl("get", "clustermlpolicy", name).stdout
        assert "VIOLATIONS" in columns and " 1 " in columns
    finally:
        control_plane.kubectl("delete", "clustermlpolicy", name)


def test_a_model_named_on_an_llm_servers_command_line_needs_approval(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str
) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    apply(control_plane, policy_doc(name, namespace, models={"requireApproved": True}))
    wait_policy(control_plane, name)
    model = f"e2e-org/llm-{uuid.uuid4().hex[:6]}"
    serve = workload("Deployment", "vllm", namespace, GOOD)
    container = serve["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["sh", "-c", f"pip list && exec vllm serve {model} --port 8000"]
    try:
        out = apply(control_plane, serve)
        assert out.returncode != 0 and "models.approval" in out.stderr, out.stderr
        assert "spec.template.spec.containers[0].command[2]" in out.stderr
        approval = {
            "apiVersion": "mlgate.io/v1alpha1",
            "kind": "ApprovedModel",
            "metadata": {"name": name},
            "spec": {"model": "llm", "version": "1", "uris": [f"hf://{model}"]},
        }
        apply(control_plane, approval).check_returncode()
        deadline = time.monotonic() + 20
        while (out := apply(control_plane, serve)).returncode != 0:
            assert time.monotonic() < deadline, out.stderr  # the operator has not seen it yet
            time.sleep(0.2)
    finally:
        control_plane.kubectl("delete", "approvedmodel", name, "--ignore-not-found")
        control_plane.kubectl("delete", "clustermlpolicy", name, "--ignore-not-found")


def test_mutation_is_routed_only_while_a_policy_in_force_mutates(
    control_plane: Cluster, enforce: str, namespace: str
) -> None:
    """No policy pins or verifies: creates skip the mutating round trip (its rules are
    emptied). One that does is routed before it is reported Ready, and unrouted once gone."""

    def mutating_rules() -> Any:
        out = control_plane.kubectl(
            "get", "mutatingwebhookconfiguration", "mlgate-e2e", "-o", "json", check=True
        )
        (hook,) = json.loads(out.stdout)["webhooks"]
        return hook.get("rules", [])

    def settles(expected: Any) -> None:
        deadline = time.monotonic() + 20
        while mutating_rules() != expected:
            assert time.monotonic() < deadline, f"mutating rules not {expected}"
            time.sleep(0.2)

    settles([])
    name = f"verify-{uuid.uuid4().hex[:8]}"
    apply(control_plane, policy_doc(name, namespace, models={"verifyLoaded": {}}))
    try:
        wait_policy(control_plane, name)
        assert mutating_rules() == workload_rules()
    finally:
        control_plane.kubectl("delete", "clustermlpolicy", name)
    settles([])
    assert apply(control_plane, workload("Deployment", "unrouted", namespace, GOOD)).returncode == 0
