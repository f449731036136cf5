"""NetworkPolicies already in a namespace that widen its egress allowlist.

Admission judges a NetworkPolicy when it is written, but one written while its namespace was out
of scope (or while mlgate was down) is never written again: once the namespace comes into scope,
its pods may still send whatever it allows, since NetworkPolicies add up. Such policies are found
from the cluster's NetworkPolicies, reported in the policies' status and the audit, and, until
they are removed or narrowed, hold back new workloads in the namespace as a missing
`mlgate-egress` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlgate.engine import egress
from mlgate.engine.decisions import Finding, Rule, Violation, attribute
from mlgate.engine.policy import CompiledPolicy
from mlgate.engine.scope import namespace_in_scope


@dataclass(frozen=True, slots=True)
class Widening:
    """NetworkPolicy `name` in `namespace` reaches beyond `policy`'s allowlist, first at `first`."""

    policy: CompiledPolicy
    namespace: str
    name: str
    first: Finding


def _name(netpol: Mapping[str, Any]) -> str:
    meta = netpol.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else ""


def _is_mlgates(netpol: Mapping[str, Any]) -> bool:
    """mlgate's own mlgate-egress: the intersection of the allowlists, kept by the reconciler."""
    meta = netpol.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    return (
        _name(netpol) == egress.MANAGED_NAME
        and isinstance(labels, Mapping)
        and labels.get(egress.MANAGED_BY_LABEL) == egress.MANAGED_BY
    )


def widenings(
    policies: Iterable[CompiledPolicy],
    netpols: Iterable[Mapping[str, Any]],
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
) -> Iterator[Widening]:
    """Each (policy, NetworkPolicy) pair where the NetworkPolicy widens the policy's allowlist.

    Scope is by namespace only, as for NetworkPolicies at admission.
    """
    in_scope = [
        (p, rules)
        for p in policies
        if (rules := egress.allowlist(p)) is not None
        and namespace_in_scope(p.match, namespace, namespace_labels)
    ]
    if not in_scope:
        return
    for netpol in sorted(netpols, key=_name):
        if _is_mlgates(netpol):
            continue
        for policy, rules in in_scope:
            found = egress.widening_findings(netpol, rules, namespace)
            if found:
                yield Widening(policy, namespace, _name(netpol), found[0])


def held_back(widening: Widening) -> Violation:
    """The violation that holds a new workload back while `widening` lasts."""
    name, namespace, first = widening.name, widening.namespace, widening.first
    finding = Finding(
        Rule.EGRESS_NETWORK_POLICY,
        "metadata.namespace",
        f"NetworkPolicy {name} in namespace {namespace} widens egress beyond the policy's "
        f"allowlist ({first.path}: {first.message}), so pods here would not be confined: "
        f"remove it (kubectl delete networkpolicy {name} -n {namespace}) or narrow it, then "
        "retry",
    )
    (violation,) = attribute(widening.policy.name, widening.policy.mode, [finding])
    return violation
