"""The llm rules through `mlgate check`: LLM servers as their projects publish them, with and
without guardrails and direct exposure; non-LLM workloads untouched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate import cli
from mlgate.engine import related
from mlgate.engine.exposure import exposed_findings
from mlgate.engine.llm import recognise
from tests.unit.factories import realworld
from tests.unit.test_runtimes import LLM_CONFIGS

DATA = Path(__file__).resolve().parents[1] / "data" / "llm"
REALWORLD = realworld() or Path("../shared/realworld")
NS = "default"

POLICY = {
    "apiVersion": "mlgate.io/v1alpha1",
    "kind": "ClusterMLPolicy",
    "metadata": {"name": "llm"},
    "spec": {"llm": {"requireGuardrail": {}, "noDirectExposure": True}},
}


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DATA / name).read_text()) if d]


KSERVE_RUNTIMES = (
    Path(__file__).resolve().parents[1]
    / "data"
    / "upstream"
    / "kserve+kserve"
    / "config"
    / "runtimes"
)


def verdicts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    objects: list[dict[str, Any]],
    policy: dict[str, Any] | None = None,
) -> dict[tuple[str, str], list[str]]:
    """(kind, name) -> rules violated, per judged document, from `mlgate check -o json`."""
    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(yaml.safe_dump_all(objects))
    policies = tmp_path / "policy.yaml"
    policies.write_text(yaml.safe_dump(policy or POLICY))
    # KServe's own ClusterServingRuntimes, as its install provides them: an InferenceService
    # naming a model format is judged with the runtime KServe would pick.
    runtimes = ["--runtimes", str(KSERVE_RUNTIMES)]
    args = ["check", "-p", str(policies), *runtimes, "-n", NS, "-o", "json", str(manifests)]
    code = cli.main(args)
    report = json.loads(capsys.readouterr().out)
    found = {
        (r["kind"], r["name"]): [v["rule"] for v in r["violations"]] for r in report["results"]
    }
    assert code == (1 if any(found.values()) else 0)
    return found


def gorch(target: str) -> dict[str, Any]:
    """TrustyAI's GuardrailsOrchestrator with auto-configuration, as its tutorial creates it."""
    return {
        "apiVersion": "trustyai.opendatahub.io/v1alpha1",
        "kind": "GuardrailsOrchestrator",
        "metadata": {"name": "guardrails", "namespace": NS},
        "spec": {
            "autoConfig": {"inferenceServiceToGuardrail": target},
            "enableBuiltInDetectors": True,
            "enableGuardrailsGateway": True,
            "replicas": 1,
        },
    }


def nemo(base_url: str, **annotations: str) -> dict[str, Any]:
    """NVIDIA's NemoGuardrail sample, pointed at an in-cluster LLM."""
    return {
        "apiVersion": "apps.nvidia.com/v1alpha1",
        "kind": "NemoGuardrail",
        "metadata": {"name": "guardrail", "namespace": NS, "annotations": annotations},
        "spec": {
            "configStore": {"configMap": {"name": "gr-config"}},
            "nimEndpoint": {"baseURL": base_url},
            "expose": {"service": {"type": "ClusterIP", "port": 8000}},
            "image": {"repository": "nvcr.io/nvidia/nemo-microservices/guardrails", "tag": "25.06"},
            "replicas": 1,
        },
    }


def service(name: str, selector: dict[str, str], type_: str = "LoadBalancer") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": type_, "selector": selector, "ports": [{"port": 80}]},
    }


