"""What this replica's watches see of GPU use: pods' extended resources and who owns whom.

This is a cache of facts, not the record of reservations (those live in the apiserver, see
`gpu_budget`). Every extended resource of every live pod is kept, whatever the policies count,
so a policy that starts counting another resource needs no rebuild. Workload objects are kept
only as links to their controlling owner, so a pod can be charged to its root owner's
reservation (Pod -> ReplicaSet -> Deployment).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlgate.engine.gpu_usage import Key, ObservedPod
from mlgate.engine.workloads import group_of

MAX_CHAIN = 16  # owner chains are a few links long; a loop or a forged chain stops here


def controller_of(meta: Mapping[str, Any]) -> Key | None:
    """The object's controlling owner, from its ownerReferences."""
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            api_version, kind, name = ref.get("apiVersion"), ref.get("kind"), ref.get("name")
            if isinstance(api_version, str) and isinstance(kind, str) and isinstance(name, str):
                return (group_of(api_version), kind, name)
    return None


@dataclass(slots=True)
class _Pod:
    namespace: str
    name: str
    amounts: Mapping[str, int]


@dataclass
class GpuLedger:
    _pods: dict[str, _Pod] = field(default_factory=dict)  # by uid
    _by_namespace: dict[str, set[str]] = field(default_factory=dict)
    # (namespace, object) -> its controlling owner, or None for a root
    _owners: dict[tuple[str, Key], Key | None] = field(default_factory=dict)

    def pod_seen(
        self, uid: str, namespace: str, name: str, owner: Key | None, amounts: Mapping[str, int]
    ) -> None:
        self.pod_gone(uid)
        self._owners[(namespace, ("", "Pod", name))] = owner
        if any(amounts.values()):
            self._pods[uid] = _Pod(namespace, name, dict(amounts))
            self._by_namespace.setdefault(namespace, set()).add(uid)

    def pod_gone(self, uid: str, *, deleted: bool = False) -> None:
        pod = self._pods.pop(uid, None)
        if pod is not None:
            self._by_namespace.get(pod.namespace, set()).discard(uid)
            if deleted:
                self._owners.pop((pod.namespace, ("", "Pod", pod.name)), None)

    def object_seen(self, namespace: str, key: Key, owner: Key | None) -> None:
        self._owners[(namespace, key)] = owner

    def object_gone(self, namespace: str, key: Key) -> None:
        self._owners.pop((namespace, key), None)

    def known(self, namespace: str, key: Key) -> bool:
        return (namespace, key) in self._owners

    def owner(self, namespace: str, key: Key) -> Key | None:
        return self._owners.get((namespace, key))

    def chain(self, namespace: str, key: Key) -> tuple[Key, ...]:
        """`key` and its controlling owners as far as this replica has seen them."""
        links = [key]
        while len(links) < MAX_CHAIN:
            parent = self._owners.get((namespace, links[-1]))
            if parent is None or parent in links:
                break
            links.append(parent)
        return tuple(links)

    def pods(self, namespace: str) -> list[ObservedPod]:
        found = []
        for uid in self._by_namespace.get(namespace, ()):
            pod = self._pods[uid]
            found.append(ObservedPod(self.chain(namespace, ("", "Pod", pod.name)), pod.amounts))
        return found

    def namespaces(self) -> list[str]:
        return [ns for ns, uids in self._by_namespace.items() if uids]
