"""The background audit's counting, on plain data."""

from __future__ import annotations

from datetime import UTC, datetime

from mlgate.api.compile import compile_policy, parse_resource
from mlgate.api.models import ClusterMLPolicy
from mlgate.controller.audit import count_violations
from mlgate.engine.policy import Facts
from tests.unit.factories import deployment, policy


def test_counts_per_policy_and_skips_controlled_and_exempt_objects() -> None:
    resource = parse_resource(policy(images={"requireDigest": True, "disallowTags": ["latest"]}))
    assert isinstance(resource, ClusterMLPolicy)
    quiet = parse_resource(policy("quiet", gpu={"maxPerPod": 8}))
    assert isinstance(quiet, ClusterMLPolicy)
    policies = (compile_policy(resource), compile_policy(quiet))
    owned = deployment("owned", image="nginx")
    owned["metadata"]["ownerReferences"] = [{"kind": "X", "name": "x", "controller": True}]
    workloads = [
        deployment("bad", image="nginx:latest"),  # digest + tag
        deployment("fine"),
        owned,  # judged through its owner
        deployment("system", namespace="kube-system", image="nginx"),
        deployment("ours", namespace="mlgate-system", image="nginx"),
    ]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    counts = count_violations(
        policies,
        iter(workloads),
        lambda _: Facts(now=now, namespace_labels={"mlgate.io/governed": "true"}),
        frozenset({"kube-system", "mlgate-system"}),
    )
    assert counts == {"production-ml": 2, "quiet": 0}