def isvc(name: str = "llama") -> dict[str, Any]:
    """KServe's Hugging Face LLM InferenceService (docs: vLLM backend)."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "huggingface"},
                    "args": [
                        "--model_name=llama3",
                        "--model_id=meta-llama/meta-llama-3-8b-instruct",
                    ],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            }
        },
    }


# --- recognition -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "server"),
    [
        ("vllm-deployment.yaml", "vllm"),
        ("tgi-deployment.yaml", "text-generation-inference"),
        ("sglang-deployment.yaml", "sglang"),
        ("nimservice.yaml", "NIMService"),
        ("kaito-workspace.yaml", "kaito-inference"),
    ],
)
def test_llm_servers_are_recognised_from_their_published_manifests(
    sample: str, server: str
) -> None:
    target = recognise(docs(sample)[0])
    assert target is not None
    assert target.server == server


def test_non_llm_workloads_and_batch_jobs_in_llm_images_are_not_llms() -> None:
    assert [recognise(d) for d in docs("not-llm.yaml")] == [None, None, None]


def test_a_job_that_starts_a_server_is_an_llm() -> None:
    job = docs("not-llm.yaml")[2]
    job["spec"]["template"]["spec"]["containers"][0]["command"] = ["vllm", "serve", "m/x"]
    target = recognise(job)
    assert target is not None and target.server == "vllm"


def test_policy_declared_servers_extend_the_table(tmp_path: Path, capsys: Any) -> None:
    web = docs("not-llm.yaml")[0]
    web["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/acme/chat:1"
    policy = json.loads(json.dumps(POLICY))
    policy["spec"]["llm"]["servers"] = [{"name": "acme-chat", "images": ["*/acme/chat:*"]}]
    assert verdicts(tmp_path, capsys, [web], policy)[("Deployment", "web")] == [
        "llm.requireGuardrail"
    ]


@pytest.mark.skipif(not REALWORLD.is_dir(), reason="upstream samples not on this machine")
@pytest.mark.parametrize(
    "path",
    [
        "kubernetes-sigs+lws/docs/examples/vllm/GPU/lws.yaml",
        "kubernetes-sigs+lws/docs/examples/sglang/lws.yaml",
        "ray-project+kuberay/ray-operator/config/samples/ray-service.deepseek.yaml",
        "kserve+kserve/docs/samples/fluid/fluid-isvc.yaml",
        "kserve+kserve/docs/samples/llmisvc/opt-125m-cpu/llm-inference-service-facebook-opt-125m-cpu.yaml",
    ],
)
def test_upstream_samples_are_llms(path: str) -> None:
    objects = [d for d in yaml.safe_load_all((REALWORLD / path).read_text()) if d]
    assert any(recognise(d) is not None for d in objects)


# --- llm.requireGuardrail ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sample", ["vllm-deployment.yaml", "tgi-deployment.yaml", "sglang-deployment.yaml"]
)
def test_an_unguarded_llm_is_denied(tmp_path: Path, capsys: Any, sample: str) -> None:
    llm = docs(sample)[0]
    found = verdicts(tmp_path, capsys, [llm])
    assert found[("Deployment", llm["metadata"]["name"])] == ["llm.requireGuardrail"]


def test_guardrails_orchestrator_auto_config_guards_its_inference_service(
    tmp_path: Path, capsys: Any
) -> None:
    found = verdicts(tmp_path, capsys, [gorch("llama"), isvc("llama"), isvc("other")])
    assert found[("InferenceService", "llama")] == []
    assert found[("InferenceService", "other")] == ["llm.requireGuardrail"]


def test_orchestrator_config_generation_service_guards_a_deployment(
    tmp_path: Path, capsys: Any
) -> None:
    """A hand-written fms-guardrails-orchestrator config naming the vLLM Service."""
    orchestrator = gorch("unused")
    orchestrator["spec"] = {"orchestratorConfig": "fms-orchestr8-config-nlp", "replicas": 1}
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "fms-orchestr8-config-nlp", "namespace": NS},
        "data": {
            "config.yaml": "chat_generation:\n  service:\n"
            f"    hostname: mistral-7b.{NS}.svc.cluster.local\n    port: 80\n"
            "detectors:\n  regex:\n    type: text_contents\n    service:\n"
            "      hostname: 127.0.0.1\n      port: 8080\n"
        },
    }
    found = verdicts(tmp_path, capsys, [*docs("vllm-deployment.yaml"), orchestrator, config])
    assert found[("Deployment", "mistral-7b")] == []


def test_nemo_guardrail_guards_the_llm_its_base_url_names(tmp_path: Path, capsys: Any) -> None:
    guard = nemo(f"http://mistral-7b.{NS}.svc.cluster.local:80/v1")
    found = verdicts(tmp_path, capsys, [*docs("vllm-deployment.yaml"), guard])
    assert found[("Deployment", "mistral-7b")] == []


def test_nemo_guardrail_pointing_elsewhere_guards_nothing(tmp_path: Path, capsys: Any) -> None:
    guard = nemo("https://integrate.api.nvidia.com/v1")
    found = verdicts(tmp_path, capsys, [*docs("vllm-deployment.yaml"), guard])
    assert found[("Deployment", "mistral-7b")] == ["llm.requireGuardrail"]


def llama_guard_detector() -> dict[str, Any]:
    """A detector InferenceService serving Llama Guard, labelled as TrustyAI's detectors are."""
    detector = isvc("llama-guard")
    # The model it serves is the one its server loads (--model_id).
    detector["spec"]["predictor"]["model"]["args"] = [
        "--model_name=llama-guard",
        "--model_id=meta-llama/Llama-Guard-3-8B",
    ]
    detector["metadata"]["labels"] = {"trustyai/guardrails": "true"}
    return detector


