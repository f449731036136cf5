"""`mlgate check --print-egress-policy`: the NetworkPolicies `mlgate run` would keep, from the
same inputs `check` reads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from mlgate.check import CheckRequest, Resources, first_pass, meta_field, one_per_file
from mlgate.engine import egress
from mlgate.engine.evaluate import ALWAYS_EXEMPT
from mlgate.manifests import InputError, Source, documents
from mlgate.spool import Spool


@dataclass(frozen=True, slots=True)
class EgressOutcome:
    network_policies: tuple[dict[str, Any], ...] = ()
    unmanaged: tuple[str, ...] = ()  # namespaces no policy keeps a NetworkPolicy in
    errors: tuple[str, ...] = ()


def _namespaces(
    sources: Iterable[Source], found: Resources, spool: Spool
) -> tuple[set[str], list[InputError]]:
    """Namespaces the inputs name: the manifests' and the MLPolicies'."""
    names = {key[1] for key in found.policies if key[1]}
    errors: list[InputError] = []
    for source in sources:
        for doc in documents(source, spool=spool):
            if isinstance(doc, InputError):
                errors.append(doc)
            elif meta_field(doc.obj, "namespace"):
                names.add(meta_field(doc.obj, "namespace"))
    return names, errors


def egress_policies(request: CheckRequest, stdin: TextIO) -> EgressOutcome:
    """The NetworkPolicy mlgate-egress that `mlgate run` would keep in `request.namespace`, or
    in each namespace the inputs name. Namespace labels are unknown offline, so policies that
    select namespaces by label count as covering them, as `check` assumes for workloads."""
    with Spool() as spool:
        manifest_sources, found, problems = first_pass(request, stdin, spool)
        names, errors = _namespaces(manifest_sources, found, spool)
    problems += errors
    # Globs in allowedNamespaces resolve against every namespace the inputs name.
    known = names | ({request.namespace} if request.namespace else set())
    targets = {request.namespace} if request.namespace else names
    if not targets and not problems:
        problems.append(
            InputError("--print-egress-policy: no namespace to generate for; pass --namespace NS")
        )
    if problems:
        return EgressOutcome(errors=one_per_file(problems))
    policies = tuple(found.policies.values())
    generated, unmanaged = [], []
    for namespace in sorted(targets):
        effective = (
            None
            if namespace in ALWAYS_EXEMPT
            else egress.namespace_egress(policies, namespace, None, known)
        )
        if effective is None:
            unmanaged.append(namespace)
        else:
            generated.append(egress.managed_network_policy(namespace, effective))
    return EgressOutcome(tuple(generated), tuple(unmanaged))
