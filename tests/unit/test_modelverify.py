"""Verifiers inserted after model downloads: the engine's plan, /mutate's patch and /validate's
backstop, on KServe-shaped pods (storage-initializer as KServe's pod mutator injects it)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.state import PolicyState
from mlgate.metrics import Metrics
from mlgate.webhook.admission import Admission, Config
from mlgate.webhook.server import Webhook
from tests.unit.factories import policy, review
from tests.unit.test_mutation import (
    SIGNED,
    SIGNED_DIGEST,
    Registry,
    apply_patch,
    mutate,
    run,
    signatures,
)

IMAGE = "registry.example.com/mlgate/mlgate@sha256:" + "e" * 64
URI = "s3://models/fraud/v3"
DIGEST = "sha256:" + "d1" * 32
OTHER_DIGEST = "sha256:" + "d2" * 32
VERIFY = {"models": {"verifyLoaded": {}}}


def approval(name: str = "fraud-v3", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ApprovedModel",
        "metadata": {"name": name, "generation": 1},
        "spec": {"model": "fraud", "version": "3", "uris": [URI], "digest": DIGEST, **spec},
    }


def kserve_pod(uri: str = URI, **extra_spec: Any) -> dict[str, Any]:
    mount = {"name": "kserve-provision-location", "mountPath": "/mnt/models"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "fraud-predictor-0", "namespace": "ml-prod"},
        "spec": {
            "initContainers": [
                {
                    "name": "storage-initializer",
                    "image": "kserve/storage-initializer:v0.15.0",
                    "args": [uri, "/mnt/models"],
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    "volumeMounts": [{**mount, "readOnly": False}],
                }
            ],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "kserve/sklearnserver:v0.15.0",
                    "args": ["--model_dir=/mnt/models"],
                    "volumeMounts": [{**mount, "readOnly": True}],
                }
            ],
            "volumes": [{"name": "kserve-provision-location", "emptyDir": {}}],
            **extra_spec,
        },
    }


def webhook(*docs: dict[str, Any], image: str | None = IMAGE) -> Webhook:
    state = PolicyState()
    for body in docs:
        assert state.upsert(body).ok
    state.set_namespace("ml-prod", {"mlgate.io/governed": "true"})
    admission = Admission(
        state, GpuLedger(), Config(verifier_image=image), verify_images=Registry()
    )
    hook = Webhook(admission, Metrics())
    hook.ready.set()
    return hook


def admitted(hook: Webhook, pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as stored: mutated, then validated (asserting it is allowed)."""
    answer = mutate(hook, pod, resource="pods")
    stored = apply_patch(pod, answer) if answer.get("patch") else pod
    verdict = run(hook, "/validate", review(stored, resource="pods"))
    assert verdict["allowed"], verdict["status"]["message"]
    return stored


def denial(hook: Webhook, pod: dict[str, Any]) -> str:
    answer = mutate(hook, pod, resource="pods")
    stored = apply_patch(pod, answer) if answer.get("patch") else pod
    verdict = run(hook, "/validate", review(stored, resource="pods"))
    assert not verdict["allowed"]
    message: str = verdict["status"]["message"]
    return message


