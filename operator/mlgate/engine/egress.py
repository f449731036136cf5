"""Egress rules at admission: host networking bypasses every NetworkPolicy."""

from __future__ import annotations

from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.policy import EgressRules
from mlgate.engine.workloads import WorkloadView


def check(rules: EgressRules, view: WorkloadView) -> list[Finding]:
    if rules.allow_host_network:
        return []
    return [
        Finding(
            Rule.EGRESS_HOST_NETWORK,
            f"{pod.path}.hostNetwork",
            "hostNetwork: true puts the pod on the node's network, outside every NetworkPolicy; "
            "remove it",
        )
        for pod in view.pods
        if pod.spec.get("hostNetwork") is True
    ]
