"""GPUs in use and reserved per namespace, for the namespace quota.

Pods count as soon as they exist (pending or running). A workload admitted by the webhook is
reserved at once, before its controller has created pods, so two concurrent admissions cannot
both slip under the quota. Its pods then consume the reservation instead of adding to it: a pod
belongs to a reserved workload when its controlling owner is named after the workload (`job-x`
for Job `job-x`, `web-5d8f` for Deployment `web`), the naming every workload controller uses.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Pod:
    owner: str  # name of the controlling owner, "" for a bare pod
    gpus: int


@dataclass(slots=True)
class _Reservation:
    demand: int
    expires: float


def _belongs(owner: str, workload: str) -> bool:
    return owner == workload or owner.startswith(f"{workload}-")


@dataclass
class GpuLedger:
    reservation_ttl: float = 600.0  # seconds a reservation waits for its pods
    _pods: dict[str, dict[str, _Pod]] = field(default_factory=lambda: defaultdict(dict))
    _pod_namespace: dict[str, str] = field(default_factory=dict)
    _reserved: dict[str, dict[str, _Reservation]] = field(default_factory=lambda: defaultdict(dict))

    def pod_seen(self, uid: str, namespace: str, owner: str, gpus: int) -> None:
        self.pod_gone(uid)
        if gpus > 0:
            self._pods[namespace][uid] = _Pod(owner, gpus)
            self._pod_namespace[uid] = namespace

    def pod_gone(self, uid: str) -> None:
        namespace = self._pod_namespace.pop(uid, None)
        if namespace is not None:
            self._pods[namespace].pop(uid, None)

    def reserve(self, namespace: str, workload: str, demand: int, now: float) -> None:
        """Reserve a workload's whole GPU demand; a later admission of it replaces the amount."""
        if demand > 0:
            self._reserved[namespace][workload] = _Reservation(demand, now + self.reservation_ttl)
        else:
            self._reserved[namespace].pop(workload, None)

    def release(self, namespace: str, workload: str) -> None:
        self._reserved[namespace].pop(workload, None)

    def _owner_of(self, pod: _Pod, names: list[str]) -> str | None:
        # Longest name first, so pods of `train-big` are not charged to `train`.
        for name in names:
            if _belongs(pod.owner, name):
                return name
        return None

    def usage(self, namespace: str, now: float, exclude: str | None = None) -> int:
        """GPUs used or reserved in a namespace, leaving out workload `exclude` entirely."""
        reserved = self._reserved.get(namespace, {})
        for name in [n for n, r in reserved.items() if r.expires <= now]:
            del reserved[name]
        names = sorted([*reserved, *([exclude] if exclude else [])], key=len, reverse=True)
        consumed: dict[str, int] = defaultdict(int)
        total = 0
        for pod in self._pods.get(namespace, {}).values():
            owner = self._owner_of(pod, names) if pod.owner else None
            if owner is None:
                total += pod.gpus
            elif owner != exclude:
                consumed[owner] += pod.gpus
        for name, r in reserved.items():
            if name != exclude:
                total += max(r.demand, consumed[name])
        return total