def llama_guard_approval() -> dict[str, Any]:
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ApprovedModel",
        "metadata": {"name": "llama-guard-3"},
        "spec": {
            "model": "llama-guard",
            "version": "3",
            "uris": ["hf://meta-llama/Llama-Guard-3-8B"],
        },
    }


def test_a_guardrail_whose_own_model_is_not_approved_does_not_count(
    tmp_path: Path, capsys: Any
) -> None:
    url = f"http://mistral-7b.{NS}.svc/v1"
    guard = nemo(url, **{"mlgate.io/model-uri": "hf://meta-llama/Llama-Guard-3-8B"})
    llm = docs("vllm-deployment.yaml")
    assert verdicts(tmp_path, capsys, [*llm, guard])[("Deployment", "mistral-7b")] == [
        "llm.requireGuardrail"
    ]
    approval = llama_guard_approval()
    assert verdicts(tmp_path, capsys, [*llm, guard, approval])[("Deployment", "mistral-7b")] == []


def test_gateway_guardrail_policy_guards_llms_routed_through_its_gateway(
    tmp_path: Path, capsys: Any
) -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "chat", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "ai-gateway", "namespace": "gateways"}],
            "rules": [{"backendRefs": [{"name": "mistral-7b", "port": 80}]}],
        },
    }
    policy = {
        "apiVersion": "trustyai.opendatahub.io/v1alpha1",
        "kind": "ClusterGuardrailPolicy",
        "metadata": {"name": "pii-and-jailbreak"},
        "spec": {
            "targetRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ai-gateway",
                 "namespace": "gateways"}
            ]
        },
    }  # fmt: skip
    llm = docs("vllm-deployment.yaml")
    assert verdicts(tmp_path, capsys, [*llm, route])[("Deployment", "mistral-7b")] == [
        "llm.requireGuardrail",
        "llm.noDirectExposure",  # the route reaches it around any guardrail
    ]
    found = verdicts(tmp_path, capsys, [*llm, route, policy])
    assert found[("Deployment", "mistral-7b")] == []
    assert found[("HTTPRoute", "chat")] == []  # through the guardrail: not direct


def test_policy_declared_guardrail_contract(tmp_path: Path, capsys: Any) -> None:
    policy = json.loads(json.dumps(POLICY))
    policy["spec"]["llm"]["requireGuardrail"] = {
        "accept": [],
        "contracts": [
            {"apiVersion": "guard.example.com/v1", "kind": "Shield", "resource": "shields",
             "selector": {"matchLabels": {"security.example.com/approved": "true"}},
             "targetField": "spec.upstream"}
        ],
    }  # fmt: skip
    shield = {
        "apiVersion": "guard.example.com/v1",
        "kind": "Shield",
        "metadata": {
            "name": "s",
            "namespace": NS,
            "labels": {"security.example.com/approved": "true"},
        },
        "spec": {"upstream": "http://mistral-7b:80"},
    }
    llm = docs("vllm-deployment.yaml")
    assert verdicts(tmp_path, capsys, [*llm, shield], policy)[("Deployment", "mistral-7b")] == []
    shield["metadata"]["labels"] = {}
    assert verdicts(tmp_path, capsys, [*llm, shield], policy)[("Deployment", "mistral-7b")] == [
        "llm.requireGuardrail"
    ]


