"""Egress limits: host networking, the managed NetworkPolicy, and widening user NetworkPolicies.

Everything here is pure: the controller applies what `managed_network_policy` builds, the
webhook and `mlgate check` judge user NetworkPolicies with `widening_findings`.

NetworkPolicies are additive: a pod may send whatever *any* policy selecting it allows. So the
managed policy `mlgate-egress` is the allowlist (deny by default), and every allow rule of a user
NetworkPolicy must stay inside it, or it widens egress for the pods it selects.

Address sets are handled as merged integer intervals per IP version: containment, subtraction
(`except` blocks) and intersection are then linear scans however many blocks a policy lists,
so a hostile NetworkPolicy with thousands of `except` entries cannot stall the webhook.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.policy import CompiledPolicy, NetworkPolicyRules
from mlgate.engine.reads import as_list as _list
from mlgate.engine.reads import as_map as _mapping
from mlgate.engine.scope import namespace_in_scope

MANAGED_NAME = "mlgate-egress"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "mlgate"
POLICIES_ANNOTATION = "mlgate.io/egress-policies"
NETWORKING_API_VERSION = "networking.k8s.io/v1"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the apiserver, not forgeable
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS: Mapping[str, str] = {"k8s-app": "kube-dns"}
DNS_PORTS = (("UDP", 53), ("TCP", 53))
# allowedPorts are plain numbers; like a NetworkPolicy port without `protocol`, they mean TCP.
ALLOWED_PORT_PROTOCOL = "TCP"


# ---------------------------------------------------------------------------------------------
# Address sets


# (version, first address, last address) as integers, inclusive.
Interval = tuple[int, int, int]


def _interval(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Interval:
    return network.version, int(network.network_address), int(network.broadcast_address)


def parse_cidr(cidr: str) -> Interval:
    """A CIDR as an interval; host bits are ignored, as the apiserver accepts them."""
    return _interval(ipaddress.ip_network(cidr, strict=False))


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping, adjacent intervals joined: the canonical form of an address set."""
    merged: list[Interval] = []
    for version, first, last in sorted(intervals):
        if merged and merged[-1][0] == version and first <= merged[-1][2] + 1:
            merged[-1] = (version, merged[-1][1], max(merged[-1][2], last))
        else:
            merged.append((version, first, last))
    return merged


def subtract(minuend: Sequence[Interval], subtrahend: Sequence[Interval]) -> list[Interval]:
    """minuend minus subtrahend; both merged (see `merge`), and so is the result."""
    result: list[Interval] = []
    holes, h = list(subtrahend), 0
    for version, first, last in minuend:
        start = first
        # Holes entirely before this interval can never matter again: both lists are sorted.
        while h < len(holes) and (holes[h][0], holes[h][2]) < (version, first):
            h += 1
        k = h
        while k < len(holes) and holes[k][0] == version and holes[k][1] <= last and start <= last:
            if holes[k][2] >= start:
                if holes[k][1] > start:
                    result.append((version, start, holes[k][1] - 1))
                start = holes[k][2] + 1
            k += 1
        if start <= last:
            result.append((version, start, last))
    return result