def test_verifier_runs_right_after_the_download_with_the_approved_digest() -> None:
    hook = webhook(policy(**VERIFY), approval())
    stored = admitted(hook, kserve_pod())
    init = stored["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["storage-initializer", "mlgate-verify-model"]
    verifier = init[1]
    assert verifier["image"] == IMAGE
    assert verifier["command"] == ["mlgate"]
    assert verifier["args"] == ["verify-model", f"--digest={DIGEST}", "/mnt/models"]
    assert verifier["volumeMounts"] == [
        {"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True}
    ]
    assert verifier["resources"] == init[0]["resources"]
    assert verifier["securityContext"]["readOnlyRootFilesystem"] is True
    # Reinvocation (IfNeeded) or a re-sent object: nothing more to do.
    assert "patch" not in mutate(hook, stored, resource="pods")


def test_every_approved_digest_is_accepted() -> None:
    hook = webhook(policy(**VERIFY), approval(), approval("fraud-v3-rebuilt", digest=OTHER_DIGEST))
    args = admitted(hook, kserve_pod())["spec"]["initContainers"][1]["args"]
    assert args == ["verify-model", f"--digest={DIGEST}", f"--digest={OTHER_DIGEST}", "/mnt/models"]


def test_an_impostor_verifier_is_replaced_and_workload_init_containers_keep_their_order() -> None:
    pod = kserve_pod()
    own = {"name": "warmup", "image": "registry.example.com/ml/warmup:1"}
    fake = {"name": "mlgate-verify-model", "image": "evil/true:1", "args": ["--yes"]}
    pod["spec"]["initContainers"] = [own, fake, *pod["spec"]["initContainers"]]
    stored = admitted(webhook(policy(**VERIFY), approval()), pod)
    init = stored["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["warmup", "storage-initializer", "mlgate-verify-model"]
    assert init[2]["image"] == IMAGE


def test_validation_refuses_a_pod_whose_verifier_was_removed_or_moved() -> None:
    hook = webhook(policy(**VERIFY), approval())
    stored = admitted(hook, kserve_pod())
    removed = copy.deepcopy(stored)
    del removed["spec"]["initContainers"][1]
    moved = copy.deepcopy(stored)
    moved["spec"]["initContainers"].reverse()
    loosened = copy.deepcopy(stored)
    loosened["spec"]["initContainers"][1]["args"][1] = f"--digest={OTHER_DIGEST}"
    for pod in (removed, moved, loosened):
        verdict = run(hook, "/validate", review(pod, resource="pods"))
        assert not verdict["allowed"]
        assert "models.verifier" in verdict["status"]["message"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda s: s["containers"][0]["volumeMounts"][0].update(readOnly=False),
            "kserve-container mounts model volume kserve-provision-location writable",
        ),
        (
            lambda s: s["volumes"][0].update(emptyDir=None, hostPath={"path": "/models"}),
            "is not an emptyDir",
        ),
        (
            lambda s: s["initContainers"][0].update(restartPolicy="Always"),
            "keeps running after the download",
        ),
    ],
)
def test_anything_that_could_change_the_model_after_verification_is_refused(
    change: Any, expected: str
) -> None:
    pod = kserve_pod()
    change(pod["spec"])
    pod["spec"]["volumes"][0] = {
        k: v for k, v in pod["spec"]["volumes"][0].items() if v is not None
    }
    message = denial(webhook(policy(**VERIFY), approval()), pod)
    assert expected in message


def test_a_sidecar_with_a_writable_mount_of_the_model_is_refused() -> None:
    pod = kserve_pod()
    pod["spec"]["containers"].append(
        {
            "name": "rewriter",
            "image": "registry.example.com/ml/rewriter:1",
            "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/m"}],
        }
    )
    assert "rewriter mounts model volume" in denial(webhook(policy(**VERIFY), approval()), pod)


def test_downloads_without_a_usable_approval_are_refused() -> None:
    assert "no ApprovedModel" in denial(
        webhook(policy(**VERIFY), approval()), kserve_pod("s3://models/other")
    )
    no_digest = approval()
    del no_digest["spec"]["digest"]
    message = denial(webhook(policy(**VERIFY), no_digest), kserve_pod())
    assert "records no digest" in message and "mlgate approve-model" in message
    revoked = approval(revoked=True)
    assert "no ApprovedModel" in denial(webhook(policy(**VERIFY), revoked), kserve_pod())


def test_without_a_verifier_image_downloads_are_refused() -> None:
    message = denial(webhook(policy(**VERIFY), approval(), image=None), kserve_pod())
    assert "--verifier-image" in message


def test_a_download_the_policy_names_is_verified_for_the_declared_model() -> None:
    rules = {
        "models": {"verifyLoaded": {"downloaders": [{"initContainer": "fetch", "path": "/m"}]}}
    }
    pod = kserve_pod()
    pod["metadata"]["annotations"] = {"mlgate.io/model-uri": URI}
    pod["spec"]["initContainers"][0].update(name="fetch", args=["--to", "/m"])
    pod["spec"]["initContainers"][0]["volumeMounts"][0]["mountPath"] = "/m"
    stored = admitted(webhook(policy(**rules), approval()), pod)
    verifier = stored["spec"]["initContainers"][1]
    assert verifier["args"] == ["verify-model", f"--digest={DIGEST}", "/m"]


def test_warn_policies_and_policies_without_verify_loaded_do_not_inject() -> None:
    for rules in (policy(mode="Warn", **VERIFY), policy(models={"requireApproved": False})):
        answer = mutate(webhook(rules, approval()), kserve_pod(), resource="pods")
        assert "patch" not in answer


def test_workload_labels_and_annotations_cannot_switch_it_off() -> None:
    pod = kserve_pod()
    pod["metadata"]["labels"] = {"mlgate.io/verify": "false", "validation.ml.sigstore.dev/ml": ""}
    pod["metadata"]["annotations"] = {"mlgate.io/skip-verify": "true"}
    stored = admitted(webhook(policy(**VERIFY), approval()), pod)
    assert stored["spec"]["initContainers"][1]["name"] == "mlgate-verify-model"