def test_a_detector_needs_an_approved_model_not_a_guardrail(tmp_path: Path, capsys: Any) -> None:
    detector = llama_guard_detector()
    detector["metadata"]["annotations"] = {
        "mlgate.io/model-uri": "hf://meta-llama/Llama-Guard-3-8B"
    }
    # Each reference to the model (annotation, --model_id) is reported: one rule, two findings.
    found = verdicts(tmp_path, capsys, [detector])
    assert set(found[("InferenceService", "llama-guard")]) == {"llm.requireGuardrail"}
    approval = llama_guard_approval()
    # Any approved model is not enough: only the models the policy names as guardrail models.
    found = verdicts(tmp_path, capsys, [detector, approval])
    assert set(found[("InferenceService", "llama-guard")]) == {"llm.requireGuardrail"}
    policy = json.loads(json.dumps(POLICY))
    policy["spec"]["llm"]["requireGuardrail"] = {"guardrailModels": ["llama-guard"]}
    found = verdicts(tmp_path, capsys, [detector, approval], policy)
    assert found[("InferenceService", "llama-guard")] == []
    policy["spec"]["llm"]["requireGuardrail"] = {"guardrailModels": ["granite-guardian"]}
    found = verdicts(tmp_path, capsys, [detector, approval], policy)
    assert set(found[("InferenceService", "llama-guard")]) == {"llm.requireGuardrail"}


def test_kinds_only_llm_rules_judge_are_guarded_too(tmp_path: Path, capsys: Any) -> None:
    found = verdicts(tmp_path, capsys, docs("kaito-workspace.yaml"))
    assert found[("Workspace", "workspace-phi-3-5-mini")] == ["llm.requireGuardrail"]
    guard = nemo("http://workspace-phi-3-5-mini/v1")
    found = verdicts(tmp_path, capsys, [*docs("kaito-workspace.yaml"), guard])
    assert found[("Workspace", "workspace-phi-3-5-mini")] == []


# --- llm.noDirectExposure ----------------------------------------------------------------------


def test_load_balancer_to_llm_pods_is_denied_both_ways(tmp_path: Path, capsys: Any) -> None:
    guarded = [*docs("vllm-deployment.yaml"), nemo("http://mistral-7b/v1")]
    found = verdicts(tmp_path, capsys, [*guarded, service("public", {"app": "mistral-7b"})])
    assert found[("Service", "public")] == ["llm.noDirectExposure"]
    assert found[("Deployment", "mistral-7b")] == ["llm.noDirectExposure"]
    assert found[("Service", "mistral-7b")] == []  # ClusterIP


@pytest.mark.parametrize("selector", [{"pod-template-hash": "abc"}, {"app": "mistral-7b"}])
def test_node_port_and_operator_labels_count(
    tmp_path: Path, capsys: Any, selector: dict[str, str]
) -> None:
    found = verdicts(
        tmp_path, capsys, [*docs("vllm-deployment.yaml"), service("np", selector, "NodePort")]
    )
    assert found[("Service", "np")] == ["llm.noDirectExposure"]


def test_host_ports_and_host_network_expose_the_llm_without_a_service(
    tmp_path: Path, capsys: Any
) -> None:
    llm, svc = docs("vllm-deployment.yaml")
    pod = llm["spec"]["template"]["spec"]
    pod["containers"][0]["ports"][0]["hostPort"] = 8000
    pod["hostNetwork"] = True
    found = verdicts(tmp_path, capsys, [llm, svc, nemo("http://mistral-7b/v1")])
    assert found[("Deployment", "mistral-7b")] == ["llm.noDirectExposure"] * 2


def test_ingress_and_openshift_route_to_the_llm_service_are_denied(
    tmp_path: Path, capsys: Any
) -> None:
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "chat", "namespace": NS},
        "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": "mistral-7b", "port": {"number": 80}}}}]}}]},
    }  # fmt: skip
    route = {
        "apiVersion": "route.openshift.io/v1",
        "kind": "Route",
        "metadata": {"name": "chat", "namespace": NS},
        "spec": {"to": {"kind": "Service", "name": "llama-predictor"}},
    }
    found = verdicts(tmp_path, capsys, [*docs("vllm-deployment.yaml"), isvc(), ingress, route])
    assert found[("Ingress", "chat")] == ["llm.noDirectExposure"]
    assert found[("Route", "chat")] == ["llm.noDirectExposure"]


