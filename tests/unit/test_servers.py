"""Model references where LLM servers read them: command lines, shell scripts, config fields."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from mlgate.api.compile import compile_approval, parse_resource
from mlgate.engine import models
from mlgate.engine.commandline import container_env, expand_k8s
from mlgate.engine.decisions import Rule
from mlgate.engine.modelrefs import field_refs, kserve_storage_refs, storage_uri_refs
from mlgate.engine.policy import Approval, ModelRules
from mlgate.engine.servers import command_refs, entrypoint, ray_serve_refs
from mlgate.engine.workloads import WorkloadView, view
from mlgate.manifests import Document, Source, documents
from tests.unit.factories import realworld

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
C = "spec.template.spec.containers[0]"


def refs(command: Any = None, args: Any = None, image: str = "", **env: str) -> list[str]:
    return [r.value for r in command_refs(command, args, "c", env, entrypoint(image, {}, "c"))]


def deployment(container: dict[str, Any], kind: str = "Deployment", **pod: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": "llm", "namespace": "team-a"},
        "spec": {"template": {"spec": {"containers": [container], **pod}}},
    }


def found(obj: dict[str, Any]) -> list[tuple[str, str]]:
    result = view(obj)
    assert isinstance(result, WorkloadView)
    return [(r.value, r.path) for r, _ in models.references(ModelRules(), result)]


def judged(obj: dict[str, Any], *uris: str) -> list[str]:
    result = view(obj)
    assert isinstance(result, WorkloadView)
    approvals = (Approval("ok", "m", "1", uris=frozenset(uris)),) if uris else ()
    return [f.path for f in models.check(ModelRules(), result, approvals, NOW)]


# --- vLLM ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (["vllm", "serve", "org/model"], None),
        (["vllm"], ["serve", "org/model", "--port", "8000"]),
        (["vllm", "serve", "--model", "org/model"], None),
        (["vllm", "serve", "--model=org/model"], None),
        (["python3", "-m", "vllm.entrypoints.openai.api_server"], ["--model", "org/model"]),
        (
            ["/usr/bin/python3.12", "-u", "-m", "vllm.entrypoints.openai.api_server"],
            ["--model=org/model"],
        ),
        (["python", "-mvllm.entrypoints.api_server", "--model", "org/model"], None),
        (
            ["python3", "-X", "dev", "-W", "ignore", "-m", "vllm.entrypoints.api_server"],
            ["--model", "org/model"],
        ),
        (["vllm", "serve", "--trust-remote-code", "org/model"], None),
        (["vllm", "serve", "--model_path_is_not_a_flag", "x", "--mod", "org/model"], None),
    ],
)
def test_vllm_reads_its_model_from_the_positional_or_model_flag(command: Any, args: Any) -> None:
    assert refs(command, args) == ["org/model"]


def test_vllm_served_model_name_is_not_a_model_but_tokenizer_lora_and_draft_are() -> None:
    args = [
        "--model=/mnt/models",
        "--served-model-name=org/alias",
        "--tokenizer",
        "org/tokenizer",
        "--lora-modules",
        "sql=org/sql-lora",
        '{"name": "chat", "path": "s3://bucket/chat"}',
        "--speculative-config",
        '{"model": "org/draft", "num_speculative_tokens": 3}',
    ]
    assert refs(["vllm", "serve"], args) == [
        "/mnt/models",
        "org/tokenizer",
        "org/sql-lora",
        "s3://bucket/chat",
        "org/draft",
    ]


def test_each_reference_names_the_word_it_came_from() -> None:
    found = list(command_refs(["vllm"], ["serve", "--port", "80", "--model", "org/m"], "c", {}))
    assert [(r.value, r.path, r.hf_ids) for r in found] == [("org/m", "c.args[4]", True)]


# --- shells ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (["sh", "-c", "pip install x && exec vllm serve org/model --port 80"], None),
        (
            ["/bin/bash", "-ec"],
            ["echo hi; HF_HOME=/tmp python3 -m sglang.launch_server --model-path org/model"],
        ),
        (["bash", "-lc", "set -e\n  env VLLM_X=1 vllm serve \\\n  org/model\n"], None),
        (["sh", "-c", 'M=org/model; vllm serve "$M"'], None),
        (["sh", "-c", "vllm serve ${MODEL}"], None),
        (["sh", "-c", 'exec vllm serve "$@"', "--"], ["org/model", "--port", "80"]),
        (["sh", "-c", "vllm serve $(MODEL)"], None),
        (["bash", "-o", "pipefail", "-e", "-c", "exec vllm serve org/model"], None),
        (["tini", "--", "/bin/sh", "-xc", "vllm serve org/model | tee /tmp/log"], None),
    ],
)
def test_shell_scripts_are_tokenised_as_a_shell_would(command: Any, args: Any) -> None:
    assert refs(command, args, MODEL="org/model") == ["org/model"]


def test_a_script_with_unbalanced_quotes_is_not_run_so_yields_nothing() -> None:
    assert refs(["sh", "-c", "vllm serve 'org/model"]) == []


def test_kubernetes_expansion_leaves_unknown_variables_and_unescapes_dollars() -> None:
    assert expand_k8s("$(A)-$(B)-$$(A)", {"A": "x"}) == "x-$(B)-$(A)"


def test_env_values_build_on_earlier_ones_and_unknown_ones_override() -> None:
    env = [("ORG", "org"), ("MODEL", "$(ORG)/m"), ("LATER", "$(NEXT)"), ("NEXT", "n")]
    assert container_env(env) == {"ORG": "org", "MODEL": "org/m", "LATER": "$(NEXT)", "NEXT": "n"}
    assert container_env([("MODEL", "org/m"), ("MODEL", None)]) == {}


# --- the other servers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (
            ["python3", "-m", "sglang.launch_server"],
            ["--model-path", "org/m", "--tp", "2"],
            "org/m",
        ),
        (["sglang", "serve", "--model_path=org/m"], None, "org/m"),
        (["text-generation-launcher"], ["--model-id", "org/m", "--port", "80"], "org/m"),
        (
            ["text-generation-launcher", "--model-id=o/b", "--lora-adapters=o/x,y=o/z"],
            None,
            "o/b o/x o/z",
        ),
        (["python", "-m", "huggingfaceserver"], ["--model_name=x", "--model_id=org/m"], "org/m"),
        (["tritonserver", "--model-repository=s3://bucket/repo"], None, "s3://bucket/repo"),
        (["tritonserver", "--model-store", "gs://bucket/repo"], None, "gs://bucket/repo"),
    ],
)
def test_each_server_reads_its_own_flags(command: Any, args: Any, expected: str) -> None:
    assert refs(command, args) == expected.split()


def test_args_alone_run_the_images_entrypoint() -> None:
    assert refs(None, ["--model", "org/m"], image="vllm/vllm-openai:v0.8.5") == ["org/m"]
    assert refs(
        None, ["--model-id", "org/m"], "ghcr.io/huggingface/text-generation-inference:3"
    ) == ["org/m"]
    # An unknown program's --model is its own business.
    assert refs(None, ["--model", "resnet50"], image="registry.example.com/train:1") == []
    assert refs(["python", "train.py", "--model", "resnet50"]) == []


def test_a_settings_file_instead_of_a_model_cannot_be_approved() -> None:
    assert refs(["vllm", "serve", "--config", "/etc/vllm.yaml"]) == ["--config /etc/vllm.yaml"]
    assert refs(["python", "-m", "sglang.launch_server", "--config=c.yaml"]) == ["--config c.yaml"]
    # Flags on the command line override the file's.
    assert refs(["vllm", "serve", "org/m", "--config", "/etc/vllm.yaml"]) == ["org/m"]


def _isvc(model: dict[str, Any], key: str = "model") -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "llm", "namespace": "team-a"},
        "spec": {"predictor": {key: model}},
    }


def test_kserve_args_go_to_the_runtime_of_the_model_format() -> None:
    args = ["--model_name=llama3", "--model_id=meta-llama/meta-llama-3-8b-instruct"]
    hf = {"modelFormat": {"name": "huggingface"}, "args": args}
    expected = [("meta-llama/meta-llama-3-8b-instruct", "spec.predictor.model.args[1]")]
    assert found(_isvc(hf)) == expected
    assert found(_isvc({"args": args}, key="huggingface")) == [
        (expected[0][0], "spec.predictor.huggingface.args[1]")
    ]
    vllm = {"modelFormat": {"name": "vLLM"}, "args": ["--model", "org/m"]}
    assert found(_isvc(vllm)) == [("org/m", "spec.predictor.model.args[1]")]
    # A format served by no recognised LLM server: its args are its own.
    sklearn = {"modelFormat": {"name": "sklearn"}, "args": ["--model_id=x/y"]}
    assert found(_isvc(sklearn)) == []


def test_triton_takes_no_hugging_face_ids() -> None:
    (ref,) = command_refs(["tritonserver", "--model-repository=models"], None, "c", {})
    assert not ref.hf_ids


# --- in workloads ----------------------------------------------------------------------------


def test_a_deployment_serving_an_unapproved_model_is_found_and_denied() -> None:
    obj = deployment({"name": "vllm", "image": "vllm/vllm-openai", "args": ["--model", "org/m"]})
    assert found(obj) == [("org/m", f"{C}.args[1]")]
    assert judged(obj) == [f"{C}.args[1]"]
    assert judged(obj, "hf://org/m") == []


def test_env_values_feed_kubernetes_expansion_and_unknown_ones_fail_closed() -> None:
    container = {
        "name": "vllm",
        "command": ["vllm", "serve", "$(MODEL)"],
        "env": [{"name": "MODEL", "value": "org/m"}],
    }
    assert found(deployment(container)) == [("org/m", f"{C}.command[2]")]
    container["env"] = [{"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "x"}}}]
    assert judged(deployment(container), "hf://org/m") == [f"{C}.command[2]"]


def test_local_paths_resolve_to_the_claim_mounted_there() -> None:
    container = {
        "name": "vllm",
        "command": ["vllm", "serve", "/models/llama"],
        "volumeMounts": [{"name": "weights", "mountPath": "/models", "subPath": "team"}],
    }
    volumes = [{"name": "weights", "persistentVolumeClaim": {"claimName": "llm-weights"}}]
    obj = deployment(container, volumes=volumes)
    assert found(obj) == [("pvc://llm-weights/team/llama", f"{C}.command[2]")]
    assert judged(obj, "pvc://llm-weights/team/llama") == []
    # Anything else on disk came from somewhere mlgate cannot see.
    volumes[0] = {"name": "weights", "emptyDir": {}}
    assert judged(obj, "pvc://llm-weights/team/llama") == [f"{C}.command[2]"]


def test_kserves_model_mount_is_judged_through_its_storage_uri() -> None:
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "llm"},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "huggingface"},
                    "storageUri": "hf://org/m",
                    "args": ["--model_dir=/mnt/models", "--model_name=llm"],
                }
            }
        },
    }
    assert found(isvc) == [("hf://org/m", "spec.predictor.model.storageUri")]
    # Outside KServe nothing fills /mnt/models from a judged reference.
    obj = deployment({"name": "s", "command": ["python", "-m", "huggingfaceserver"],
                      "args": ["--model_dir=/mnt/models"]})  # fmt: skip
    assert judged(obj, "hf://org/m") == [f"{C}.args[0]"]


def test_kserve_storage_spec_is_a_reference_approvals_can_name() -> None:
    holder: dict[str, Any] = {"storage": {"key": "minio", "path": "/llama/v1/"}}
    assert [r.value for r in kserve_storage_refs(holder, "p")] == [
        "kserve-storage://minio/llama/v1"
    ]
    holder["storage"] = {"path": "m", "parameters": {"type": "s3", "bucket": "models"}}
    assert [r.value for r in kserve_storage_refs(holder, "p")] == ["s3://models/m"]
    holder["storage"] = {"path": "m", "parameters": {"bucket": "other", "endpoint": "e"}}
    assert [(r.value, r.path) for r in kserve_storage_refs(holder, "p")] == [
        ("kserve-storage://default/m?bucket=other&endpoint=e", "p.storage.path")
    ]


def test_kserve_storage_spec_in_an_inference_service() -> None:
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "m"},
        "spec": {"predictor": {"sklearn": {"storage": {"key": "s3", "path": "sk/model.joblib"}}}},
    }
    assert found(isvc) == [
        ("kserve-storage://s3/sk/model.joblib", "spec.predictor.sklearn.storage.path")
    ]


def test_storage_uri_fields_of_trained_model_and_seldon_model() -> None:
    trained = {"spec": {"model": {"storageUri": "gs://b/m"}}}
    assert [(r.value, r.path) for r in storage_uri_refs("spec", "model")(trained)] == [
        ("gs://b/m", "spec.model.storageUri")
    ]
    seldon = {"spec": {"storageUri": "gs://b/iris", "requirements": ["sklearn"]}}
    assert [r.value for r in storage_uri_refs("spec")(seldon)] == ["gs://b/iris"]
    runtime = {"spec": {"model": {"modelURL": "org/m"}}}
    (ref,) = field_refs("spec", "model", "modelURL", hf_ids=True)(runtime)
    assert (ref.value, ref.path, ref.hf_ids) == ("org/m", "spec.model.modelURL", True)
    assert list(field_refs("spec", "model", "modelURL")({"spec": {"model": 3}})) == []


def _jobset(container_name: str, job_name: str) -> dict[str, Any]:
    container = {"name": container_name, "env": [{"name": "STORAGE_URI", "value": "hf://d/x"}]}
    job = {"template": {"spec": {"template": {"spec": {"containers": [container]}}}}}
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "j"},
        "spec": {"replicatedJobs": [{"name": job_name, **job}]},
    }


def test_the_dataset_initializer_loads_a_dataset_not_a_model() -> None:
    assert found(_jobset("dataset-initializer", "dataset-initializer")) == []
    # The name alone, outside the initializer job, hides nothing.
    assert found(_jobset("dataset-initializer", "node")) != []
    assert found(_jobset("model-initializer", "model-initializer")) != []


# --- Ray Serve LLM ---------------------------------------------------------------------------


def _ray_service(config: str) -> dict[str, Any]:
    return {"spec": {"serveConfigV2": config}}


def test_ray_serve_llm_reads_model_source_else_model_id() -> None:
    config = """
