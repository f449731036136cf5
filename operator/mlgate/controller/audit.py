"""The background audit: existing workloads judged by the same engine, counted per policy.

Admission only sees changes; a policy added or tightened later, an approval that expired or was
revoked, leave running workloads that would now be refused. The leader re-judges every supported
workload periodically and writes the count into each policy's `status.violations`.

Signatures are not re-verified here (that is registry traffic for every image of the cluster);
`images.signature` findings come from admission only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlgate.api.models import API_VERSION
from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.cluster.related import related_objects
from mlgate.controller.state import PolicyState
from mlgate.engine.egress import NETWORKING_API_VERSION
from mlgate.engine.evaluate import evaluate
from mlgate.engine.policy import CompiledPolicy, Facts
from mlgate.engine.related import contract_kinds
from mlgate.engine.workloads import SUPPORTED, KindSpec

log = logging.getLogger("mlgate.audit")


def _controlled(item: Mapping[str, Any]) -> bool:
    """Pods and ReplicaSets made by a controller are judged through their owner."""
    refs = (item.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, Mapping) and r.get("controller") for r in refs)


def count_violations(
    policies: tuple[CompiledPolicy, ...],
    workloads: Iterator[Mapping[str, Any]],
    facts_for: Callable[[str], Facts],
    exempt: frozenset[str],
) -> Counter[str]:
    """Violations per policy name over `workloads`: pure, so it is tested without a cluster."""
    counts: Counter[str] = Counter({p.name: 0 for p in policies})
    for item in workloads:
        namespace = str((item.get("metadata") or {}).get("namespace") or "")
        if namespace in exempt or _controlled(item):
            continue
        for violation in evaluate(policies, item, facts_for(namespace)).violations:
            counts[violation.policy] += 1
    return counts


@dataclass(frozen=True)
class Related:
    """The llm rules' facts of the whole cluster, by namespace; cluster-scoped ones go to all."""

    by_namespace: Mapping[str, tuple[Mapping[str, Any], ...]]
    cluster: tuple[Mapping[str, Any], ...]

    @classmethod
    def of_objects(cls, objects: tuple[Mapping[str, Any], ...]) -> Related:
        grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for obj in objects:
            grouped[str((obj.get("metadata") or {}).get("namespace") or "")].append(obj)
        cluster = tuple(grouped.pop("", ()))
        return cls({ns: tuple(objs) for ns, objs in grouped.items()}, cluster)

    def of(self, namespace: str) -> tuple[Mapping[str, Any], ...]:
        return (*self.by_namespace.get(namespace, ()), *self.cluster)


def _policy_path(name: str) -> str:
    namespace, _, short = name.rpartition("/")
    plural = "mlpolicies" if namespace else "clustermlpolicies"
    return resource_path(API_VERSION, plural, namespace or None, short) + "/status"


@dataclass
class Auditor:
    client: KubeClient
    state: PolicyState
    own_namespace: str
    leads: Callable[[], bool]
    interval: float = 300.0

    async def _items(self, spec: KindSpec) -> list[dict[str, Any]]:
        api_version = f"{spec.group}/{spec.versions[0]}" if spec.group else spec.versions[0]
        return await self._list(api_version, spec.plural, spec.kind)

    async def _list(self, api_version: str, plural: str, kind: str) -> list[dict[str, Any]]:
        try:
            items = await self.client.list(resource_path(api_version, plural))
        except ApiError as exc:
            if exc.status == 404:  # that ML operator is not installed here
                return []
            raise
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def _facts(self, namespace: str, related: Related | None = None) -> Facts:
        return Facts(
            now=datetime.now(UTC),
            namespace_labels=self.state.namespace_labels(namespace) or {},
            approvals=self.state.snapshot().approvals,
            related=None if related is None else related.of(namespace),
        )

    async def _related(self, policies: tuple[CompiledPolicy, ...]) -> Related | None:
        """Every namespace's llm facts at once, when a policy has llm rules: an LLM whose
        guardrail was deleted after admission is reported here."""
        if not any(p.llm is not None for p in policies):
            return None
        return Related.of_objects(await related_objects(self.client, "", contract_kinds(policies)))

    async def audit_once(self) -> Counter[str]:
        policies = self.state.snapshot().policies
        related = await self._related(policies)
        workloads = [item for spec in SUPPORTED for item in await self._items(spec)]
        # NetworkPolicies admitted while their namespace was out of scope may widen egress now.
        workloads += await self._list(NETWORKING_API_VERSION, "networkpolicies", "NetworkPolicy")
        exempt = frozenset({"kube-system", self.own_namespace})
        counts = count_violations(
            policies, iter(workloads), lambda ns: self._facts(ns, related), exempt
        )
        for name, count in counts.items():
            try:
                await self.client.patch(_policy_path(name), {"status": {"violations": count}})
            except ApiError as exc:
                log.warning("could not record audit result on policy %s: %s", name, exc)
        log.info("audit: %d workloads, violations per policy: %s", len(workloads), dict(counts))
        return counts

    async def run(self, after: asyncio.Event) -> None:
        await after.wait()
        while True:
            if self.leads():
                try:
                    await self.audit_once()
                except (ApiError, OSError, TimeoutError) as exc:
                    log.warning("audit pass failed, retrying in %gs: %s", self.interval, exc)
            await asyncio.sleep(self.interval)