def test_the_guardrails_own_exposure_is_allowed(tmp_path: Path, capsys: Any) -> None:
    guard_lb = service("guardrail-public", {"app": "guardrail"})
    found = verdicts(
        tmp_path, capsys, [*docs("vllm-deployment.yaml"), nemo("http://mistral-7b/v1"), guard_lb]
    )
    assert found[("Service", "guardrail-public")] == []
    assert found[("Deployment", "mistral-7b")] == []


def test_non_llm_workloads_and_their_load_balancers_are_untouched(
    tmp_path: Path, capsys: Any
) -> None:
    found = verdicts(tmp_path, capsys, docs("not-llm.yaml"))
    assert found == {("Deployment", "web"): [], ("Service", "web"): [], ("Job", "eval"): []}


# --- llm.requireRateLimit ----------------------------------------------------------------------


def test_rate_limit_policy_on_the_llm_route(tmp_path: Path, capsys: Any) -> None:
    policy = json.loads(json.dumps(POLICY))
    policy["spec"]["llm"] = {"requireRateLimit": True, "noDirectExposure": False}
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "chat", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [{"backendRefs": [{"name": "mistral-7b"}]}],
        },
    }
    limit = {
        "apiVersion": "kuadrant.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "tokens", "namespace": NS},
        "spec": {
            "targetRef": {
                "group": "gateway.networking.k8s.io",
                "kind": "HTTPRoute",
                "name": "chat",
            },
            "limits": {"free": {"rates": [{"limit": 10000, "window": "1h"}]}},
        },
    }
    llm = docs("vllm-deployment.yaml")
    assert verdicts(tmp_path, capsys, [*llm, route], policy)[("Deployment", "mistral-7b")] == [
        "llm.requireRateLimit"
    ]
    found = verdicts(tmp_path, capsys, [*llm, route, limit], policy)
    assert found[("Deployment", "mistral-7b")] == []


def test_the_llm_example_is_guarded_and_its_bypass_denied(capsys: Any) -> None:
    example = DATA.parents[1].parent / "examples" / "llm"
    args = ["check", "-p", str(example / "policy.yaml"), "--models", str(example / "models.yaml")]
    code = cli.main(
        [*args, "-o", "json", str(example / "llm.yaml"), str(example / "guardrail.yaml")]
    )
    assert code == 0, capsys.readouterr().out
    capsys.readouterr()
    assert cli.main([*args, str(example / "llm.yaml")]) == 1
    assert "llm.requireGuardrail" in capsys.readouterr().out
    assert cli.main([*args, str(example)]) == 1
    out = capsys.readouterr().out
    assert "Service llm-demo/mistral-7b-public" in out and "llm.requireGuardrail" not in out


def test_an_inference_service_on_a_vllm_serving_runtime_is_an_llm(
    tmp_path: Path, capsys: Any
) -> None:
    """A custom runtime, chosen by name or auto-selected for the model format: the runtime is
    judged as configuration, the InferenceService running on it as the LLM."""
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "vllm-runtime", "namespace": NS},
        "spec": {
            "supportedModelFormats": [{"name": "mistral", "autoSelect": True}],
            "containers": [{"name": "kserve-container", "image": "vllm/vllm-openai:v0.8.5",
                            "args": ["--model", "/mnt/models"]}],
        },
    }  # fmt: skip
    by_name, by_format = isvc("named"), isvc("auto")
    by_name["spec"]["predictor"]["model"] |= {
        "modelFormat": {"name": "mistral"},  # KServe refuses a runtime for another format
        "runtime": "vllm-runtime",
    }
    by_format["spec"]["predictor"]["model"]["modelFormat"] = {"name": "mistral"}
    other = isvc("sklearn")
    other["spec"]["predictor"]["model"]["modelFormat"] = {"name": "sklearn"}
    found = verdicts(tmp_path, capsys, [runtime, by_name, by_format, other])
    assert "llm.requireGuardrail" not in found[("ServingRuntime", "vllm-runtime")]
    assert found[("InferenceService", "named")] == ["llm.requireGuardrail"]
    assert found[("InferenceService", "auto")] == ["llm.requireGuardrail"]
    assert found[("InferenceService", "sklearn")] == []