applications:
- name: llms
  import_path: ray.serve.llm:build_openai_app
  args:
    llm_configs:
    - model_loading_config: {model_id: qwen, model_source: Qwen/Qwen2.5-7B}
      lora_config: {dynamic_lora_loading_path: s3://bucket/loras}
    - model_loading_config: {model_id: org/only-id}
    - model_loading_config: {model_id: m, model_source: {bucket_uri: gs://b/m}}
    - configs/llama.yaml
- name: own-builder
  import_path: my.app:build
  args: {llm_config: {model_loading_config: {model_id: own/x}}}
- name: plain
  import_path: my.app:app
  args: {greeting: hello}
"""
    got = [(r.value, r.path) for r in ray_serve_refs(_ray_service(config))]
    base = "spec.serveConfigV2(applications[0].args.llm_configs"
    assert got == [
        ("Qwen/Qwen2.5-7B", f"{base}[0].model_loading_config.model_source)"),
        ("s3://bucket/loras", f"{base}[0].lora_config.dynamic_lora_loading_path)"),
        ("org/only-id", f"{base}[1].model_loading_config.model_id)"),
        ("gs://b/m", f"{base}[2].model_loading_config.model_source)"),
        ("configs/llama.yaml", f"{base}[3])"),
        (
            "own/x",
            "spec.serveConfigV2(applications[1].args.llm_config.model_loading_config.model_id)",
        ),
    ]


def test_unreadable_ray_serve_llm_config_fails_closed() -> None:
    (ref,) = ray_serve_refs(_ray_service("applications: [unclosed"))
    assert (ref.value, ref.path) == ("(unreadable YAML)", "spec.serveConfigV2")


# --- real upstream manifests -----------------------------------------------------------------


def _workloads(relative: str) -> Iterator[WorkloadView]:
    root = realworld()
    if root is None:
        pytest.skip("../shared/realworld is not present")
    path = root / relative
    for doc in documents(Source(str(path), path=path)):
        if isinstance(doc, Document) and isinstance(item := view(doc.obj), WorkloadView):
            yield item


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        (
            "kubernetes-sigs+lws/docs/examples/sglang/lws.yaml",
            ["meta-llama/Meta-Llama-3.1-8B-Instruct"] * 2,
        ),
        (
            "kubernetes-sigs+lws/docs/examples/vllm/GPU/lws.yaml",
            ["meta-llama/Llama-3.1-405B-Instruct"],
        ),
        (
            "kubernetes-sigs+lws/docs/examples/vllm/TPU/lws.yaml",
            ["meta-llama/Llama-3.3-70B-Instruct"],
        ),
        (
            "ray-project+kuberay/ray-operator/config/samples/ray-service.llm-serve.yaml",
            ["Qwen/Qwen2.5-7B-Instruct"],
        ),
        (
            "ray-project+kuberay/ray-operator/config/samples/ray-service.deepseek.yaml",
            ["deepseek-ai/DeepSeek-R1"],
        ),
    ],
)
def test_upstream_llm_servers_models_are_found(relative: str, expected: list[str]) -> None:
    (item,) = _workloads(relative)
    assert [r.value for r, _ in models.references(ModelRules(), item)] == expected
    unapproved = models.check(ModelRules(), item, (), NOW)
    assert {f.rule for f in unapproved} == {Rule.MODELS_APPROVAL}
    approval = Approval("ok", "m", "1", uris=frozenset(f"hf://{m}" for m in expected))
    assert models.check(ModelRules(), item, (approval,), NOW) == []


def test_an_approved_model_can_list_a_kserve_storage_reference() -> None:
    doc = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ApprovedModel",
        "metadata": {"name": "sk"},
        "spec": {"model": "sk", "version": "1", "uris": ["kserve-storage://s3/sk/model.joblib"]},
    }
    approval = compile_approval(parse_resource(doc))  # type: ignore[arg-type]
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "m"},
        "spec": {"predictor": {"sklearn": {"storage": {"key": "s3", "path": "sk/model.joblib"}}}},
    }
    item = view(isvc)
    assert isinstance(item, WorkloadView)
    assert models.check(ModelRules(), item, (approval,), NOW) == []
    assert models.check(ModelRules(), item, (), NOW) != []


def test_kserves_model_variables_in_its_runtimes_are_the_operators() -> None:
    script = "python -m huggingfaceserver ${MODEL_DIR_ARG} $0 $@"
    container = {
        "name": "kserve-container",
        "command": ["bash", "-c", "export MODEL_DIR_ARG=--model_dir=${MODEL_DIR}\n" + script],
        "args": ["--model_name={{.Name}}"],
    }
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "m"},
        "spec": {"predictor": {"containers": [container]}},
    }
    assert found(isvc) == []
    # Elsewhere nobody sets MODEL_DIR from a judged reference.
    assert judged(deployment(container)) == [f"{C}.command[2]"]