def intersection(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """The addresses in both merged sets."""
    result: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        (va, fa, la), (vb, fb, lb) = a[i], b[j]
        if va == vb and max(fa, fb) <= min(la, lb):
            result.append((va, max(fa, fb), min(la, lb)))
        if (va, la) < (vb, lb):
            i += 1
        else:
            j += 1
    return result


def to_cidrs(intervals: Iterable[Interval]) -> list[str]:
    """The fewest CIDRs covering exactly these intervals."""
    cidrs: list[str] = []
    for version, first, last in intervals:
        address = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        cidrs += [str(n) for n in ipaddress.summarize_address_range(address(first), address(last))]
    return cidrs


EVERYWHERE: tuple[Interval, ...] = (parse_cidr("0.0.0.0/0"), parse_cidr("::/0"))


# ---------------------------------------------------------------------------------------------
# The effective allowlist of a namespace


@dataclass(frozen=True, slots=True)
class EffectiveEgress:
    """What the managed NetworkPolicy of one namespace allows: the intersection of every
    allowlist that applies there."""

    allow_dns: bool
    cidrs: tuple[str, ...]  # minimal CIDRs, IPv4 first
    ports: tuple[int, ...] | None  # TCP ports to the CIDRs; None: every port
    namespaces: tuple[str, ...]  # in-cluster namespaces reachable on every port
    policies: tuple[str, ...]  # every policy whose allowlist was intersected
    managing: tuple[str, ...]  # those with `manage: true`: they own the NetworkPolicy


def allowlist(policy: CompiledPolicy) -> NetworkPolicyRules | None:
    return None if policy.egress is None else policy.egress.network_policy


def namespace_allowed(rules: NetworkPolicyRules, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in rules.allowed_namespaces)


def _intersect_ports(rules: Iterable[NetworkPolicyRules]) -> tuple[int, ...] | None:
    # An empty allowedPorts means every port, like a NetworkPolicy rule without `ports`.
    listed = [frozenset(r.allowed_ports) for r in rules if r.allowed_ports]
    return tuple(sorted(frozenset.intersection(*listed))) if listed else None


def intersect(
    rules: Sequence[tuple[str, NetworkPolicyRules]], known_namespaces: Iterable[str] = ()
) -> EffectiveEgress:
    """The most restrictive combination of several policies' allowlists.

    DNS only if every policy allows it; the addresses every policy allows; the ports every
    policy allows; the namespaces every policy's list matches. `allowedNamespaces` may hold
    globs, which a NetworkPolicy cannot express: they are resolved against `known_namespaces`
    (literal names need no resolution).
    """
    if not rules:
        raise ValueError("intersect needs at least one allowlist")
    allowlists = [r for _, r in rules]
    cidrs = merge(parse_cidr(c) for c in allowlists[0].allowed_cidrs)
    for other in allowlists[1:]:
        cidrs = intersection(cidrs, merge(parse_cidr(c) for c in other.allowed_cidrs))
    candidates = {n for r in allowlists for n in r.allowed_namespaces if "*" not in n}
    candidates.update(known_namespaces)
    namespaces = sorted(n for n in candidates if all(namespace_allowed(r, n) for r in allowlists))
    return EffectiveEgress(
        allow_dns=all(r.allow_dns for r in allowlists),
        cidrs=tuple(to_cidrs(cidrs)),
        ports=_intersect_ports(allowlists),
        namespaces=tuple(namespaces),
        policies=tuple(name for name, _ in rules),
        managing=tuple(name for name, r in rules if r.manage),
    )


def namespace_egress(
    policies: Iterable[CompiledPolicy],
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    known_namespaces: Iterable[str] = (),
) -> EffectiveEgress | None:
    """The allowlist mlgate keeps in `namespace`, or None when no policy there manages one.

    The NetworkPolicy exists when a policy in scope says `manage: true`; its rules then respect
    every allowlist in scope, managing or not, since each is a limit the namespace must obey.
    Scope is by namespace only: the NetworkPolicy covers every pod, whatever its kind or labels.
    """
    in_scope = [
        (p.name, rules)
        for p in policies
        if (rules := allowlist(p)) is not None
        and namespace_in_scope(p.match, namespace, namespace_labels)
    ]
    if not any(rules.manage for _, rules in in_scope):
        return None
    return intersect(in_scope, known_namespaces)


def _name_selector(names: Iterable[str]) -> dict[str, Any]:
    return {
        "matchExpressions": [
            {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": sorted(names)}
        ]
    }


def _egress_rules(effective: EffectiveEgress) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    if effective.allow_dns:
        rules.append(
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: DNS_NAMESPACE}},
                        "podSelector": {"matchLabels": dict(DNS_POD_LABELS)},
                    }
                ],
                "ports": [{"protocol": p, "port": port} for p, port in DNS_PORTS],
            }
        )
    if effective.cidrs and effective.ports != ():  # () : the policies share no port
        rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": c}} for c in effective.cidrs]}
        if effective.ports is not None:
            rule["ports"] = [
                {"protocol": ALLOWED_PORT_PROTOCOL, "port": p} for p in effective.ports
            ]
        rules.append(rule)
    if effective.namespaces:
        rules.append({"to": [{"namespaceSelector": _name_selector(effective.namespaces)}]})
    return rules


def managed_network_policy(
    namespace: str,
    effective: EffectiveEgress,
    owner_references: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """NetworkPolicy `mlgate-egress`: selects every pod, denies egress but what is allowed."""
    metadata: dict[str, Any] = {
        "name": MANAGED_NAME,
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        "annotations": {POLICIES_ANNOTATION: ",".join(effective.policies)},
    }
    if owner_references:
        metadata["ownerReferences"] = [dict(r) for r in owner_references]
    return {
        "apiVersion": NETWORKING_API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": _egress_rules(effective),
        },
    }


def manages_egress(policy: CompiledPolicy) -> bool:
    rules = allowlist(policy)
    return rules is not None and rules.manage


def awaiting_network_policy(namespace: str) -> Finding:
    """A workload arriving before the managed NetworkPolicy exists would run unconfined."""
    return Finding(
        Rule.EGRESS_NETWORK_POLICY,
        "metadata.namespace",
        f"NetworkPolicy {MANAGED_NAME} does not exist yet in namespace {namespace}; mlgate "
        "creates it within seconds of the namespace entering the policy's scope, and holds "
        "workloads back until then so that no pod runs without egress limits: retry shortly",
    )