def test_ray_serve_applications_of_vllm_are_llms() -> None:
    service = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "vllm-tpu"},
        "spec": {"serveConfigV2": "applications:\n- name: llm\n"
                 "  import_path: ray-operator.config.samples.vllm.serve_tpu:model\n"},
    }  # fmt: skip
    target = recognise(service)
    assert target is not None and "vllm-tpu-serve-svc" in target.services


def test_llm_inference_service_routed_through_a_guarded_gateway(
    tmp_path: Path, capsys: Any
) -> None:
    # KServe's well-known configs the service is merged with, as its install provides them.
    llmisvc, configs = docs("llminferenceservice.yaml")[0], LLM_CONFIGS
    key = ("LLMInferenceService", "facebook-opt-125m-single")
    assert verdicts(tmp_path, capsys, [llmisvc, *configs])[key] == [
        "llm.requireGuardrail",
        "llm.noDirectExposure",  # KServe's route through an unguarded gateway
    ]
    gateway_policy = {
        "apiVersion": "trustyai.opendatahub.io/v1alpha1",
        "kind": "ClusterGuardrailPolicy",
        "metadata": {"name": "default-gateway"},
        "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                 "name": "kserve-ingress-gateway", "namespace": "kserve"}]},
    }  # fmt: skip
    assert verdicts(tmp_path, capsys, [llmisvc, *configs, gateway_policy])[key] == []
    # Guarded by an orchestrator instead, KServe's route would bypass it.
    found = verdicts(tmp_path, capsys, [llmisvc, *configs, gorch("facebook-opt-125m-single")])
    assert found[key] == ["llm.noDirectExposure"]


def test_manifests_without_namespaces_are_judged_together(tmp_path: Path, capsys: Any) -> None:
    """`kubectl apply -n NS` places them later: a guardrail URL naming any namespace may match."""
    objects = [*docs("vllm-deployment.yaml"), nemo("http://mistral-7b.team-a.svc:80/v1")]
    for obj in objects:
        del obj["metadata"]["namespace"]
    manifests, policies = tmp_path / "m.yaml", tmp_path / "p.yaml"
    manifests.write_text(yaml.safe_dump_all(objects))
    policies.write_text(yaml.safe_dump(POLICY))
    assert cli.main(["check", "-p", str(policies), str(manifests)]) == 0, capsys.readouterr().out


def test_sarif_and_json_carry_the_owasp_ids(tmp_path: Path, capsys: Any) -> None:
    manifests, policies = tmp_path / "m.yaml", tmp_path / "p.yaml"
    manifests.write_text(yaml.safe_dump_all(docs("tgi-deployment.yaml")))
    policies.write_text(yaml.safe_dump(POLICY))
    assert cli.main(["check", "-p", str(policies), "-o", "sarif", str(manifests)]) == 1
    run = json.loads(capsys.readouterr().out)["runs"][0]
    (rule,) = run["tool"]["driver"]["rules"]
    assert {"AML.M0020", "LLM01", "LLM02", "LLM05", "LLM09"} <= set(rule["properties"]["tags"])
    assert run["results"][0]["properties"]["owasp"] == ["LLM01", "LLM02", "LLM05", "LLM09"]


def test_a_public_knative_service_exposes_its_llm() -> None:
    llm, svc = docs("vllm-deployment.yaml")
    knative = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "chat", "namespace": NS},
        "spec": {"template": llm["spec"]["template"]},
    }
    target = recognise(knative)
    assert target is not None
    paths = [f.path for f in exposed_findings(knative, target, [svc])]
    assert paths == ["metadata.labels"]
    knative["metadata"]["labels"] = {"networking.knative.dev/visibility": "cluster-local"}
    assert exposed_findings(knative, target, [svc]) == []


def test_a_nim_service_asking_its_operator_for_a_load_balancer_is_exposed() -> None:
    (nim,) = docs("nimservice.yaml")
    target = recognise(nim)
    assert target is not None and exposed_findings(nim, target, []) == []
    nim["spec"]["expose"] = {"service": {"type": "LoadBalancer"}, "ingress": {"enabled": True}}
    paths = [f.path for f in exposed_findings(nim, target, [])]
    assert paths == ["spec.expose.service.type", "spec.expose.ingress"]


