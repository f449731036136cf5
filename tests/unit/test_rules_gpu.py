"""GPU rules: demand per pod, per workload and per namespace, and the products pods may select."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlgate.api.compile import compile_policy, gpu_resources, parse_resource
from mlgate.engine import gpu
from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.policy import MAX_CLASSIFIED, GpuLoad, GpuRules, GpuUsage
from mlgate.engine.quantities import InvalidQuantity, parse_quantity
from mlgate.engine.workloads import WorkloadView, view

PRODUCT = "nvidia.com/gpu.product"
H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
T4 = "Tesla-T4"


def in_use(gpus: int, resource: str = "nvidia.com/gpu") -> GpuUsage:
    """A namespace whose pods already use `gpus` of `resource`."""
    return GpuUsage(others=(GpuLoad(observed={resource: gpus}),))


def rules(**gpu_spec: Any) -> GpuRules:
    doc = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": "gpu"},
        "spec": {"gpu": gpu_spec},
    }
    compiled = compile_policy(parse_resource(doc))
    assert compiled.gpu is not None
    return compiled.gpu


def _view(obj: dict[str, Any]) -> WorkloadView:
    result = view(obj)
    assert isinstance(result, WorkloadView)
    return result


def container(name: str, limits: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": f"registry.example.com/ml/{name}:1", **extra}
    if limits is not None:
        c["resources"] = {"limits": limits}
    return c


def pod(
    *containers: dict[str, Any],
    init: tuple[dict[str, Any], ...] = (),
    **spec: Any,
) -> WorkloadView:
    return _view(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "train", "namespace": "team-a"},
            "spec": {"initContainers": list(init), "containers": list(containers), **spec},
        }
    )


def deployment(replicas: int, gpus: Any, **pod_spec: Any) -> WorkloadView:
    return _view(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "llm", "namespace": "team-a"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "llm"}},
                "template": {
                    "metadata": {"labels": {"app": "llm"}},
                    "spec": {
                        "containers": [container("vllm", {"nvidia.com/gpu": gpus, "cpu": "8"})],
                        **pod_spec,
                    },
                },
            },
        }
    )


def demand(w: WorkloadView, r: GpuRules | None = None) -> int:
    return gpu.pod_demand(r or rules(), w.pods[0]).gpus


# --- per pod ---------------------------------------------------------------------------------


def test_app_containers_add_up() -> None:
    w = pod(container("a", {"nvidia.com/gpu": 2}), container("b", {"nvidia.com/gpu": "3"}))
    assert demand(w) == 5


def test_plain_init_containers_run_before_the_app() -> None:
    w = pod(
        container("app", {"nvidia.com/gpu": 2}),
        init=(
            container("warmup", {"nvidia.com/gpu": 4}),
            container("check", {"nvidia.com/gpu": 1}),
        ),
    )
    assert demand(w) == 4  # the largest init container, not the sum
    w = pod(
        container("app", {"nvidia.com/gpu": 6}), init=(container("warmup", {"nvidia.com/gpu": 4}),)
    )
    assert demand(w) == 6


def test_sidecars_run_alongside_the_app() -> None:
    w = pod(
        container("app", {"nvidia.com/gpu": 4}),
        init=(container("embedder", {"nvidia.com/gpu": 2}, restartPolicy="Always"),),
    )
    assert demand(w) == 6


def test_sidecars_started_before_an_init_container_run_with_it() -> None:
    # The scheduler counts an init container together with the sidecars started before it.
    w = pod(
        container("app", {"cpu": "1"}),
        init=(
            container("embedder", {"nvidia.com/gpu": 2}, restartPolicy="Always"),
            container("warmup", {"nvidia.com/gpu": 4}),
            container("late-sidecar", {"nvidia.com/gpu": 1}, restartPolicy="Always"),
        ),
    )
    assert demand(w) == 6  # warmup (4) + embedder (2); later 2 + 1 run with the app


def test_ephemeral_containers_add_no_gpus() -> None:
    w = pod(container("app", {"nvidia.com/gpu": 1}), ephemeralContainers=[container("dbg")])
    assert demand(w) == 1


def test_limits_and_requests_take_the_larger() -> None:
    c = container("app")
    c["resources"] = {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}
    assert demand(pod(c)) == 2
    c["resources"] = {"requests": {"nvidia.com/gpu": 3}}
    assert demand(pod(c)) == 3


def test_resource_globs_and_other_resources() -> None:
    w = pod(
        container(
            "app",
            {
                "nvidia.com/gpu": 1,
                "nvidia.com/mig-1g.5gb": 2,
                "nvidia.com/mig-3g.20gb": 1,
                "amd.com/gpu": 1,
                "cpu": "64",
                "memory": "512Gi",
                "example.com/fpga": 5,
            },
        )
    )
    assert demand(w) == 5
    assert demand(w, rules(resources=["nvidia.com/mig-*"])) == 3
    assert demand(w, rules(resources=["example.com/*"])) == 5


@pytest.mark.parametrize(
    "resource",
    [
        "nvidia.com/gpu",
        "nvidia.com/gpu.shared",
        "nvidia.com/mig-2g.10gb",
        "amd.com/gpu",
        "gpu.intel.com/i915",
        "gpu.intel.com/xe",
        "habana.ai/gaudi",
        "google.com/tpu",
    ],
)
def test_the_default_resources_cover_every_vendors_device_plugin(resource: str) -> None:
    assert demand(pod(container("app", {resource: 4}))) == 4


def test_device_plugin_counters_that_are_not_devices_are_not_counted() -> None:
    limits = {"gpu.intel.com/millicores": 500, "gpu.intel.com/memory.max": "8G"}
    assert demand(pod(container("app", limits))) == 0


@pytest.mark.parametrize(
    ("quantity", "gpus"), [("2", 2), (2, 2), ("1k", 1000), ("0.5", 1), ("1500m", 2), ("0", 0)]
)
def test_quantities_round_up(quantity: Any, gpus: int) -> None:
    assert demand(pod(container("app", {"nvidia.com/gpu": quantity}))) == gpus


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("two", "'two' is not a quantity; GPU resources must be whole numbers"),
        (None, "None is not a quantity; GPU resources must be whole numbers"),
        (True, "True is not a quantity; GPU resources must be whole numbers"),
        ("1e999999999", "'1e999999999' is out of range; GPU resources must be whole numbers"),
        ("-4", "'-4' is negative; GPU resources must be whole numbers"),
        (-1, "-1 is negative; GPU resources must be whole numbers"),
    ],
)
def test_garbage_quantity_is_a_violation(quantity: Any, message: str) -> None:
    w = pod(container("ok", {"nvidia.com/gpu": 1}), container("app", {"nvidia.com/gpu": quantity}))
    assert gpu.check(rules(), w, None) == [
        Finding(
            Rule.GPU_MAX_PER_POD, 'spec.containers[1].resources.limits["nvidia.com/gpu"]', message
        )
    ]


@pytest.mark.parametrize(
    "quantity",
    [
        "8",
        8,
        "0",
        0,
        "007",
        " 8",
        "8 ",
        "+8",
        "1e1",
        "8.0",
        "\uff11",
        "\u0663",
        "9" * 64,
        "9" * 65,
        2**70,
    ],
)
def test_plain_integers_count_as_the_quantity_parser_reads_them(quantity: Any) -> None:
    """Plain integers skip the general parser: the shortcut must agree with it on every input,
    and leave it every input it would refuse (padded, non-ASCII digits, too long)."""
    try:
        expected: Any = math.ceil(parse_quantity(quantity))
    except InvalidQuantity as exc:
        expected = f"{exc}; GPU resources must be whole numbers"
    w = pod(container("app", {"nvidia.com/gpu": quantity}))
    amounts, errors = gpu.pod_amounts(w.pods[0])
    if isinstance(expected, int):
        assert (amounts, errors) == ({"nvidia.com/gpu": expected} if expected else {}, [])
    else:
        assert amounts == {}
        assert [finding.message for _, finding in errors] == [expected]


def test_negative_quantity_cannot_cancel_others() -> None:
    # A negative amount in one container must not offset another's GPUs.
    w = pod(container("a", {"nvidia.com/gpu": 8}), container("b", {"nvidia.com/mig-1g.5gb": "-6"}))
    assert demand(w) == 8
    findings = gpu.check(rules(maxPerPod=4), w, None)
    assert [f.rule for f in findings] == [Rule.GPU_MAX_PER_POD, Rule.GPU_MAX_PER_POD]


def test_max_per_pod() -> None:
    w = deployment(3, 8)
    assert gpu.check(rules(maxPerPod=8), w, None) == []
    assert gpu.check(rules(maxPerPod=4), w, None) == [
        Finding(
            Rule.GPU_MAX_PER_POD,
            "spec.template.spec",
            "each pod requests 8 GPUs, above the limit of 4 per pod; lower the GPU "
            "requests/limits of its containers",
        )
    ]


def test_max_per_pod_zero_forbids_gpus() -> None:
    assert [f.rule for f in gpu.check(rules(maxPerPod=0), deployment(1, 1), None)] == [
        Rule.GPU_MAX_PER_POD
    ]
    assert gpu.check(rules(maxPerPod=0), deployment(1, 0), None) == []


# --- per workload ----------------------------------------------------------------------------


def pytorch_job(master: int, workers: int, gpus: int) -> WorkloadView:
    def role(replicas: int) -> dict[str, Any]:
        return {
            "replicas": replicas,
            "restartPolicy": "OnFailure",
            "template": {"spec": {"containers": [container("pytorch", {"nvidia.com/gpu": gpus})]}},
        }

    return _view(
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "PyTorchJob",
            "metadata": {"name": "llama-ft", "namespace": "team-a"},
            "spec": {"pytorchReplicaSpecs": {"Master": role(master), "Worker": role(workers)}},
        }
    )


def test_max_per_workload_across_training_roles() -> None:
    w = pytorch_job(1, 3, 8)
    assert gpu.workload_demand(rules(), w)[0] == 32
    assert gpu.check(rules(maxPerWorkload=32), w, None) == []
    assert gpu.check(rules(maxPerWorkload=16), w, None) == [
        Finding(
            Rule.GPU_MAX_PER_WORKLOAD,
            "spec",
            "the workload requests 32 GPUs in total (Master: 1 x 8, Worker: 3 x 8), above the "
            "limit of 16; reduce replicas or GPUs per pod",
        )
    ]


def test_max_per_workload_across_ray_worker_groups() -> None:
    def group(name: str, replicas: int, gpus: int) -> dict[str, Any]:
        return {
            "groupName": name,
            "replicas": replicas,
            "minReplicas": 1,
            "maxReplicas": 10,
            "rayStartParams": {},
            "template": {
                "spec": {"containers": [container("ray-worker", {"nvidia.com/gpu": gpus})]}
            },
        }

    w = _view(
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": "ray", "namespace": "team-a"},
            "spec": {
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [container("ray-head", {"cpu": "4"})]}},
                },
                "workerGroupSpecs": [group("small", 2, 1), group("big", 3, 4)],
            },
        }
    )
    assert gpu.workload_demand(rules(), w)[0] == 14
    assert [f.message for f in gpu.check(rules(maxPerWorkload=8), w, None)] == [
        "the workload requests 14 GPUs in total (small: 2 x 1, big: 3 x 4), above the limit of "
        "8; reduce replicas or GPUs per pod"
    ]


def test_zero_replicas_request_nothing() -> None:
    assert gpu.check(rules(maxPerWorkload=0, namespaceQuota=0), deployment(0, 8), None) == []


# --- namespace quota -------------------------------------------------------------------------


def test_namespace_quota_with_usage() -> None:
    w = deployment(2, 8)
    assert gpu.check(rules(namespaceQuota=32), w, in_use(16)) == []
    assert gpu.check(rules(namespaceQuota=32), w, in_use(17)) == [
        Finding(
            Rule.GPU_NAMESPACE_QUOTA,
            "spec",
            "namespace team-a would use 33 GPUs (17 in use + 16 requested), above its quota of "
            "32; free GPUs or request fewer",
        )
    ]


def test_namespace_quota_without_usage_counts_the_workload() -> None:
    assert gpu.check(rules(namespaceQuota=32), deployment(4, 8), None) == []
    assert [f.rule for f in gpu.check(rules(namespaceQuota=31), deployment(4, 8), None)] == [
        Rule.GPU_NAMESPACE_QUOTA
    ]


def test_namespace_quota_ignores_cpu_only_workloads_even_when_full() -> None:
    assert gpu.check(rules(namespaceQuota=8), deployment(3, 0), in_use(100)) == []


# --- DaemonSet -------------------------------------------------------------------------------


def daemonset(gpus: int) -> WorkloadView:
    return _view(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "miner", "namespace": "team-a"},
            "spec": {
                "selector": {"matchLabels": {"app": "x"}},
                "template": {"spec": {"containers": [container("x", {"nvidia.com/gpu": gpus})]}},
            },
        }
    )


def test_daemonset_per_pod_limit_applies() -> None:
    assert [f.rule for f in gpu.check(rules(maxPerPod=1), daemonset(2), None)] == [
        Rule.GPU_MAX_PER_POD
    ]
    assert gpu.check(rules(maxPerPod=2), daemonset(2), None) == []


def test_daemonset_with_gpus_is_unbounded_under_workload_limits() -> None:
    expected = [
        Finding(
            Rule.GPU_MAX_PER_WORKLOAD,
            "spec",
            "a DaemonSet runs one pod per node, so its GPU demand (1 per pod) grows without "
            "bound; run GPU work as a Deployment, Job or training job instead",
        )
    ]
    assert gpu.check(rules(maxPerWorkload=100), daemonset(1), None) == expected
    assert gpu.check(rules(namespaceQuota=100), daemonset(1), in_use(0)) == expected
    assert gpu.check(rules(maxPerWorkload=100), daemonset(0), None) == []


# --- products --------------------------------------------------------------------------------

ALLOWED = [H100, A100]
PRODUCT_HINT = f"select one of: {A100}, {H100}"


def test_product_by_node_selector() -> None:
    r = rules(allowedProducts=ALLOWED)
    assert gpu.check(r, deployment(1, 1, nodeSelector={PRODUCT: H100}), None) == []
    assert gpu.check(r, deployment(1, 1, nodeSelector={PRODUCT: T4, "pool": "gpu"}), None) == [
        Finding(
            Rule.GPU_PRODUCT,
            f'spec.template.spec.nodeSelector["{PRODUCT}"]',
            f"GPU product {T4!r} is not allowed; {PRODUCT_HINT}",
        )
    ]


@pytest.mark.parametrize("value", [[H100], {"name": H100}, 1, ""])
def test_product_selector_garbage_is_denied_not_crashed(value: Any) -> None:
    findings = gpu.check(
        rules(allowedProducts=ALLOWED), deployment(1, 1, nodeSelector={PRODUCT: value}), None
    )
    assert [f.rule for f in findings] == [Rule.GPU_PRODUCT]


def test_unpinned_product() -> None:
    r = rules(allowedProducts=ALLOWED)
    assert gpu.check(r, deployment(1, 1), None) == [
        Finding(
            Rule.GPU_PRODUCT,
            "spec.template.spec.nodeSelector",
            f"pod requests GPUs but does not restrict them to an allowed product; set "
            f"nodeSelector {PRODUCT} to one of: {A100}, {H100}",
        )
    ]


def test_products_only_matter_for_gpu_pods() -> None:
    assert gpu.check(rules(allowedProducts=ALLOWED), deployment(1, 0), None) == []


def affinity(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": t} for t in terms]
            }
        }
    }


def pinned(*values: Any, operator: str = "In") -> dict[str, Any]:
    return {"key": PRODUCT, "operator": operator, "values": list(values)}


ZONE = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a"]}


@pytest.mark.parametrize(
    "terms",
    [
        ([pinned(H100)],),
        ([pinned(H100, A100)],),
        ([ZONE, pinned(A100)],),
        ([pinned(H100)], [ZONE, pinned(A100)]),
    ],
)
def test_product_by_required_affinity(terms: tuple[list[dict[str, Any]], ...]) -> None:
    w = deployment(1, 1, affinity=affinity(*terms))
    assert gpu.check(rules(allowedProducts=ALLOWED), w, None) == []


@pytest.mark.parametrize(
    "terms",
    [
        ([pinned(H100)], [ZONE]),  # the second OR-ed term lets the pod land anywhere in the zone
        ([pinned(H100)], []),
        ([pinned(H100, T4)],),
        ([pinned(T4, operator="NotIn")],),
        ([{"key": PRODUCT, "operator": "Exists"}],),
        ([pinned()],),
        ([pinned([H100])],),  # garbage values must not crash
        ([pinned({"a": H100})],),
        ([{"key": "nvidia.com/gpu.family", "operator": "In", "values": [H100]}],),
        (),
    ],
)
def test_affinity_that_does_not_pin_the_product(terms: tuple[list[dict[str, Any]], ...]) -> None:
    w = deployment(1, 1, affinity=affinity(*terms))
    findings = gpu.check(rules(allowedProducts=ALLOWED), w, None)
    assert [(f.rule, f.path) for f in findings] == [
        (Rule.GPU_PRODUCT, "spec.template.spec.nodeSelector")
    ]


def test_preferred_affinity_does_not_pin() -> None:
    preferred = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [pinned(H100)]}}
            ]
        }
    }
    w = deployment(1, 1, affinity=preferred)
    assert [f.rule for f in gpu.check(rules(allowedProducts=ALLOWED), w, None)] == [
        Rule.GPU_PRODUCT
    ]


def test_match_fields_term_does_not_pin() -> None:
    aff = affinity([pinned(H100)])
    terms = aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    terms.append({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})
    w = deployment(1, 1, affinity=aff)
    assert [f.rule for f in gpu.check(rules(allowedProducts=ALLOWED), w, None)] == [
        Rule.GPU_PRODUCT
    ]


def test_every_rule_together() -> None:
    r = rules(maxPerPod=4, maxPerWorkload=8, namespaceQuota=10, allowedProducts=ALLOWED)
    findings = gpu.check(r, deployment(3, 6, nodeSelector={PRODUCT: T4}), in_use(2))
    assert [f.rule for f in findings] == [
        Rule.GPU_MAX_PER_POD,
        Rule.GPU_PRODUCT,
        Rule.GPU_MAX_PER_WORKLOAD,
        Rule.GPU_NAMESPACE_QUOTA,
    ]


def test_resource_names_are_classified_once_per_compiled_policy_and_bounded() -> None:
    """A policy's patterns decide each resource name once; the memo never grows past its bound
    (names come from workloads) and never changes an answer, remembered or not."""
    rules = GpuRules(resources=gpu_resources(list(gpu.DEFAULT_RESOURCES), ["gpu.nvidia.com"]))
    names = ["nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "rdma/hca", "example.com/foo"]
    names += [f"vendor{i}.example/dev" for i in range(MAX_CLASSIFIED + 50)]
    for _ in range(2):  # the second round answers from the memo where it remembered
        for name in names:
            assert rules.counts(name) == any(p.fullmatch(name) for p in rules.resources), name
    assert rules.counts("nvidia.com/gpu") and not rules.counts("rdma/hca")
    assert rules.counts("gpu.nvidia.com.deviceclass.resource.k8s.io/devices")
    assert len(rules._classified) == MAX_CLASSIFIED
    # The memo is not part of the compiled policy's identity: equal rules stay equal.
    assert rules == GpuRules(resources=rules.resources)