def test_updates_that_keep_the_containers_are_not_judged_again() -> None:
    hook = webhook(policy(**VERIFY), approval())
    legacy = kserve_pod()  # created before the policy: no verifier
    relabelled = copy.deepcopy(legacy)
    relabelled["metadata"]["labels"] = {"team": "fraud"}
    verdict = run(hook, "/validate", review(relabelled, "UPDATE", legacy, resource="pods"))
    assert verdict["allowed"]


# --- Kubeflow Trainer: the model-initializer Job downloads, the node pods verify ---------------

LLAMA = "hf://meta-llama/Llama-3.2-1B-Instruct"
TRAINER_RULES = {"models": {"verifyLoaded": {}, "requireApproved": False}}


def _job(name: str, container: dict[str, Any], **extra: Any) -> dict[str, Any]:
    workspace = {"name": "initializer", "mountPath": "/workspace"}
    pod = {"containers": [{**container, "volumeMounts": [workspace]}]}
    return {"name": name, **extra, "template": {"spec": {"template": {"spec": pod}}}}


def trainer_jobset() -> dict[str, Any]:
    """The shape of the JobSet Kubeflow Trainer v2 builds from a torchtune runtime: initializer
    Jobs write a shared PVC at /workspace, the node Job starts once they completed."""
    fetch = "ghcr.io/kubeflow/trainer/{}-initializer"
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "finetune", "namespace": "ml-prod"},
        "spec": {
            "replicatedJobs": [
                _job("dataset-initializer", {
                    "name": "dataset-initializer", "image": fetch.format("dataset"),
                    "env": [{"name": "STORAGE_URI", "value": "hf://tatsu-lab/alpaca"}],
                }),
                _job("model-initializer", {
                    "name": "model-initializer", "image": fetch.format("model"),
                    "env": [{"name": "STORAGE_URI", "value": LLAMA}],
                }),
                _job(
                    "node",
                    {
                        "name": "node", "image": "ghcr.io/kubeflow/trainer/torchtune-trainer",
                        "command": ["tune", "run", "checkpointer.checkpoint_dir=/workspace/model"],
                    },
                    dependsOn=[{"name": "model-initializer", "status": "Complete"}],
                ),
            ]
        },
    }  # fmt: skip


def test_trainer_node_pods_verify_what_the_model_initializer_downloaded() -> None:
    hook = webhook(policy(**TRAINER_RULES), approval(uris=[LLAMA]))
    jobset = trainer_jobset()
    answer = mutate(hook, jobset, resource="jobsets")
    stored = apply_patch(jobset, answer)
    node = stored["spec"]["replicatedJobs"][2]["template"]["spec"]["template"]["spec"]
    [verifier] = node["initContainers"]
    assert verifier["args"] == ["verify-model", f"--digest={DIGEST}", "/workspace/model"]
    assert verifier["volumeMounts"] == [
        {"mountPath": "/workspace", "name": "initializer", "readOnly": True}
    ]
    initializers = stored["spec"]["replicatedJobs"][:2]
    assert all(
        "initContainers" not in j["template"]["spec"]["template"]["spec"] for j in initializers
    )
    assert run(hook, "/validate", review(stored, resource="jobsets"))["allowed"]
    verdict = run(hook, "/validate", review(jobset, resource="jobsets"))
    assert not verdict["allowed"] and "models.verifier" in verdict["status"]["message"]


def test_trainer_model_without_a_digest_is_refused() -> None:
    bare = approval(uris=[LLAMA])
    del bare["spec"]["digest"]
    hook = webhook(policy(**TRAINER_RULES), bare)
    verdict = run(hook, "/validate", review(trainer_jobset(), resource="jobsets"))
    assert not verdict["allowed"] and "records no digest" in verdict["status"]["message"]


def test_pins_inside_a_list_that_gains_a_verifier_are_kept() -> None:
    pod = kserve_pod()
    pod["spec"]["initContainers"][0]["image"] = SIGNED
    pod["spec"]["containers"][0]["image"] = SIGNED
    hook = webhook(policy(images=signatures(), **VERIFY), approval())
    stored = apply_patch(pod, mutate(hook, pod, resource="pods"))
    pinned = f"{SIGNED}@{SIGNED_DIGEST}"
    init = stored["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["storage-initializer", "mlgate-verify-model"]
    assert init[0]["image"] == pinned
    assert stored["spec"]["containers"][0]["image"] == pinned
