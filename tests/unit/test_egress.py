"""The pure egress engine: address sets, widening user NetworkPolicies, intersection of several
policies' allowlists, and the managed NetworkPolicy mlgate-egress."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mlgate.api.compile import compile_policy, parse_resource
from mlgate.engine import egress
from mlgate.engine.decisions import Mode, Rule
from mlgate.engine.evaluate import evaluate
from mlgate.engine.policy import CompiledPolicy, Facts, NetworkPolicyRules

NOW = datetime(2026, 3, 1, tzinfo=UTC)
NS = "ml-prod"
RULES = NetworkPolicyRules(
    allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"),
    allowed_ports=(443,),
    allowed_namespaces=("monitoring", "team-*"),
)


def netpol(*rules: dict[str, Any], namespace: str = NS, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "user", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": list(rules), **spec},
    }


def block(cidr: str, *excepts: str) -> dict[str, Any]:
    ip_block: dict[str, Any] = {"cidr": cidr}
    if excepts:
        ip_block["except"] = list(excepts)
    return {"ipBlock": ip_block}


def to_ips(*peers: dict[str, Any], ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"to": list(peers)}
    if ports is not None:
        rule["ports"] = ports
    return rule


def https() -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": 443}]


def findings(doc: dict[str, Any], rules: NetworkPolicyRules = RULES) -> list[tuple[str, str]]:
    found = egress.widening_findings(doc, rules, NS)
    assert all(f.rule is Rule.EGRESS_NETWORK_POLICY for f in found)
    return [(f.path, f.message) for f in found]


def paths(doc: dict[str, Any], rules: NetworkPolicyRules = RULES) -> list[str]:
    return [p for p, _ in findings(doc, rules)]


# ---------------------------------------------------------------------------------------------
# Address sets


def cidrs(intervals: list[egress.Interval]) -> list[str]:
    return egress.to_cidrs(intervals)


def test_subtract_leaves_the_minimal_cidrs_around_a_hole() -> None:
    whole = egress.merge([egress.parse_cidr("10.0.0.0/8")])
    hole = egress.merge([egress.parse_cidr("10.128.0.0/9")])
    assert cidrs(egress.subtract(whole, hole)) == ["10.0.0.0/9"]
    assert egress.subtract(hole, whole) == []


def test_merge_joins_adjacent_and_nested_blocks() -> None:
    merged = egress.merge(
        egress.parse_cidr(c) for c in ["10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "::/1"]
    )
    assert cidrs(merged) == ["10.0.0.0/8", "::/1"]


def test_intersection_keeps_versions_apart() -> None:
    a = egress.merge(egress.parse_cidr(c) for c in ["0.0.0.0/0", "2001:db8::/32"])
    b = egress.merge(egress.parse_cidr(c) for c in ["192.168.1.0/24", "2001:db8:1::/48", "::/0"])
    assert cidrs(egress.intersection(a, b)) == ["192.168.1.0/24", "2001:db8::/32"]


def test_many_excepts_stay_linear() -> None:
    # 4096 holes in a /8: a naive split-per-hole would explode; intervals do not.
    holes = [f"10.{i // 256}.{i % 256}.0/24" for i in range(4096)]
    doc = netpol(to_ips(block("10.0.0.0/8", *holes), ports=https()))
    assert paths(doc) == []


# ---------------------------------------------------------------------------------------------
# CIDR containment


@pytest.mark.parametrize(
    "cidr",
    ["10.0.0.0/8", "10.20.30.0/24", "10.1.2.3/32", "2001:db8::/32", "2001:db8:ffff::1/128"],
)
def test_blocks_inside_the_allowlist_pass(cidr: str) -> None:
    assert paths(netpol(to_ips(block(cidr), ports=https()))) == []


@pytest.mark.parametrize(
    ("cidr", "outside"),
    [
        ("0.0.0.0/0", "0.0.0.0/5"),
        ("10.0.0.0/7", "11.0.0.0/8"),
        ("192.168.0.0/16", "192.168.0.0/16"),
        ("::/0", "::/3"),
        ("2001:db8::/31", "2001:db9::/32"),
    ],
)
def test_wider_or_other_blocks_widen_and_name_what_is_outside(cidr: str, outside: str) -> None:
    [(path, message)] = findings(netpol(to_ips(block(cidr), ports=https())))
    assert path == "spec.egress[0].to[0].ipBlock.cidr"
    assert f"{cidr} widens egress beyond allowedCIDRs [10.0.0.0/8, 2001:db8::/32]" in message
    assert f"reaches {outside}" in message


def test_an_ipv4_block_is_not_covered_by_ipv6_allowances() -> None:
    v6_only = NetworkPolicyRules(allowed_cidrs=("::/0",))
    assert paths(netpol(to_ips(block("10.0.0.0/8"))), v6_only) == [
        "spec.egress[0].to[0].ipBlock.cidr"
    ]


def test_except_blocks_can_bring_a_wide_block_inside() -> None:
    # 0.0.0.0/0 less everything but 10.0.0.0/8 is exactly 10.0.0.0/8.
    rest = ["0.0.0.0/5", "8.0.0.0/7", "11.0.0.0/8", "12.0.0.0/6", "16.0.0.0/4", "32.0.0.0/3"]
    rest += ["64.0.0.0/2", "128.0.0.0/1"]
    assert paths(netpol(to_ips(block("0.0.0.0/0", *rest), ports=https()))) == []


def test_except_blocks_that_leave_something_outside_still_widen() -> None:
    [(path, message)] = findings(
        netpol(to_ips(block("0.0.0.0/0", "192.168.0.0/16"), ports=https()))
    )
    assert path == "spec.egress[0].to[0].ipBlock.cidr"
    assert "less its except blocks" in message


def test_ipv6_except_blocks() -> None:
    inside = block("2001:db8::/31", "2001:db9::/32")
    outside = block("2001:db8::/31", "2001:db9::/33")
    assert paths(netpol(to_ips(inside, ports=https()))) == []
    [(_, message)] = findings(netpol(to_ips(outside, ports=https())))
    assert "reaches 2001:db9:8000::/33" in message


def test_host_bits_are_ignored_like_the_apiserver_does() -> None:
    assert paths(netpol(to_ips(block("10.1.2.3/16"), ports=https()))) == []


def test_an_invalid_cidr_is_reported() -> None:
    assert findings(netpol(to_ips(block("10.0.0.300/8")))) == [
        ("spec.egress[0].to[0].ipBlock.cidr", "'10.0.0.300/8' is not a valid CIDR")
    ]


# ---------------------------------------------------------------------------------------------
# Ports


def test_a_rule_without_ports_allows_every_port() -> None:
    [(path, message)] = findings(netpol(to_ips(block("10.0.0.0/8"))))
    assert path == "spec.egress[0].ports"
    assert "every port" in message and "allowedPorts [443] (TCP)" in message


@pytest.mark.parametrize(
    ("port", "path", "text"),
    [
        ({"port": 80}, "spec.egress[0].ports[0].port", "allows port 80/TCP"),
        ({"protocol": "UDP", "port": 443}, "spec.egress[0].ports[0].port", "443/UDP"),
        ({"protocol": "SCTP", "port": 443}, "spec.egress[0].ports[0].port", "443/SCTP"),
        ({"port": 440, "endPort": 450}, "spec.egress[0].ports[0].endPort", "440-450/TCP"),
        ({"protocol": "TCP"}, "spec.egress[0].ports[0]", "every TCP port"),
        ({"port": "https"}, "spec.egress[0].ports[0].port", "named port 'https'"),
    ],
)
def test_ports_beyond_the_allowlist_widen(port: dict[str, Any], path: str, text: str) -> None:
    [(found, message)] = findings(netpol(to_ips(block("10.0.0.0/8"), ports=[port])))
    assert found == path
    assert text in message


def test_port_ranges_inside_the_allowlist_pass() -> None:
    rules = NetworkPolicyRules(allowed_cidrs=("10.0.0.0/8",), allowed_ports=(8000, 8001, 8002))
    doc = netpol(to_ips(block("10.0.0.0/8"), ports=[{"port": 8000, "endPort": 8002}]))
    assert paths(doc, rules) == []


def test_no_allowed_ports_means_every_port() -> None:
    rules = NetworkPolicyRules(allowed_cidrs=("10.0.0.0/8",))
    assert paths(netpol(to_ips(block("10.0.0.0/8"))), rules) == []
    assert paths(netpol(to_ips(block("10.0.0.0/8"), ports=[{"port": "https"}])), rules) == []


def test_port_findings_come_once_per_rule() -> None:
    doc = netpol(to_ips(block("10.1.0.0/16"), block("10.2.0.0/16"), ports=[{"port": 22}]))
    assert paths(doc) == ["spec.egress[0].ports[0].port"]


# ---------------------------------------------------------------------------------------------
# Peers: everywhere, namespaces, pods, DNS


def test_an_empty_or_missing_to_allows_everywhere() -> None:
    for rule in ({"ports": https()}, {"to": [], "ports": https()}):
        [(path, message)] = findings(netpol(rule))
        assert path == "spec.egress[0].to"
        assert "every destination" in message


def test_an_empty_to_is_fine_when_the_policy_allows_every_address() -> None:
    everything = NetworkPolicyRules(allowed_cidrs=("0.0.0.0/0", "::/0"), allowed_ports=(443,))
    assert paths(netpol({"ports": https()}), everything) == []
    assert paths(netpol({"ports": [{"port": 80}]}), everything) == ["spec.egress[0].ports[0].port"]


def test_pod_selector_only_peers_stay_in_the_namespace() -> None:
    doc = netpol({"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]})
    assert paths(doc) == []


@pytest.mark.parametrize(
    "selector",
    [
        {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "In",
                    "values": ["team-a", "monitoring", NS],
                }
            ]
        },
    ],
)
def test_namespaces_pinned_by_name_within_the_allowlist_pass(selector: dict[str, Any]) -> None:
    assert paths(netpol({"to": [{"namespaceSelector": selector}]})) == []


def test_namespaces_outside_the_allowlist_widen() -> None:
    selector = {"matchLabels": {"kubernetes.io/metadata.name": "payments"}}
    [(path, message)] = findings(netpol({"to": [{"namespaceSelector": selector}]}))
    assert path == "spec.egress[0].to[0].namespaceSelector"
    assert "payments" in message and "allowedNamespaces [monitoring, team-*]" in message


@pytest.mark.parametrize(
    "selector",
    [
        {},
        {"matchLabels": {"team": "monitoring"}},
        {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}
            ]
        },
    ],
)
def test_namespace_selectors_by_other_labels_widen(selector: dict[str, Any]) -> None:
    [(path, message)] = findings(netpol({"to": [{"namespaceSelector": selector}]}))
    assert path == "spec.egress[0].to[0].namespaceSelector"
    assert "kubernetes.io/metadata.name In" in message


def dns_peer() -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }


def test_dns_to_kube_dns_is_within_an_allowlist_that_allows_dns() -> None:
    doc = netpol({"to": [dns_peer()], "ports": [{"protocol": "UDP", "port": 53}]})
    assert paths(doc) == []
    no_dns = NetworkPolicyRules(allow_dns=False)
    assert paths(doc, no_dns) == ["spec.egress[0].to[0].namespaceSelector"]


def test_kube_dns_on_other_ports_widens() -> None:
    doc = netpol({"to": [dns_peer()], "ports": [{"port": 8080}]})
    [(path, message)] = findings(doc)
    assert path == "spec.egress[0].ports[0].port"
    assert "only DNS" in message


def test_ingress_only_policies_are_not_judged() -> None:
    doc = netpol(to_ips(block("0.0.0.0/0")), policyTypes=["Ingress"])
    assert paths(doc) == []
    implicit = netpol()
    del implicit["spec"]["policyTypes"], implicit["spec"]["egress"]
    assert paths(implicit) == []


def test_a_deny_all_egress_policy_is_fine() -> None:
    assert paths(netpol()) == []


def test_every_widening_rule_is_reported_with_its_path() -> None:
    doc = netpol(
        to_ips(block("10.0.0.0/8"), ports=https()),
        to_ips(block("0.0.0.0/0"), ports=https()),
        {"ports": https()},
        {"to": [{"namespaceSelector": {}}]},
    )
    assert paths(doc) == [
        "spec.egress[1].to[0].ipBlock.cidr",
        "spec.egress[2].to",
        "spec.egress[3].to[0].namespaceSelector",
    ]


# ---------------------------------------------------------------------------------------------
# evaluate(): NetworkPolicy documents


def policy(
    name: str = "prod",
    mode: str = "Enforce",
    match: dict[str, Any] | None = None,
    namespace: str | None = None,
    **network_policy: Any,
) -> CompiledPolicy:
    doc: dict[str, Any] = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "MLPolicy" if namespace else "ClusterMLPolicy",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "spec": {
            "mode": mode,
            "match": match if match is not None else {},
            "egress": {"networkPolicy": network_policy},
        },
    }
    return compile_policy(parse_resource(doc))  # type: ignore[arg-type]


GOVERNED = {"namespaceSelector": {"matchLabels": {"mlgate.io/governed": "true"}}}


def test_evaluate_judges_network_policies_per_policy_and_mode() -> None:
    enforce = policy("strict", allowedCIDRs=["10.0.0.0/8"], allowedPorts=[443])
    warn = policy("loose", "Warn", allowedCIDRs=["0.0.0.0/0"], allowedPorts=[443])
    wide = netpol(to_ips(block("192.168.0.0/16"), ports=https()))
    decision = evaluate((enforce, warn), wide, Facts(now=NOW))
    assert not decision.allowed
    assert decision.matched_policies == ("strict", "loose")
    [violation] = decision.violations
    assert (violation.policy, violation.mode) == ("strict", Mode.ENFORCE)
    assert violation.atlas == ("AML.T0025", "AML.T0024.002")
    only_warn = evaluate((warn,), netpol(to_ips(block("::/0"), ports=https())), Facts(now=NOW))
    assert only_warn.allowed and [v.mode for v in only_warn.violations] == [Mode.WARN]


def test_evaluate_scopes_network_policies_by_namespace() -> None:
    governed = policy(match=GOVERNED, allowedCIDRs=["10.0.0.0/8"])
    wide = netpol(to_ips(block("0.0.0.0/0")))
    facts = Facts(now=NOW, namespace_labels={})
    assert evaluate((governed,), wide, facts).allowed
    labelled = Facts(now=NOW, namespace_labels={"mlgate.io/governed": "true"})
    assert not evaluate((governed,), wide, labelled).allowed
    assert evaluate(
        (governed,), netpol(to_ips(block("0.0.0.0/0")), namespace="kube-system"), labelled
    ).allowed


def test_evaluate_ignores_network_policies_where_no_policy_has_an_allowlist() -> None:
    images_only = compile_policy(
        parse_resource(  # type: ignore[arg-type]
            {
                "apiVersion": "mlgate.io/v1alpha1",
                "kind": "ClusterMLPolicy",
                "metadata": {"name": "images"},
                "spec": {"images": {"requireDigest": True}},
            }
        )
    )
    decision = evaluate((images_only,), netpol(to_ips(block("0.0.0.0/0"))), Facts(now=NOW))
    assert decision.allowed and decision.matched_policies == ()


def test_an_mlpolicy_judges_only_its_own_namespace() -> None:
    own = policy("team", namespace="team-a", allowedCIDRs=["10.0.0.0/8"])
    wide = to_ips(block("0.0.0.0/0"))
    assert not evaluate((own,), netpol(wide, namespace="team-a"), Facts(now=NOW)).allowed
    assert evaluate((own,), netpol(wide, namespace="team-b"), Facts(now=NOW)).allowed


# ---------------------------------------------------------------------------------------------
# Intersection and the managed NetworkPolicy


def test_intersection_is_the_most_restrictive_combination() -> None:
    a = NetworkPolicyRules(
        allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"),
        allowed_ports=(443, 8443),
        allowed_namespaces=("team-*", "monitoring"),
    )
    b = NetworkPolicyRules(
        manage=False,
        allowed_cidrs=("10.1.0.0/16", "172.16.0.0/12", "2001:db8:5::/48"),
        allowed_ports=(443, 9000),
        allowed_namespaces=("team-a", "monitoring", "logging"),
    )
    effective = egress.intersect([("a", a), ("b", b)], ["team-a", "team-b", "other"])
    assert effective == egress.EffectiveEgress(
        allow_dns=True,
        cidrs=("10.1.0.0/16", "2001:db8:5::/48"),
        ports=(443,),
        namespaces=("monitoring", "team-a"),
        policies=("a", "b"),
        managing=("a",),
    )


def test_intersection_of_dns_and_ports() -> None:
    any_port = NetworkPolicyRules(allowed_cidrs=("10.0.0.0/8",))
    no_dns = NetworkPolicyRules(allow_dns=False, allowed_cidrs=("10.0.0.0/8",), allowed_ports=(22,))
    assert egress.intersect([("a", any_port)]).ports is None
    both = egress.intersect([("a", any_port), ("b", no_dns)])
    assert both.ports == (22,) and not both.allow_dns
    disjoint = egress.intersect(
        [
            ("a", no_dns),
            ("b", NetworkPolicyRules(allowed_cidrs=("10.0.0.0/8",), allowed_ports=(443,))),
        ]
    )
    assert disjoint.ports == ()


def test_intersection_of_disjoint_cidrs_allows_no_address() -> None:
    a = NetworkPolicyRules(allowed_cidrs=("10.0.0.0/8",))
    b = NetworkPolicyRules(allowed_cidrs=("192.168.0.0/16",))
    assert egress.intersect([("a", a), ("b", b)]).cidrs == ()


def test_intersection_needs_an_allowlist() -> None:
    with pytest.raises(ValueError, match="at least one"):
        egress.intersect([])


def test_namespace_egress_needs_a_managing_policy_in_scope() -> None:
    manages = policy("manages", match=GOVERNED, allowedCIDRs=["10.0.0.0/8"])
    limits = policy("limits", manage=False, allowedCIDRs=["10.1.0.0/16"])
    governed = {"mlgate.io/governed": "true"}
    assert egress.namespace_egress((limits,), NS, governed) is None
    assert egress.namespace_egress((manages, limits), NS, {}) is None
    effective = egress.namespace_egress((manages, limits), NS, governed)
    assert effective is not None
    assert effective.cidrs == ("10.1.0.0/16",)
    assert (effective.policies, effective.managing) == (("manages", "limits"), ("manages",))


def test_managed_network_policy_shape() -> None:
    effective = egress.EffectiveEgress(
        allow_dns=True,
        cidrs=("10.0.0.0/8", "2001:db8::/32"),
        ports=(443,),
        namespaces=("monitoring",),
        policies=("a", "b"),
        managing=("a",),
    )
    owner = {"apiVersion": "mlgate.io/v1alpha1", "kind": "ClusterMLPolicy", "name": "a", "uid": "u"}
    assert egress.managed_network_policy(NS, effective, [owner]) == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "mlgate-egress",
            "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "mlgate"},
            "annotations": {"mlgate.io/egress-policies": "a,b"},
            "ownerReferences": [owner],
        },
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [dns_peer()],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
                {
                    "to": [
                        {"ipBlock": {"cidr": "10.0.0.0/8"}},
                        {"ipBlock": {"cidr": "2001:db8::/32"}},
                    ],
                    "ports": [{"protocol": "TCP", "port": 443}],
                },
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/metadata.name",
                                        "operator": "In",
                                        "values": ["monitoring"],
                                    }
                                ]
                            }
                        }
                    ]
                },
            ],
        },
    }


def test_managed_network_policy_denies_everything_when_nothing_is_allowed() -> None:
    nothing = egress.intersect([("a", NetworkPolicyRules(allow_dns=False))])
    body = egress.managed_network_policy(NS, nothing)
    assert body["spec"]["egress"] == [] and "ownerReferences" not in body["metadata"]
    no_port = egress.intersect(
        [
            (
                "a",
                NetworkPolicyRules(
                    allow_dns=False, allowed_cidrs=("10.0.0.0/8",), allowed_ports=(1,)
                ),
            ),
            ("b", NetworkPolicyRules(allowed_cidrs=("10.0.0.0/8",), allowed_ports=(2,))),
        ]
    )
    assert egress.managed_network_policy(NS, no_port)["spec"]["egress"] == []


def test_the_managed_policy_never_widens_its_own_allowlists() -> None:
    a = NetworkPolicyRules(
        allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"),
        allowed_ports=(443,),
        allowed_namespaces=("team-*",),
    )
    b = NetworkPolicyRules(allowed_cidrs=("10.0.0.0/9", "::/0"), allowed_namespaces=("team-a",))
    effective = egress.intersect([("a", a), ("b", b)], ["team-a", "team-b"])
    body = egress.managed_network_policy(NS, effective)
    for rules in (a, b):
        assert egress.widening_findings(body, rules, NS) == []


def test_awaiting_network_policy_says_to_retry() -> None:
    finding = egress.awaiting_network_policy(NS)
    assert finding.rule is Rule.EGRESS_NETWORK_POLICY and finding.path == "metadata.namespace"
    assert "mlgate-egress does not exist yet" in finding.message and "retry" in finding.message


@pytest.mark.parametrize(
    "egress_rules",
    [
        "everything",
        [None, 7, "x"],
        [{"to": "everywhere", "ports": "all"}],
        [{"to": [None, {"ipBlock": None}], "ports": [None, {"port": 443.0}, {"port": True}]}],
        [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": "nope"}}], "ports": [{"port": 443}]}],
        [{"to": [{"namespaceSelector": {"matchExpressions": [None, {"key": 1}]}}]}],
    ],
)
def test_malformed_network_policies_are_judged_not_crashed_on(egress_rules: Any) -> None:
    doc = netpol()
    doc["spec"]["egress"] = egress_rules
    assert isinstance(egress.widening_findings(doc, RULES, NS), list)


def test_unverifiable_ports_and_empty_peers_widen() -> None:
    doc = netpol(to_ips(block("10.0.0.0/8"), {}, ports=[{"port": 443.0}]))
    assert paths(doc) == ["spec.egress[0].to[1]", "spec.egress[0].ports[0].port"]
