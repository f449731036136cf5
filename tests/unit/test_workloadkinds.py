"""WorkloadKind: validated and compiled once, read alike by the operator's state, the webhook
(routing included) and `mlgate check`; and unknown kinds, judged the same way by both."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate import cli
from mlgate.api.compile import InvalidResource, parse_resource
from mlgate.api.workloadkind import compile_workload_kind
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.routing import rules_patch
from mlgate.controller.state import PolicyState
from mlgate.engine.decisions import Mode
from mlgate.engine.evaluate import evaluate
from mlgate.engine.policy import Facts
from mlgate.webhook.admission import Admission, Config
from mlgate.webhook.config import EXTENSIONS_WEBHOOK, extension_rules, webhook_configuration
from mlgate.webhook.review import parse_review
from tests.unit.factories import policy, review
from tests.unit.test_kinds_upstream import VLLM_RUNTIME

GOVERNED = {"mlgate.io/governed": "true"}
IMAGES = {"allowedRegistries": ["registry.example.com/ml/*"]}

WIDGET_KIND: dict[str, Any] = {
    "apiVersion": "mlgate.io/v1alpha1",
    "kind": "WorkloadKind",
    "metadata": {"name": "widgets.example.com", "generation": 1},
    "spec": {
        "group": "example.com",
        "kind": "Widget",
        "plural": "widgets",
        "versions": ["v1", "v1beta1"],
        "pods": [
            {
                "path": "spec.fleet[*].podTemplate",
                "replicas": [{"paths": ["spec.fleet[*].count"]}],
                "rolePath": "spec.fleet[*].name",
            },
            {
                "path": "spec.agent",
                "shape": "PodSpec",
                "containers": [{"path": "", "name": "agent", "gpus": "gpus"}],
            },
        ],
        "models": [{"path": "spec.model", "prefix": "hf://"}],
    },
}


def widget(image: str = "docker.io/evil/miner:1", namespace: str = "ml-prod") -> dict[str, Any]:
    template = {"spec": {"containers": [{"name": "main", "image": image}]}}
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": namespace},
        "spec": {
            "fleet": [{"name": "a", "count": 4, "podTemplate": template}],
            "agent": {"image": "registry.example.com/ml/agent:1", "gpus": 1},
            "model": "org/model",
        },
    }


def kind(**spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(WIDGET_KIND)
    doc["spec"].update(spec)
    return doc


def compiled(doc: dict[str, Any]) -> Any:
    resource = parse_resource(doc)
    assert resource.kind == "WorkloadKind"
    return compile_workload_kind(resource)  # type: ignore[arg-type]


# --- validation ------------------------------------------------------------------------------


def test_a_workload_kind_compiles_into_a_declared_kind() -> None:
    spec = compiled(WIDGET_KIND)
    assert (spec.group, spec.kind, spec.plural, spec.versions) == (
        "example.com",
        "Widget",
        "widgets",
        ("v1", "v1beta1"),
    )
    assert spec.scope == "Namespaced"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pods": [{"path": "spec..x"}]}, "spec.pods[0].path"),
        (
            {"pods": [{"path": "spec.a", "replicas": [{"paths": ["spec.b[*].n"]}]}]},
            "spec.pods[0].replicas[0].paths[0]: 'spec.b[*].n' has 1 wildcards but its location "
            "binds only 0",
        ),
        ({"models": [{"path": "spec[0]"}]}, "spec.models[0].path"),
        ({"group": "apps", "kind": "Deployment"}, "built into mlgate"),
        ({"group": "mlgate.io"}, "mlgate's own group"),
    ],
)
def test_bad_workload_kinds_are_refused_naming_the_field(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidResource, match=re.escape(message)):
        compiled(kind(**change))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "widget"}, "spec.kind"),
        ({"versions": []}, "spec.versions"),
        ({"versions": ["1"]}, "spec.versions[0]"),
        ({"scope": "Everywhere"}, "spec.scope"),
        ({"pods": [{"path": "spec.x", "shape": "Pod"}]}, "spec.pods[0].shape"),
        (
            {"pods": [{"path": "spec.x", "replicas": [{"default": -1}]}]},
            "spec.pods[0].replicas[0].default",
        ),
        ({"models": [{"path": "spec.m", "prefix": "hf:"}]}, "spec.models[0].prefix"),
        ({"extra": True}, "spec.extra"),
    ],
)
def test_the_schema_rejects_malformed_workload_kinds(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidResource, match=re.escape(field)):
        parse_resource(kind(**change))


# --- the operator's state and the webhook ----------------------------------------------------


def admission(*bodies: dict[str, Any]) -> Admission:
    state = PolicyState()
    for body in bodies:
        assert state.upsert(body).ok, body
    state.set_namespace("ml-prod", GOVERNED)
    return Admission(state, GpuLedger(), Config(own_namespace="mlgate-system"))


def judge(adm: Admission, obj: dict[str, Any]) -> Any:
    return asyncio.run(adm.review(parse_review(review(obj, resource="widgets"))))


def test_the_webhook_judges_a_declared_kind() -> None:
    adm = admission(policy(images=IMAGES), WIDGET_KIND)
    outcome = judge(adm, widget())
    assert not outcome.allowed
    assert "spec.fleet[0].podTemplate.spec.containers[0].image" in outcome.message
    assert judge(adm, widget("registry.example.com/ml/ok:1")).allowed
    assert outcome.workload is not None
    assert [(p.role, p.count) for p in outcome.workload.pods] == [("a", 4), ("", 1)]
    assert [m.value for m in outcome.workload.model_refs] == ["hf://org/model"]


def test_without_the_workload_kind_the_policy_decides_unknown_kinds() -> None:
    deny = judge(admission(policy(images=IMAGES)), widget())
    assert not deny.allowed and "WorkloadKind" in deny.message
    warn = judge(admission(policy(images=IMAGES, unknownKinds="Warn")), widget())
    assert warn.allowed and [w for w in warn.warnings if "workload.unsupported" in w]
    allow = judge(admission(policy(images=IMAGES, unknownKinds="Allow")), widget())
    assert allow.allowed and not allow.warnings


def test_state_keeps_the_first_workload_kind_by_name_and_reports_changes() -> None:
    state = PolicyState()
    calls: list[int] = []
    state.on_routing_changed = lambda: calls.append(1)
    state.upsert(WIDGET_KIND)
    other = kind(pods=[])
    other["metadata"]["name"] = "zz-other"
    state.upsert(other)
    declared = state.snapshot().kinds.declared[("example.com", "Widget")]
    assert len(declared.pods.locations) == 2  # type: ignore[union-attr]
    assert calls == [1]  # the second changed nothing in force
    state.remove(WIDGET_KIND)
    assert state.snapshot().kinds.declared[("example.com", "Widget")].pods.locations == ()  # type: ignore[union-attr]
    state.remove(other)
    assert state.snapshot().kinds.declared == {}
    assert calls == [1, 1, 1]


def test_an_invalid_update_keeps_the_last_good_workload_kind() -> None:
    state = PolicyState()
    assert state.upsert(WIDGET_KIND).ok
    bad = kind(pods=[{"path": "spec..x"}])
    bad["metadata"]["generation"] = 2
    result = state.upsert(bad)
    assert not result.ok and "generation 1 stays in force" in result.message
    assert ("example.com", "Widget") in state.snapshot().kinds.declared


def test_extension_rules_follow_the_declared_kinds() -> None:
    state = PolicyState()
    assert extension_rules(state.snapshot().kinds) == []
    cluster = kind(kind="Gizmo", plural="gizmos", scope="Cluster")
    cluster["metadata"]["name"] = "gizmos"
    state.upsert(WIDGET_KIND)
    state.upsert(cluster)
    rules = extension_rules(state.snapshot().kinds)
    assert rules == [
        {
            "apiGroups": ["example.com"],
            "apiVersions": ["v1", "v1beta1"],
            "resources": ["gizmos"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Cluster",
        },
        {
            "apiGroups": ["example.com"],
            "apiVersions": ["v1", "v1beta1"],
            "resources": ["widgets"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        },
    ]
    config = webhook_configuration("mlgate", {"url": "https://x"}, "mlgate-system")
    assert rules_patch(config, rules) == [
        {"op": "test", "path": "/webhooks/1/name", "value": EXTENSIONS_WEBHOOK},
        {"op": "replace", "path": "/webhooks/1/rules", "value": rules},
    ]
    config["webhooks"][1]["rules"] = rules
    assert rules_patch(config, rules) == []
    config["webhooks"] = [h for h in config["webhooks"] if h["name"] != EXTENSIONS_WEBHOOK]
    assert rules_patch(config, rules) is None


# --- mlgate check ----------------------------------------------------------------------------


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.mark.parametrize("where", ["policies", "manifests"])
def test_check_reads_workload_kinds_given_with_policies_or_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    policies = [policy(images=IMAGES), WIDGET_KIND]
    manifests = [widget()]
    if where == "manifests":
        manifests, policies = [WIDGET_KIND, *manifests], policies[:1]
    code = cli.main(
        [
            "check",
            "-p",
            str(write(tmp_path / "p.yaml", *policies)),
            str(write(tmp_path / "m.yaml", *manifests)),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "spec.fleet[0].podTemplate.spec.containers[0].image" in out


@pytest.mark.parametrize(("setting", "code"), [("Deny", 1), ("Warn", 0), ("Allow", 0)])
def test_check_and_the_webhook_agree_on_unknown_kinds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, code: int
) -> None:
    body = policy(images=IMAGES, unknownKinds=setting)
    got = cli.main(
        [
            "check",
            "-p",
            str(write(tmp_path / "p.yaml", body)),
            str(write(tmp_path / "m.yaml", widget())),
        ]
    )
    capsys.readouterr()
    assert got == code
    assert judge(admission(body), widget()).allowed is (code == 0)


def test_unknown_kinds_setting_under_each_mode() -> None:
    facts = Facts(now=datetime(2026, 1, 1, tzinfo=UTC))

    def modes(mode: str, setting: str) -> list[Mode]:
        from mlgate.api.compile import compile_policy  # noqa: PLC0415

        doc = policy(mode=mode, unknownKinds=setting)
        doc["spec"]["match"] = {}
        compiled_policy = compile_policy(parse_resource(doc))  # type: ignore[arg-type]
        return [v.mode for v in evaluate((compiled_policy,), widget(), facts).violations]

    assert modes("Enforce", "Deny") == [Mode.ENFORCE]
    assert modes("Enforce", "Warn") == [Mode.WARN]
    assert modes("Audit", "Warn") == [Mode.AUDIT]
    assert modes("Warn", "Deny") == [Mode.WARN]
    assert modes("Enforce", "Allow") == []


EXAMPLE_KINDS = Path(__file__).resolve().parents[2] / "examples" / "kinds"

# https://github.com/kubeflow/katib/blob/master/examples/v1beta1/hp-tuning/random.yaml (trimmed)
KATIB_EXPERIMENT = {
    "apiVersion": "kubeflow.org/v1beta1",
    "kind": "Experiment",
    "metadata": {"name": "random", "namespace": "ml-prod"},
    "spec": {
        "parallelTrialCount": 3,
        "maxTrialCount": 12,
        "trialTemplate": {
            "primaryContainerName": "training-container",
            "trialSpec": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "training-container",
                                    "image": "docker.io/kubeflowkatib/pytorch-mnist-cpu:latest",
                                    "resources": {"limits": {"nvidia.com/gpu": 1}},
                                }
                            ]
                        }
                    }
                },
            },
        },
    },
}

# https://tekton.dev/docs/pipelines/taskruns/ (an embedded taskSpec)
TEKTON_TASK_RUN = {
    "apiVersion": "tekton.dev/v1",
    "kind": "TaskRun",
    "metadata": {"name": "build", "namespace": "ml-prod"},
    "spec": {
        "taskSpec": {
            "steps": [{"name": "build", "image": "docker.io/evil/miner:1", "script": "make"}],
            "sidecars": [{"name": "docker", "image": "docker:dind"}],
        }
    },
}


def test_the_example_workload_kinds_judge_real_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests = write(tmp_path / "m.yaml", KATIB_EXPERIMENT, TEKTON_TASK_RUN)
    policies = write(tmp_path / "p.yaml", policy(images=IMAGES, gpu={"maxPerWorkload": 2}))
    code = cli.main(
        ["check", "-p", str(policies), "-p", str(EXAMPLE_KINDS), "-o", "json", str(manifests)]
    )
    results = json.loads(capsys.readouterr().out)["results"]
    assert code == 1
    found = {(r["kind"], v["rule"], v["path"]) for r in results for v in r["violations"]}
    trial = "spec.trialTemplate.trialSpec.spec.template.spec.containers[0]"
    assert found == {
        ("Experiment", "images.registry", f"{trial}.image"),
        ("Experiment", "gpu.maxPerWorkload", "spec"),
        ("TaskRun", "images.registry", "spec.taskSpec.steps[0].image"),
        ("TaskRun", "images.registry", "spec.taskSpec.sidecars[0].image"),
    }


def test_a_scale_up_is_judged_where_the_kind_keeps_its_replicas() -> None:
    """VLLMRuntime's scale subresource writes spec.deploymentConfig.replicas, not spec.replicas."""
    stored = yaml.safe_load(VLLM_RUNTIME)
    stored["metadata"]["namespace"] = "ml-prod"
    adm = admission(policy(gpu={"maxPerWorkload": 4}))

    async def lookup(*_: str) -> dict[str, Any]:
        return stored

    adm.object_lookup = lookup

    def scale(replicas: int) -> dict[str, Any]:
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": "vllmruntime-sample", "namespace": "ml-prod"},
            "spec": {"replicas": replicas},
        }

    body = review(scale(8), "UPDATE", scale(2), resource="vllmruntimes", sub_resource="scale")
    up = asyncio.run(adm.review(parse_review(body)))
    assert not up.allowed and "gpu.maxPerWorkload" in up.message and "8 GPUs" in up.message
