"""Which policies govern a workload: namespace, kind and label selection."""

from __future__ import annotations

import re
from collections.abc import Mapping

from mlgate.engine.policy import CompiledPolicy, LabelSelector, Match

# Every admission scopes every policy several times (rules, pinning, egress, llm rules): plain
# loops and empty-tuple checks here, rather than generators over what is usually empty.


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for key, operator, values in selector.match_expressions:
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _any_glob(globs: tuple[re.Pattern[str], ...], name: str) -> bool:
    return any(g.fullmatch(name) for g in globs)


def namespace_in_scope(
    match: Match, namespace: str, namespace_labels: Mapping[str, str] | None
) -> bool:
    """Whether a namespace is governed by `match`.

    An empty namespace or unknown labels (offline checks) count as governed: a check that
    cannot tell must not pass a manifest the cluster would deny.
    """
    if match.own_namespace is not None and namespace and namespace != match.own_namespace:
        return False
    if namespace and match.exclude_namespaces and _any_glob(match.exclude_namespaces, namespace):
        return False
    if not match.namespaces and match.namespace_selector is None:
        return True
    if match.namespaces and (not namespace or _any_glob(match.namespaces, namespace)):
        return True
    if match.namespace_selector is not None:
        return namespace_labels is None or selector_matches(
            match.namespace_selector, namespace_labels
        )
    return False


def workload_in_scope(match: Match, kind: str, labels: Mapping[str, str]) -> bool:
    if match.kinds and kind not in match.kinds:
        return False
    return match.selector is None or selector_matches(match.selector, labels)


def governing(
    policies: tuple[CompiledPolicy, ...],
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    kind: str,
    labels: Mapping[str, str],
) -> tuple[CompiledPolicy, ...]:
    return tuple(
        [
            p
            for p in policies
            # The kind and labels first: cheaper, and policies for other kinds stop there.
            if workload_in_scope(p.match, kind, labels)
            and namespace_in_scope(p.match, namespace, namespace_labels)
        ]
    )
