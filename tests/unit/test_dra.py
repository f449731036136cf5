"""DRA devices in every gpu.* rule: Kubernetes' ResourceClaim quota evaluator cases give the same
counts; templates count per pod, a shared claim once; unknown claims fail closed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate import cli
from mlgate.api.compile import compile_policy, parse_resource
from mlgate.engine import gpu
from mlgate.engine.dra import CLAIM, KUBERNETES_ALL_CEILING, TEMPLATE, claim_devices
from mlgate.engine.policy import GpuRules
from mlgate.engine.workloads import UNBOUNDED, WorkloadView, view

GPU = "gpu.deviceclass.resource.k8s.io/devices"
TPU = "tpu.deviceclass.resource.k8s.io/devices"


def exact(count: int = 1, mode: str = "ExactCount", **extra: Any) -> dict[str, Any]:
    request = {"deviceClassName": "gpu", "allocationMode": mode, "count": count, **extra}
    return {"name": "req-0", "exactly": request}


def sub(name: str, device_class: str = "gpu", mode: str = "ExactCount", count: int = 1) -> Any:
    body: dict[str, Any] = {"name": name, "deviceClassName": device_class, "allocationMode": mode}
    return body | ({"count": count} if mode == "ExactCount" else {})


def spec(*requests: dict[str, Any]) -> dict[str, Any]:
    return {"devices": {"requests": list(requests)}}


# TestResourceClaimEvaluatorUsage (pkg/quota/v1/evaluator/core/resource_claims_test.go), with
# Kubernetes' ceiling for allocationMode All: the same device counts per class.
KUBERNETES_CASES = {
    "simple": (spec(exact()), {GPU: 1}),
    "many-requests": (spec(*[exact()] * 5), {GPU: 5}),
    "count": (spec(exact(5)), {GPU: 5}),
    "all": (spec(exact(mode="All")), {GPU: 32}),
    "unknown-count-mode": (spec(exact(mode="future-mode")), {GPU: 0}),
    "admin": (spec(exact(adminAccess=True)), {GPU: 1}),
    "prioritized-list": (spec({"name": "req-0", "firstAvailable": [sub("subreq-0")]}), {GPU: 1}),
    "prioritized-list-multiple-subrequests": (
        spec({"name": "req-0", "firstAvailable": [sub("subreq-0", count=2), sub("subreq-1")]}),
        {GPU: 2},
    ),
    "prioritized-list-multiple-subrequests-allocation-mode-all": (
        spec({"name": "req-0", "firstAvailable": [sub("subreq-0"), sub("s1", mode="All")]}),
        {GPU: 32},
    ),
    "prioritized-list-multiple-subrequests-different-device-classes": (
        spec({"name": "req-0", "firstAvailable": [sub("subreq-0"), sub("s1", "tpu", "All")]}),
        {GPU: 1, TPU: 32},
    ),
}


@pytest.mark.parametrize("case", KUBERNETES_CASES)
def test_kubernetes_quota_evaluator_cases_give_the_same_counts(case: str) -> None:
    claim, expected = KUBERNETES_CASES[case]
    assert claim_devices(claim, KUBERNETES_ALL_CEILING) == expected


def test_allocation_mode_all_is_unbounded_for_limits() -> None:
    assert claim_devices(spec(exact(mode="All"))) == {GPU: UNBOUNDED}


def test_v1beta1_shape_counts_alike() -> None:
    flat = {"name": "r", "deviceClassName": "gpu", "allocationMode": "ExactCount", "count": 3}
    assert claim_devices(spec(flat)) == {GPU: 3}


def rules(**gpu_spec: Any) -> GpuRules:
    doc = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": "gpu"},
        "spec": {"gpu": {"deviceClasses": ["gpu", "*.nvidia.com"], **gpu_spec}},
    }
    compiled = compile_policy(parse_resource(doc))
    assert compiled.gpu is not None
    return compiled.gpu


def deployment(replicas: int, *claims: dict[str, str]) -> WorkloadView:
    item = view(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "llm", "namespace": "team-a"},
            "spec": {
                "replicas": replicas,
                "template": {
                    "spec": {
                        "containers": [{"name": "m", "image": "x"}],
                        "resourceClaims": list(claims),
                    }
                },
            },
        }
    )
    assert isinstance(item, WorkloadView)
    return item


CLAIMS = {
    (TEMPLATE, "two-gpus"): spec(exact(2)),
    (CLAIM, "shared-eight"): spec(exact(8)),
    (TEMPLATE, "all-gpus"): spec(exact(mode="All")),
    (TEMPLATE, "fpga"): {
        "devices": {"requests": [{"name": "f", "exactly": {"deviceClassName": "fpga.example.com"}}]}
    },
}
TEMPLATE_REF = {"name": "g", "resourceClaimTemplateName": "two-gpus"}
SHARED_REF = {"name": "s", "resourceClaimName": "shared-eight"}


def test_template_claims_count_per_pod_and_a_shared_claim_once() -> None:
    total, demands = gpu.workload_demand(rules(), deployment(3, TEMPLATE_REF, SHARED_REF), CLAIMS)
    assert total == 3 * 2 + 8
    assert demands[0].gpus == 2 + 8  # what one pod holds


def test_devices_count_in_every_gpu_rule() -> None:
    w = deployment(3, TEMPLATE_REF)
    found = gpu.check(rules(maxPerPod=1, maxPerWorkload=5, namespaceQuota=4), w, None, CLAIMS)
    assert [f.rule.value for f in found] == [
        "gpu.maxPerPod",
        "gpu.maxPerWorkload",
        "gpu.namespaceQuota",
    ]


def test_all_devices_is_refused_under_any_limit() -> None:
    w = deployment(1, {"name": "a", "resourceClaimTemplateName": "all-gpus"})
    found = gpu.check(rules(maxPerWorkload=64), w, None, CLAIMS)
    assert found and "an unbounded number of" in found[0].message


def test_classes_a_policy_does_not_map_are_not_gpus() -> None:
    w = deployment(2, {"name": "f", "resourceClaimTemplateName": "fpga"})
    assert gpu.check(rules(maxPerPod=0), w, None, CLAIMS) == []


def test_a_claim_mlgate_cannot_find_fails_closed() -> None:
    w = deployment(1, {"name": "x", "resourceClaimTemplateName": "nowhere"})
    (finding,) = gpu.check(rules(maxPerPod=8), w, None, CLAIMS)
    assert finding.path == "spec.template.spec.resourceClaims[0]"
    assert "ResourceClaimTemplate nowhere" in finding.message


def test_a_claim_object_is_judged_as_the_devices_one_pod_gets() -> None:
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "big", "namespace": "team-a"},
        "spec": spec(exact(16)),
    }
    item = view(claim)
    assert isinstance(item, WorkloadView)
    facts = {(CLAIM, "big"): claim["spec"]}
    (finding,) = gpu.check(rules(maxPerPod=8, namespaceQuota=4), item, None, facts)
    assert finding.rule.value == "gpu.maxPerPod"  # the quota charges the pods that use it
    template = {**copy.deepcopy(claim), "kind": "ResourceClaimTemplate"}
    template["spec"] = {"spec": claim["spec"]}
    item = view(template)
    assert isinstance(item, WorkloadView)
    assert gpu.check(rules(maxPerPod=16), item, None, {(TEMPLATE, "big"): claim["spec"]}) == []


def _selected(expression: str) -> dict[str, Any]:
    request = {
        "deviceClassName": "gpu.nvidia.com",
        "selectors": [{"cel": {"expression": expression}}],
    }
    return {(TEMPLATE, "t"): spec({"name": "g", "exactly": request})}


PINNED_H100 = 'device.attributes["gpu.nvidia.com"].productName == "H100"'


@pytest.mark.parametrize(
    ("expression", "verdict"),
    [
        (PINNED_H100, None),
        ('device.attributes["gpu.nvidia.com"].productName in ["H100", "A100"]', None),
        ('device.attributes["gpu.nvidia.com"].productName == "T4"', "selects GPU products T4"),
        (PINNED_H100 + " || true", "cannot be verified"),  # a looser selector pins nothing
        ('device.attributes["gpu.nvidia.com"].memory > 40', "cannot be verified"),
    ],
)
def test_allowed_products_apply_to_dra_requests(expression: str, verdict: str | None) -> None:
    w = deployment(1, {"name": "g", "resourceClaimTemplateName": "t"})
    found = gpu.check(rules(allowedProducts=["H100", "A100"]), w, None, _selected(expression))
    if verdict is None:
        assert found == []
    else:
        (finding,) = found
        assert finding.rule.value == "gpu.product" and verdict in finding.message


FOUR_GPUS = {"deviceClassName": "gpu.nvidia.com", "count": 4}


def test_mlgate_check_reads_claims_from_the_given_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "four", "namespace": "team-a"},
        "spec": {"spec": spec({"name": "g", "exactly": FOUR_GPUS})},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team-a"},
        "spec": {
            "containers": [{"name": "m", "image": "x"}],
            "resourceClaims": [{"name": "g", "resourceClaimTemplateName": "four"}],
        },
    }
    policy = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": "gpus"},
        "spec": {"gpu": {"maxPerPod": 2}},
    }
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    (tmp_path / "app.yaml").write_text(yaml.safe_dump_all([template, pod]))
    code = cli.main(["check", "-p", str(tmp_path / "policy.yaml"), str(tmp_path / "app.yaml")])
    out = capsys.readouterr().out
    assert code == 1 and "each pod requests 4 GPUs" in out
    (tmp_path / "app.yaml").write_text(yaml.safe_dump(pod))  # the template is not given
    assert cli.main(["check", "-p", str(tmp_path / "policy.yaml"), str(tmp_path / "app.yaml")]) == 1
    assert "ResourceClaimTemplate four, which mlgate cannot find" in capsys.readouterr().out