# ---------------------------------------------------------------------------------------------
# Judging user NetworkPolicies


def is_network_policy(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and obj.get("kind") == "NetworkPolicy"
        and str(obj.get("apiVersion", "")).startswith("networking.k8s.io/")
    )


def _limits_egress(spec: Mapping[str, Any]) -> bool:
    """Egress rules count only if the policy is of type Egress (implied by an egress section)."""
    types = spec.get("policyTypes")
    if isinstance(types, list):
        return "Egress" in types
    return "egress" in spec


@dataclass(frozen=True, slots=True)
class _Allowlist:
    """One policy's allowlist as the widening checks need it."""

    rules: NetworkPolicyRules
    namespace: str  # the NetworkPolicy's own namespace: pod-only peers stay inside it
    addresses: tuple[Interval, ...]

    @property
    def ports(self) -> frozenset[tuple[str, int]] | None:
        if not self.rules.allowed_ports:
            return None
        return frozenset((ALLOWED_PORT_PROTOCOL, p) for p in self.rules.allowed_ports)

    def describe_cidrs(self) -> str:
        return f"allowedCIDRs {_listing(self.rules.allowed_cidrs)}"

    def describe_ports(self) -> str:
        return f"allowedPorts {_listing(str(p) for p in self.rules.allowed_ports)} (TCP)"

    def describe_namespaces(self) -> str:
        return f"allowedNamespaces {_listing(self.rules.allowed_namespaces)}"


def _listing(items: Iterable[str]) -> str:
    listed = ", ".join(items)
    return f"[{listed}]" if listed else "[] (none)"


def _port_finding(
    path: str, entry: Mapping[str, Any], allowed: frozenset[tuple[str, int]], what: str
) -> Finding | None:
    protocol = str(entry.get("protocol") or "TCP")
    port = entry.get("port")
    if port is None:
        return Finding(Rule.EGRESS_NETWORK_POLICY, path, f"allows every {protocol} port; {what}")
    if isinstance(port, str):
        return Finding(
            Rule.EGRESS_NETWORK_POLICY,
            f"{path}.port",
            f"named port {port!r} resolves on the destination and cannot be checked against "
            f"the allowlist; use a port number ({what})",
        )
    if not isinstance(port, int) or isinstance(port, bool):
        return Finding(
            Rule.EGRESS_NETWORK_POLICY, f"{path}.port", f"{port!r} is not a port number; {what}"
        )
    end = entry.get("endPort")
    last = end if isinstance(end, int) and end >= port else port
    # A range wider than the allowlist cannot fit in it; a narrower one is checked port by port.
    fits = last - port < len(allowed) and all(
        (protocol, p) in allowed for p in range(port, last + 1)
    )
    if fits:
        return None
    span = f"{port}-{last}" if last != port else str(port)
    return Finding(
        Rule.EGRESS_NETWORK_POLICY,
        f"{path}.endPort" if last != port else f"{path}.port",
        f"allows port {span}/{protocol}; {what}",
    )


def _ports_findings(
    base: str, rule: Mapping[str, Any], allowed: frozenset[tuple[str, int]] | None, what: str
) -> list[Finding]:
    if allowed is None:
        return []
    ports = _list(rule.get("ports"))
    if not ports:
        return [
            Finding(
                Rule.EGRESS_NETWORK_POLICY,
                f"{base}.ports",
                f"no `ports`: allows every port; {what}",
            )
        ]
    found = [
        _port_finding(f"{base}.ports[{k}]", _mapping(entry), allowed, what)
        for k, entry in enumerate(ports)
    ]
    return [f for f in found if f is not None]


def _block_findings(path: str, peer: Mapping[str, Any], allow: _Allowlist) -> list[Finding]:
    block = _mapping(peer.get("ipBlock"))
    cidr = block.get("cidr")
    try:
        addresses = merge([parse_cidr(str(cidr))])
        holes = merge(parse_cidr(str(e)) for e in _list(block.get("except")))
    except ValueError:
        return [
            Finding(Rule.EGRESS_NETWORK_POLICY, f"{path}.cidr", f"{cidr!r} is not a valid CIDR")
        ]
    outside = subtract(subtract(addresses, holes), allow.addresses)
    if not outside:
        return []
    excepts = " (less its except blocks)" if holes else ""
    return [
        Finding(
            Rule.EGRESS_NETWORK_POLICY,
            f"{path}.cidr",
            f"{cidr}{excepts} widens egress beyond {allow.describe_cidrs()}: it reaches "
            f"{to_cidrs(outside[:1])[0]} (and maybe more) outside them; narrow it to addresses "
            "within the allowlist",
        )
    ]