def test_a_reference_grant_opening_the_llm_to_other_namespaces_routes_is_exposure(
    tmp_path: Path, capsys: Any
) -> None:
    """Routes of another namespace (outside this one's policies) need a ReferenceGrant here."""

    def grant(name: str, to: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                               "namespace": "public"}], "to": to},
        }  # fmt: skip

    objects = [
        *docs("vllm-deployment.yaml"),
        nemo("http://mistral-7b/v1"),
        grant("llm", [{"group": "", "kind": "Service", "name": "mistral-7b"}]),
        grant("any-service", [{"group": "", "kind": "Service"}]),
        grant("certs", [{"group": "", "kind": "Secret"}]),
        grant("guardrail", [{"group": "", "kind": "Service", "name": "guardrail"}]),
    ]
    found = verdicts(tmp_path, capsys, objects)
    assert found[("ReferenceGrant", "llm")] == ["llm.noDirectExposure"]
    assert found[("ReferenceGrant", "any-service")] == ["llm.noDirectExposure"]
    assert found[("ReferenceGrant", "certs")] == []
    assert found[("ReferenceGrant", "guardrail")] == []


def test_labels_that_are_not_a_mapping_are_judged_not_a_crash(tmp_path: Path, capsys: Any) -> None:
    """Kubeflow's caffe2 proposal writes `labels: app=... job=...` (a string): the LLM it
    serves is still judged, and the unreadable labels select nothing."""
    (llm,) = [d for d in docs("vllm-deployment.yaml") if d["kind"] == "Deployment"]
    llm["metadata"]["labels"] = "app=mistral-7b team=chat"
    llm["spec"]["template"]["metadata"]["labels"] = ["app", "mistral-7b"]
    found = verdicts(tmp_path, capsys, [llm])
    assert found[("Deployment", "mistral-7b")] == ["llm.requireGuardrail"]


def test_a_guardrail_model_needs_the_evidence_the_policy_demands(
    tmp_path: Path, capsys: Any
) -> None:
    """Approved is not enough where the policy demands evidence of models (requireDigest): a
    Llama Guard approval without a digest does not make its server a guardrail."""
    detector = llama_guard_detector()
    approval = llama_guard_approval()
    policy = json.loads(json.dumps(POLICY))
    policy["spec"]["llm"]["requireGuardrail"] = {"guardrailModels": ["llama-guard"]}
    key = ("InferenceService", "llama-guard")
    assert verdicts(tmp_path, capsys, [detector, approval], policy)[key] == []
    policy["spec"]["models"] = {"requireApproved": False, "requireDigest": True}
    assert set(verdicts(tmp_path, capsys, [detector, approval], policy)[key]) == {
        "llm.requireGuardrail"
    }
    approval["spec"]["digest"] = "sha256:" + "4f1c" * 16
    assert verdicts(tmp_path, capsys, [detector, approval], policy)[key] == []


def test_an_llm_policy_after_the_workloads_in_the_stream_still_sees_them(
    tmp_path: Path, capsys: Any
) -> None:
    guarded = [*docs("vllm-deployment.yaml"), nemo("http://mistral-7b/v1")]
    objects = [*guarded, service("public", {"app": "mistral-7b"}), POLICY]
    no_policy = {**POLICY, "metadata": {"name": "other"}, "spec": {}}
    found = verdicts(tmp_path, capsys, objects, no_policy)
    assert found[("Service", "public")] == ["llm.noDirectExposure"]


def test_facts_for_llm_rules_are_not_looked_for_without_llm_rules(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked: list[Any] = []
    monkeypatch.setattr(related, "is_related", lambda obj: looked.append(obj) or True)
    no_llm = {**POLICY, "spec": {}}
    found = verdicts(tmp_path, capsys, [*docs("vllm-deployment.yaml")], no_llm)
    assert found[("Deployment", "mistral-7b")] == []
    assert looked == []
    verdicts(tmp_path, capsys, [*docs("vllm-deployment.yaml")])
    assert looked  # with llm rules they are
