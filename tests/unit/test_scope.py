"""Which policies govern a workload: namespaces, namespace labels, kinds, workload labels."""

from __future__ import annotations

from typing import Any

import pytest

from mlgate.api.compile import compile_policy, parse_resource
from mlgate.engine.policy import CompiledPolicy, LabelSelector
from mlgate.engine.scope import governing, namespace_in_scope, selector_matches, workload_in_scope

GOVERNED = {"mlgate.io/governed": "true", "kubernetes.io/metadata.name": "team-a"}


def policy(
    match: dict[str, Any] | None = None, name: str = "p", namespace: str | None = None
) -> CompiledPolicy:
    doc: dict[str, Any] = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "MLPolicy" if namespace else "ClusterMLPolicy",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "spec": {"match": match or {}, "egress": {"allowHostNetwork": False}},
    }
    return compile_policy(parse_resource(doc))  # type: ignore[arg-type]


def in_scope(match: dict[str, Any], namespace: str, labels: dict[str, str] | None = None) -> bool:
    return namespace_in_scope(policy(match).match, namespace, labels)


# --- label selectors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (LabelSelector(), {}, True),
        (LabelSelector({"team": "a"}), {"team": "a", "x": "y"}, True),
        (LabelSelector({"team": "a"}), {"team": "b"}, False),
        (LabelSelector({"team": "a"}), {}, False),
        (LabelSelector({"team": ""}), {}, False),
        (LabelSelector({"team": ""}), {"team": ""}, True),
        (
            LabelSelector(match_expressions=(("tier", "In", frozenset({"gpu", "tpu"})),)),
            {"tier": "gpu"},
            True,
        ),
        (
            LabelSelector(match_expressions=(("tier", "In", frozenset({"gpu"})),)),
            {"tier": "cpu"},
            False,
        ),
        (LabelSelector(match_expressions=(("tier", "In", frozenset({"gpu"})),)), {}, False),
        (LabelSelector(match_expressions=(("tier", "NotIn", frozenset({"dev"})),)), {}, True),
        (
            LabelSelector(match_expressions=(("tier", "NotIn", frozenset({"dev"})),)),
            {"tier": "dev"},
            False,
        ),
        (LabelSelector(match_expressions=(("tier", "Exists", frozenset()),)), {"tier": ""}, True),
        (LabelSelector(match_expressions=(("tier", "Exists", frozenset()),)), {}, False),
        (LabelSelector(match_expressions=(("tier", "DoesNotExist", frozenset()),)), {}, True),
        (
            LabelSelector(match_expressions=(("tier", "DoesNotExist", frozenset()),)),
            {"tier": "x"},
            False,
        ),
        (
            LabelSelector({"a": "1"}, (("b", "Exists", frozenset()),)),
            {"a": "1"},
            False,  # labels and expressions are AND-ed
        ),
    ],
)
def test_selector_matches(selector: LabelSelector, labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(selector, labels) is expected


# --- namespaces ------------------------------------------------------------------------------


def test_empty_match_governs_every_namespace() -> None:
    assert in_scope({}, "team-a", {})
    assert in_scope({}, "default", None)


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        ("team-a", True),
        ("team-", True),
        ("ml-prod", True),
        ("ateam-a", False),
        ("team", False),
        ("ml-prod-2", False),
    ],
)
def test_namespace_globs(namespace: str, expected: bool) -> None:
    assert in_scope({"namespaces": ["team-*", "ml-prod"]}, namespace, {}) is expected


def test_exclusions_win() -> None:
    match = {
        "namespaces": ["team-*"],
        "namespaceSelector": {"matchLabels": {"mlgate.io/governed": "true"}},
        "excludeNamespaces": ["team-sandbox*"],
    }
    assert in_scope(match, "team-a", GOVERNED)
    assert not in_scope(match, "team-sandbox", GOVERNED)
    assert not in_scope(match, "team-sandbox-2", GOVERNED)
    assert not in_scope({"excludeNamespaces": ["team-a"]}, "team-a", GOVERNED)


def test_namespace_selector() -> None:
    match = {"namespaceSelector": {"matchLabels": {"mlgate.io/governed": "true"}}}
    assert in_scope(match, "team-a", GOVERNED)
    assert not in_scope(match, "team-a", {"mlgate.io/governed": "false"})
    assert not in_scope(match, "team-a", {})


def test_namespace_selector_expressions() -> None:
    match = {
        "namespaceSelector": {
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev", "sandbox"]}]
        }
    }
    assert in_scope(match, "prod", {"env": "prod"})
    assert in_scope(match, "prod", {})
    assert not in_scope(match, "dev", {"env": "dev"})


def test_names_and_selector_are_or_ed() -> None:
    match = {
        "namespaces": ["ml-prod"],
        "namespaceSelector": {"matchLabels": {"mlgate.io/governed": "true"}},
    }
    assert in_scope(match, "ml-prod", {})
    assert in_scope(match, "team-a", GOVERNED)
    assert not in_scope(match, "team-b", {})


def test_unknown_namespace_labels_count_as_matching() -> None:
    # offline `mlgate check`: it must not pass a manifest the cluster would deny
    match = {"namespaceSelector": {"matchLabels": {"mlgate.io/governed": "true"}}}
    assert in_scope(match, "team-a", None)
    assert not in_scope({"namespaces": ["ml-prod"]}, "team-a", None)


def test_unset_namespace_counts_as_governed() -> None:
    assert in_scope({"namespaces": ["ml-prod"]}, "", {})
    assert in_scope({"excludeNamespaces": ["*"]}, "", {})
    assert in_scope({"namespaceSelector": {"matchLabels": {"a": "b"}}}, "", None)


def test_ml_policy_only_applies_in_its_own_namespace() -> None:
    p = policy({"namespaces": ["*"]}, namespace="team-a")
    assert p.match.own_namespace == "team-a"
    assert namespace_in_scope(p.match, "team-a", {})
    assert not namespace_in_scope(p.match, "team-b", {})
    assert not namespace_in_scope(p.match, "team-a-x", {})
    # its own selector still narrows it
    q = policy({"namespaceSelector": {"matchLabels": {"x": "y"}}}, namespace="team-a")
    assert not namespace_in_scope(q.match, "team-a", {})


# --- workloads -------------------------------------------------------------------------------


def test_kinds() -> None:
    match = policy({"kinds": ["PyTorchJob", "InferenceService"]}).match
    assert workload_in_scope(match, "PyTorchJob", {})
    assert not workload_in_scope(match, "Deployment", {})
    assert not workload_in_scope(match, "pytorchjob", {})
    assert workload_in_scope(policy().match, "Deployment", {})


def test_workload_selector() -> None:
    match = policy({"selector": {"matchLabels": {"app.kubernetes.io/part-of": "llm"}}}).match
    assert workload_in_scope(match, "Deployment", {"app.kubernetes.io/part-of": "llm"})
    assert not workload_in_scope(match, "Deployment", {})


def test_governing_keeps_order_and_filters() -> None:
    everything = policy(name="everything")
    prod = policy({"namespaces": ["ml-prod"]}, name="prod")
    training = policy({"kinds": ["PyTorchJob"]}, name="training")
    team_b = policy(name="team-b-extra", namespace="team-b")
    policies = (everything, prod, training, team_b)
    names = [p.name for p in governing(policies, "ml-prod", {}, "Deployment", {})]
    assert names == ["everything", "prod"]
    names = [p.name for p in governing(policies, "team-b", {}, "PyTorchJob", {})]
    assert names == ["everything", "training", "team-b/team-b-extra"]
