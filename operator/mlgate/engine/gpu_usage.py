"""A namespace's GPU use from its reservations and its pods: one charge per GPU.

Reservations are keyed by the object admitted (group, kind, name). A pod is charged to the
nearest object up its chain of controlling owners (itself first) that holds a reservation, so a
Deployment's ReplicaSet and Pods fill the Deployment's reservation instead of adding to it; a
pod with no reserved owner is charged by itself. Each charge counts as the larger of what is
reserved and what its pods use, resource by resource.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mlgate.engine.gpu import is_extended
from mlgate.engine.policy import CompiledPolicy, GpuLoad, GpuRules, GpuUsage

# (group, kind, name) of an object in the namespace; "" is the core group.
Key = tuple[str, str, str]


def describe(key: Key) -> str:
    group, kind, name = key
    return f"{kind}{'.' + group if group else ''} {name}"


@dataclass(frozen=True, slots=True)
class ObservedPod:
    chain: tuple[Key, ...]  # the pod, its controlling owner, that owner's owner, ...
    amounts: Mapping[str, int]


def _add(into: dict[str, int], amounts: Mapping[str, int]) -> None:
    for resource, n in amounts.items():
        into[resource] = into.get(resource, 0) + n


def charge_of(chain: Sequence[Key], reserved: Mapping[Key, object]) -> Key:
    """The key a pod (or any object) with this owner chain is charged to."""
    return next((k for k in chain if k in reserved), chain[-1])


@dataclass(frozen=True, slots=True)
class Records:
    """What admissions recorded durably for a namespace.

    `charges` are reservations: GPUs held for an object (and its pods). `members` are pods
    admitted inside an owner's reservation, with their owner chain: they count as that owner's
    pods until this replica's watch shows them, so two replicas admitting pods into the same
    reservation at once cannot both see room for theirs.
    """

    charges: Mapping[Key, Mapping[str, int]]
    members: Mapping[Key, tuple[tuple[Key, ...], Mapping[str, int]]] = field(default_factory=dict)


def loads(
    pods: Iterable[ObservedPod], records: Records, leave_out: Key | None = None
) -> dict[Key, GpuLoad]:
    """Every charge in the namespace; pods below `leave_out` (the workload being judged) are
    left out, since the workload's own demand replaces them."""
    charges = records.charges
    observed: dict[Key, dict[str, int]] = {}
    seen: set[Key] = set()
    for pod in pods:
        seen.add(pod.chain[0])
        if leave_out is not None and leave_out in pod.chain:
            continue
        _add(observed.setdefault(charge_of(pod.chain, charges), {}), pod.amounts)
    for key, (owners, amounts) in records.members.items():
        chain = (key, *owners)
        if key in seen or (leave_out is not None and leave_out in chain):
            continue  # the watch shows the pod itself (or it is being judged)
        _add(observed.setdefault(charge_of(chain, charges), {}), amounts)
    keys = [*charges, *(k for k in observed if k not in charges)]
    return {k: GpuLoad(dict(charges.get(k, {})), observed.get(k, {})) for k in keys}


def usage_for(
    key: Key,
    owners: Sequence[Key],
    pods: Iterable[ObservedPod],
    records: Records,
    demand: Mapping[str, int],
) -> tuple[GpuUsage, Key | None]:
    """What the workload `key` (whose controlling owners up the chain are `owners`) is judged
    against, and the reserved owner it may be charged to (None: it is charged by itself)."""
    anchor = next((k for k in owners if k in records.charges), None)
    table = loads(pods, records, leave_out=key)
    table.pop(key, None)
    owner = table.pop(anchor) if anchor is not None else None
    name = describe(anchor) if anchor is not None else ""
    return GpuUsage(tuple(table.values()), owner, name, dict(demand)), anchor


def total(load: GpuLoad) -> dict[str, int]:
    """What one charge counts, per resource."""
    names = {*load.reserved, *load.observed}
    return {r: max(load.reserved.get(r, 0), load.observed.get(r, 0)) for r in names}


def raised(current: Mapping[str, int], demand: Mapping[str, int]) -> dict[str, int]:
    """An admission only ever raises a reservation; the reconciler lowers it to the live object's
    demand later, so an update that fails after admission never leaves GPUs uncounted."""
    names = {*current, *demand}
    merged = {r: max(current.get(r, 0), demand.get(r, 0)) for r in names}
    return {r: n for r, n in merged.items() if n}


def tracked(
    base: GpuRules | None, policies: Iterable[CompiledPolicy], amounts: Mapping[str, int]
) -> dict[str, int]:
    """The part of `amounts` that the union of every policy's `gpu.resources` (and `base`'s, the
    default GPU resources) counts: what reservations are kept for."""
    if not amounts:
        return {}  # most workloads: no extended resource, so no pattern to gather
    rules = [c.gpu for c in policies if c.gpu is not None]
    if base is not None:
        rules.append(base)
    return {
        r: n for r, n in amounts.items() if n and is_extended(r) and any(g.counts(r) for g in rules)
    }