def _selected_names(selector: Mapping[str, Any]) -> frozenset[str] | None:
    """The namespaces a namespaceSelector can select, when it pins their names; None when it
    selects by other labels (which any namespace may carry) or selects every namespace."""
    names: frozenset[str] | None = None
    pinned = _mapping(selector.get("matchLabels")).get(NAMESPACE_NAME_LABEL)
    if isinstance(pinned, str):
        names = frozenset({pinned})
    for item in _list(selector.get("matchExpressions")):
        expr = _mapping(item)
        if expr.get("key") == NAMESPACE_NAME_LABEL and expr.get("operator") == "In":
            values = frozenset(str(v) for v in _list(expr.get("values")))
            names = values if names is None else names & values
    return names


def _is_dns_peer(peer: Mapping[str, Any]) -> bool:
    labels = _mapping(_mapping(peer.get("podSelector")).get("matchLabels"))
    return all(labels.get(k) == v for k, v in DNS_POD_LABELS.items())


def _namespace_findings(
    path: str, peer: Mapping[str, Any], rule: Mapping[str, Any], base: str, allow: _Allowlist
) -> list[Finding]:
    names = _selected_names(_mapping(peer.get("namespaceSelector")))
    if names is None:
        return [
            Finding(
                Rule.EGRESS_NETWORK_POLICY,
                f"{path}.namespaceSelector",
                "selects namespaces by labels any namespace can carry (or every namespace), "
                f"which widens egress beyond {allow.describe_namespaces()}; select them by "
                f"{NAMESPACE_NAME_LABEL} In [...]",
            )
        ]
    outside = sorted(
        n for n in names if n != allow.namespace and not namespace_allowed(allow.rules, n)
    )
    if not outside:
        return []
    if outside == [DNS_NAMESPACE] and allow.rules.allow_dns and _is_dns_peer(peer):
        # The managed policy allows DNS to kube-dns; the same peer on DNS ports adds nothing.
        dns = frozenset(DNS_PORTS)
        return _ports_findings(base, rule, dns, "only DNS (53/UDP, 53/TCP) is allowed")
    return [
        Finding(
            Rule.EGRESS_NETWORK_POLICY,
            f"{path}.namespaceSelector",
            f"reaches namespace(s) {', '.join(outside)}, which widens egress beyond "
            f"{allow.describe_namespaces()}; remove them or list them in the policy",
        )
    ]


def _rule_findings(base: str, rule: Mapping[str, Any], allow: _Allowlist) -> list[Finding]:
    peers = _list(rule.get("to"))
    cidr_ports = f"the allowlist permits only {allow.describe_ports()}"
    if not peers:
        # No `to` at all: every destination, in the cluster and outside it.
        outside = subtract(list(EVERYWHERE), allow.addresses)
        if outside:
            return [
                Finding(
                    Rule.EGRESS_NETWORK_POLICY,
                    f"{base}.to",
                    "a rule without `to` allows egress to every destination, which widens "
                    f"egress beyond {allow.describe_cidrs()}; list peers within the allowlist",
                )
            ]
        return _ports_findings(base, rule, allow.ports, cidr_ports)
    found: list[Finding] = []
    reaches_addresses = False
    for j, item in enumerate(peers):
        peer, path = _mapping(item), f"{base}.to[{j}]"
        if "ipBlock" in peer:
            block = _block_findings(f"{path}.ipBlock", peer, allow)
            found += block
            reaches_addresses |= not block
        elif "namespaceSelector" in peer:
            found += _namespace_findings(path, peer, rule, base, allow)
        elif "podSelector" not in peer:
            found.append(
                Finding(
                    Rule.EGRESS_NETWORK_POLICY,
                    path,
                    "a peer without ipBlock, namespaceSelector or podSelector cannot be checked; "
                    "give it one",
                )
            )
        # podSelector alone: pods of the policy's own namespace, never beyond it.
    if reaches_addresses:
        found += _ports_findings(base, rule, allow.ports, cidr_ports)
    return _unique(found)


def _unique(findings: list[Finding]) -> list[Finding]:
    """A rule's port findings come once, however many of its peers they concern."""
    return list(dict.fromkeys(findings))


def widening_findings(
    netpol: Mapping[str, Any], rules: NetworkPolicyRules, namespace: str
) -> list[Finding]:
    """Every egress rule of a user NetworkPolicy that reaches beyond one policy's allowlist.

    Judged per policy, so each finding names the policy (and its mode) it breaks; since every
    allowlist is a set, a rule within all of them is exactly a rule within their intersection.
    """
    spec = _mapping(netpol.get("spec"))
    if not _limits_egress(spec):
        return []
    allow = _Allowlist(rules, namespace, tuple(merge(parse_cidr(c) for c in rules.allowed_cidrs)))
    return [
        finding
        for i, rule in enumerate(_list(spec.get("egress")))
        for finding in _rule_findings(f"spec.egress[{i}]", _mapping(rule), allow)
    ]
