"""evaluate(): modes, several policies, scope, exemptions, unknown kinds, and host networking."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mlgate.api.compile import compile_policy, parse_resource
from mlgate.engine.decisions import Decision, Mode, Rule, Violation
from mlgate.engine.evaluate import evaluate
from mlgate.engine.policy import CompiledPolicy, Facts, ImageFact

NOW = datetime(2026, 3, 1, tzinfo=UTC)
GOVERNED = {"mlgate.io/governed": "true"}
DIGEST = "sha256:" + "4f1c" * 16
GOOD_IMAGE = f"registry.example.com/ml/fraud@{DIGEST}"
IMAGE_PATH = "spec.template.spec.containers[0].image"
IMAGE_ATLAS = ("AML.T0010", "AML.T0010.004")
REGISTRY_MESSAGE = (
    "image 'docker.io/evil/miner:1' resolves to docker.io/evil/miner, which is not in an allowed "
    "registry; use an image from: registry.example.com/ml/*"
)


def policy(
    name: str = "production-ml",
    mode: str = "Enforce",
    namespace: str | None = None,
    match: dict[str, Any] | None = None,
    **spec: Any,
) -> CompiledPolicy:
    doc: dict[str, Any] = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "MLPolicy" if namespace else "ClusterMLPolicy",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "spec": {"mode": mode, "match": match if match is not None else {}, **spec},
    }
    return compile_policy(parse_resource(doc))  # type: ignore[arg-type]


REGISTRY = {"allowedRegistries": ["registry.example.com/ml/*"]}


def facts(**kwargs: Any) -> Facts:
    kwargs.setdefault("namespace_labels", GOVERNED)
    return Facts(now=NOW, **kwargs)


def deployment(
    image: str = GOOD_IMAGE,
    namespace: str = "ml-prod",
    host_network: bool | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "server", "image": image}]}
    if host_network is not None:
        spec["hostNetwork"] = host_network
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fraud-api", "namespace": namespace, "labels": labels or {}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "fraud-api"}},
            "template": {"metadata": {"labels": {"app": "fraud-api"}}, "spec": spec},
        },
    }


BAD = deployment("docker.io/evil/miner:1")


def registry_violation(policy_name: str, mode: Mode) -> Violation:
    return Violation(
        policy_name,
        mode,
        Rule.IMAGES_REGISTRY,
        IMAGE_PATH,
        REGISTRY_MESSAGE,
        IMAGE_ATLAS,
        ("LLM03",),
    )


# --- modes -----------------------------------------------------------------------------------


def test_compliant_workload_is_allowed() -> None:
    decision = evaluate((policy(images=REGISTRY),), deployment(), facts())
    assert decision == Decision(True, (), ("production-ml",), ())


def test_enforce_denies() -> None:
    decision = evaluate((policy(images=REGISTRY),), BAD, facts())
    assert decision.allowed is False
    assert decision.violations == (registry_violation("production-ml", Mode.ENFORCE),)
    assert decision.denials == decision.violations
    assert decision.warnings == ()
    assert decision.matched_policies == ("production-ml",)
    assert decision.violations[0].describe() == (
        f"[production-ml] images.registry at {IMAGE_PATH}: {REGISTRY_MESSAGE}"
    )


def test_warn_allows_with_warnings() -> None:
    decision = evaluate((policy(mode="Warn", images=REGISTRY),), BAD, facts())
    assert decision.allowed is True
    assert decision.warnings == (registry_violation("production-ml", Mode.WARN),)
    assert decision.denials == ()


def test_audit_allows_and_records() -> None:
    decision = evaluate((policy(mode="Audit", images=REGISTRY),), BAD, facts())
    assert decision.allowed is True
    assert decision.violations == (registry_violation("production-ml", Mode.AUDIT),)
    assert decision.warnings == ()
    assert decision.denials == ()
    assert decision.by_mode(Mode.AUDIT) == decision.violations


def test_every_matching_policy_applies() -> None:
    policies = (
        policy("audit-all", mode="Audit", images=REGISTRY),
        policy("warn-all", mode="Warn", images=REGISTRY),
        policy("enforce-all", images=REGISTRY),
    )
    decision = evaluate(policies, BAD, facts())
    assert decision.allowed is False
    assert decision.violations == (
        registry_violation("audit-all", Mode.AUDIT),
        registry_violation("warn-all", Mode.WARN),
        registry_violation("enforce-all", Mode.ENFORCE),
    )
    assert decision.matched_policies == ("audit-all", "warn-all", "enforce-all")


def test_a_lenient_policy_does_not_relax_a_strict_one() -> None:
    policies = (
        policy("lenient", images={"allowedRegistries": ["docker.io/evil/*"]}),
        policy("strict", images=REGISTRY),
    )
    decision = evaluate(policies, BAD, facts())
    assert decision.allowed is False
    assert [v.policy for v in decision.violations] == ["strict"]


def test_warn_and_audit_only_never_deny() -> None:
    policies = (
        policy("w", mode="Warn", images=REGISTRY),
        policy("a", mode="Audit", images=REGISTRY),
    )
    assert evaluate(policies, BAD, facts()).allowed is True


def test_no_policies() -> None:
    assert evaluate((), BAD, facts()) == Decision(True)


# --- scope -----------------------------------------------------------------------------------


def test_policy_out_of_scope_does_not_apply() -> None:
    p = policy(match={"namespaceSelector": {"matchLabels": GOVERNED}}, images=REGISTRY)
    decision = evaluate((p,), BAD, facts(namespace_labels={}))
    assert decision == Decision(True, (), (), ())


def test_ml_policy_only_in_its_own_namespace() -> None:
    p = policy("team-rules", namespace="team-a", images=REGISTRY)
    assert evaluate((p,), deployment("docker.io/evil/miner:1", "team-b"), facts()).allowed
    decision = evaluate((p,), deployment("docker.io/evil/miner:1", "team-a"), facts())
    assert decision.allowed is False
    assert [(v.policy, v.rule) for v in decision.violations] == [
        ("team-a/team-rules", Rule.IMAGES_REGISTRY)
    ]


def test_workload_selector_and_kinds() -> None:
    p = policy(match={"kinds": ["PyTorchJob"]}, images=REGISTRY)
    assert evaluate((p,), BAD, facts()) == Decision(True)
    p = policy(match={"selector": {"matchLabels": {"tier": "ml"}}}, images=REGISTRY)
    assert evaluate((p,), BAD, facts()).allowed
    bad = deployment("docker.io/evil/miner:1", labels={"tier": "ml"})
    assert not evaluate((p,), bad, facts()).allowed


@pytest.mark.parametrize("namespace", ["kube-system"])
def test_kube_system_is_always_exempt(namespace: str) -> None:
    p = policy(match={"namespaces": ["*"]}, images=REGISTRY, egress={})
    decision = evaluate((p,), deployment("docker.io/evil/miner:1", namespace, True), facts())
    assert decision == Decision(True, notes=("namespace kube-system is always exempt",))


def test_kube_system_exemption_is_exact() -> None:
    p = policy(images=REGISTRY)
    assert not evaluate(
        (p,), deployment("docker.io/evil/miner:1", "kube-system-x"), facts()
    ).allowed


# --- kinds mlgate cannot judge ---------------------------------------------------------------

ARGO_LIKE = {
    "apiVersion": "example.com/v1",
    "kind": "Notebook",
    "metadata": {"name": "nb", "namespace": "ml-prod"},
    "spec": {
        "template": {
            "spec": {"containers": [{"name": "jupyter", "image": "docker.io/evil/miner:1"}]}
        }
    },
}


def test_unknown_kind_with_containers_is_unsupported() -> None:
    decision = evaluate((policy(images=REGISTRY), policy("w", mode="Warn")), ARGO_LIKE, facts())
    assert decision.allowed is False
    message = (
        "Notebook (example.com/v1) runs containers but mlgate cannot judge it: Notebook "
        "(example.com/v1) is not a workload kind mlgate supports; use a supported workload kind "
        "or teach mlgate this one with a WorkloadKind"
    )
    assert decision.violations == (
        Violation(
            "production-ml",
            Mode.ENFORCE,
            Rule.WORKLOAD_UNSUPPORTED,
            "kind",
            message,
            ("AML.T0010",),
            ("LLM03",),
        ),
        Violation(
            "w", Mode.WARN, Rule.WORKLOAD_UNSUPPORTED, "kind", message, ("AML.T0010",), ("LLM03",)
        ),
    )
    assert decision.matched_policies == ("production-ml", "w")


def _nested(inner: Any, depth: int, in_list: bool = False) -> dict[str, Any]:
    for _ in range(depth):
        inner = [inner] if in_list else {"nested": inner}
    return {"deep": inner}


@pytest.mark.parametrize(
    "spec",
    [
        # Argo-style templates run a single `container`
        {"templates": [{"name": "main", "container": {"image": "docker.io/evil/miner:1"}}]},
        # Tekton-style steps
        {"steps": [{"name": "build", "image": "docker.io/evil/miner:1", "script": "run"}]},
        {"initContainers": [{"name": "x", "image": "docker.io/evil/miner:1"}]},
        # nesting deeper than any search limit must not hide containers
        _nested({"containers": [{"name": "x", "image": "docker.io/evil/miner:1"}]}, 40),
        _nested([{"containers": [{"name": "x", "image": "y"}]}], 40, in_list=True),
    ],
)
def test_container_shapes_of_unknown_kinds(spec: dict[str, Any]) -> None:
    obj = {**ARGO_LIKE, "spec": spec}
    decision = evaluate((policy(),), obj, facts())
    assert [v.rule for v in decision.violations] == [Rule.WORKLOAD_UNSUPPORTED]
    assert decision.allowed is False


def test_unknown_kind_out_of_scope_or_exempt() -> None:
    p = policy(match={"namespaces": ["team-*"]})
    assert evaluate((p,), ARGO_LIKE, facts()) == Decision(True)
    exempt = {**ARGO_LIKE, "metadata": {"name": "nb", "namespace": "kube-system"}}
    assert evaluate((policy(),), exempt, facts()).allowed is True


def test_config_map_is_a_note_only() -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "ml-prod"},
        "data": {"image": "docker.io/evil/miner:1", "containers": "[]"},
    }
    assert evaluate((policy(images=REGISTRY),), cm, facts()) == Decision(
        True, notes=("ConfigMap is not a workload kind; not judged",)
    )


def test_service_is_a_note_only() -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "fraud", "namespace": "ml-prod"},
        "spec": {"selector": {"app": "fraud"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    assert evaluate((policy(),), svc, facts()).notes == (
        "Service is not a workload kind; not judged",
    )


@pytest.mark.parametrize("obj", [[], "nginx", None, {"spec": {"containers": []}}])
def test_not_an_object_never_crashes(obj: Any) -> None:
    decision = evaluate((policy(),), obj, facts())
    assert isinstance(decision, Decision)


def test_not_an_object_with_containers_is_unsupported() -> None:
    obj = {"spec": {"containers": [{"name": "x", "image": "docker.io/evil/miner:1"}]}}
    decision = evaluate((policy(),), obj, facts())
    assert [v.rule for v in decision.violations] == [Rule.WORKLOAD_UNSUPPORTED]


# --- host networking -------------------------------------------------------------------------


def test_host_network_is_denied() -> None:
    decision = evaluate(
        (policy(egress={"allowHostNetwork": False}),), deployment(host_network=True), facts()
    )
    assert decision.allowed is False
    assert decision.violations == (
        Violation(
            "production-ml",
            Mode.ENFORCE,
            Rule.EGRESS_HOST_NETWORK,
            "spec.template.spec.hostNetwork",
            "hostNetwork: true puts the pod on the node's network, outside every NetworkPolicy; "
            "remove it (or a policy may set egress.allowHostNetwork: true)",
            ("AML.T0025", "AML.T0024.002"),
            ("LLM02",),
        ),
    )


def test_host_network_default_is_denied() -> None:
    decision = evaluate((policy(egress={}),), deployment(host_network=True), facts())
    assert [v.rule for v in decision.violations] == [Rule.EGRESS_HOST_NETWORK]


def test_host_network_allowed_or_off() -> None:
    allowed = policy(egress={"allowHostNetwork": True})
    assert evaluate((allowed,), deployment(host_network=True), facts()).allowed
    strict = policy(egress={"allowHostNetwork": False})
    assert evaluate((strict,), deployment(host_network=False), facts()).violations == ()
    assert evaluate((strict,), deployment(), facts()).violations == ()


def test_host_network_in_every_role() -> None:
    role = {
        "replicas": 1,
        "template": {
            "spec": {"hostNetwork": True, "containers": [{"name": "pytorch", "image": GOOD_IMAGE}]}
        },
    }
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "ft", "namespace": "ml-prod"},
        "spec": {"pytorchReplicaSpecs": {"Master": role, "Worker": role}},
    }
    decision = evaluate((policy(egress={}),), job, facts())
    assert [v.path for v in decision.violations] == [
        "spec.pytorchReplicaSpecs.Master.template.spec.hostNetwork",
        "spec.pytorchReplicaSpecs.Worker.template.spec.hostNetwork",
    ]


# --- every rule family through evaluate ------------------------------------------------------

ATLAS = {
    Rule.IMAGES_REGISTRY: ("AML.T0010", "AML.T0010.004"),
    Rule.IMAGES_DIGEST: ("AML.T0010", "AML.T0010.004"),
    Rule.IMAGES_TAG: ("AML.T0010", "AML.T0010.004"),
    Rule.IMAGES_SIGNATURE: ("AML.T0010", "AML.T0010.004"),
    Rule.MODELS_APPROVAL: ("AML.T0010.003", "AML.T0058"),
    Rule.GPU_MAX_PER_POD: ("AML.T0029", "AML.T0034"),
    Rule.GPU_MAX_PER_WORKLOAD: ("AML.T0029", "AML.T0034"),
    Rule.GPU_NAMESPACE_QUOTA: ("AML.T0029", "AML.T0034"),
    Rule.GPU_PRODUCT: ("AML.T0029", "AML.T0034"),
    Rule.EGRESS_HOST_NETWORK: ("AML.T0025", "AML.T0024.002"),
}


def test_every_violation_is_fully_attributed() -> None:
    p = policy(
        images={
            **REGISTRY,
            "requireDigest": True,
            "disallowTags": ["latest"],
            "signatures": [
                {
                    "images": ["registry.example.com/ml/*"],
                    "keys": [
                        {
                            "secretRef": {
                                "namespace": "mlgate-system",
                                "name": "cosign",
                                "key": "cosign.pub",
                            }
                        }
                    ],
                }
            ],
        },
        models={},
        egress={},
        gpu={
            "maxPerPod": 1,
            "maxPerWorkload": 1,
            "namespaceQuota": 1,
            "allowedProducts": ["NVIDIA-H100-80GB-HBM3"],
        },
    )
    obj = deployment("docker.io/evil/miner", host_network=True)
    container = obj["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"limits": {"nvidia.com/gpu": 2}}
    container["env"] = [{"name": "MODEL_URI", "value": "s3://evil/model"}]
    decision = evaluate((p,), obj, facts(images={}, gpu_usage=0))
    assert decision.allowed is False
    assert {v.rule for v in decision.violations} == set(ATLAS)
    for v in decision.violations:
        assert v.policy == "production-ml"
        assert v.mode is Mode.ENFORCE
        assert v.atlas == ATLAS[v.rule]
        assert v.path.startswith("spec")
        assert v.message
    assert decision.notes == ()


def test_offline_signatures_become_notes() -> None:
    p = policy(
        images={
            "signatures": [
                {
                    "images": ["registry.example.com/ml/*"],
                    "keys": [
                        {
                            "secretRef": {
                                "namespace": "mlgate-system",
                                "name": "cosign",
                                "key": "cosign.pub",
                            }
                        }
                    ],
                }
            ]
        }
    )
    decision = evaluate((p,), deployment(), facts())
    assert decision == Decision(
        True,
        (),
        ("production-ml",),
        (f"[production-ml] {IMAGE_PATH}: {GOOD_IMAGE} (signature not verified offline)",),
    )
    online = evaluate(
        (p,),
        deployment(),
        facts(
            images={
                GOOD_IMAGE: ImageFact(DIGEST, frozenset({"secret:mlgate-system/cosign/cosign.pub"}))
            }
        ),
    )
    assert online == Decision(True, (), ("production-ml",), ())


def test_recursive_document_does_not_loop() -> None:
    # PyYAML builds recursive objects from `&a [*a]`; the container search must terminate.
    loop: list[Any] = []
    loop.append(loop)
    obj = {**ARGO_LIKE, "spec": {"loop": loop}}
    assert evaluate((policy(),), obj, facts()).notes == (
        "Notebook is not a workload kind; not judged",
    )


def test_missing_model_reference_is_attributed() -> None:
    decision = evaluate(
        (policy(mode="Warn", models={"requireReference": True}),), deployment(), facts()
    )
    assert decision.allowed is True
    assert decision.warnings == (
        Violation(
            "production-ml",
            Mode.WARN,
            Rule.MODELS_REFERENCE,
            "metadata.annotations",
            "the workload declares no model; add annotation mlgate.io/model=<name>@<version> or a "
            "model URI",
            ("AML.T0010.003", "AML.T0058"),
            ("LLM03", "LLM04"),
        ),
    )
