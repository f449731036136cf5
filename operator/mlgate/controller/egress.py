"""Keeps NetworkPolicy `mlgate-egress` in step with the policies: create, update, restore, remove.

What each namespace should have is computed by the pure engine (`namespace_egress`,
`managed_network_policy`); this module observes the cluster and writes the difference.

One worker task does every write, so two reconciliations of a namespace never race. It wakes
when something changed: a policy (every namespace may be affected), a namespace's labels, or the
managed NetworkPolicy itself (someone edited or deleted it: drift). A periodic resync re-lists
namespaces and managed NetworkPolicies, so a missed watch event or a change made while mlgate was
down is repaired within `resync_interval`. Nothing is written when the cluster already matches,
so our own writes, seen again as watch events, do not loop.

The NetworkPolicy is owned (ownerReferences) by the policies that manage it, so the garbage
collector removes it with the last of them; the worker also deletes it explicitly when the
namespace leaves scope, which covers clusters without a garbage collector and scope changes
that delete no policy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf

from mlgate.api.models import API_VERSION, GROUP, VERSION
from mlgate.cluster.client import ApiError, KubeClient, resource_path
from mlgate.controller.state import PolicyState
from mlgate.engine import egress, widened
from mlgate.engine.egress import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MANAGED_NAME,
    NETWORKING_API_VERSION,
    EffectiveEgress,
)
from mlgate.engine.evaluate import ALWAYS_EXEMPT

log = logging.getLogger("mlgate.egress")

CONDITION = "EgressNetworkPolicy"
POLICY_PLURALS = {"ClusterMLPolicy": "clustermlpolicies", "MLPolicy": "mlpolicies"}
_MAX_LISTED = 50  # namespaces named in a status message; the rest are counted
_TRANSIENT = (ApiError, aiohttp.ClientError, TimeoutError)


def network_policy_path(namespace: str) -> str:
    return resource_path(NETWORKING_API_VERSION, "networkpolicies", namespace, MANAGED_NAME)


def _policy_key(kind: str, namespace: str | None, name: str) -> str:
    # As api.compile.policy_name names compiled policies: MLPolicies carry their namespace.
    return f"{namespace}/{name}" if kind == "MLPolicy" and namespace else name


def _ours(refs: Any) -> list[tuple[str, str, str]]:
    """mlgate's owner references; those of other controllers are not ours to compare."""
    return sorted(
        (str(r.get("kind")), str(r.get("name")), str(r.get("uid")))
        for r in refs or []
        if isinstance(r, Mapping) and str(r.get("apiVersion", "")).startswith(f"{GROUP}/")
    )


def up_to_date(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether the live object says what mlgate wants, in the fields mlgate owns.

    Fields others added (extra labels, annotations) are theirs and do not count as drift.
    """
    if current is None:
        return False
    have, want = current.get("spec") or {}, desired["spec"]
    defaults: dict[str, Any] = {"podSelector": {}, "policyTypes": [], "egress": []}
    if any((have.get(k) or d) != (want.get(k) or d) for k, d in defaults.items()):
        return False
    meta, want_meta = current.get("metadata") or {}, desired["metadata"]
    for part in ("labels", "annotations"):
        present = meta.get(part) or {}
        if any(present.get(k) != v for k, v in want_meta[part].items()):
            return False
    return _ours(meta.get("ownerReferences")) == _ours(want_meta.get("ownerReferences"))


def _is_managed(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(MANAGED_BY_LABEL) == MANAGED_BY)


@dataclass(frozen=True, slots=True)
class _Namespace:
    labels: Mapping[str, str]
    terminating: bool


def _namespace(body: Mapping[str, Any]) -> _Namespace:
    meta = body.get("metadata") or {}
    phase = (body.get("status") or {}).get("phase")
    return _Namespace(
        dict(meta.get("labels") or {}),
        phase == "Terminating" or bool(meta.get("deletionTimestamp")),
    )


@dataclass(frozen=True, slots=True)
class _Policy:
    """What the status writer and owner references need of a policy object."""

    kind: str
    name: str
    namespace: str | None
    uid: str
    generation: int | None
    conditions: tuple[Mapping[str, Any], ...]

    @property
    def owner_reference(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": self.kind, "name": self.name, "uid": self.uid}

    @property
    def status_path(self) -> str:
        plural = POLICY_PLURALS[self.kind]
        return resource_path(API_VERSION, plural, self.namespace, self.name) + "/status"


def _policy(body: Mapping[str, Any]) -> _Policy:
    meta = body.get("metadata") or {}
    conditions = (body.get("status") or {}).get("conditions") or []
    return _Policy(
        kind=str(body.get("kind")),
        name=str(meta.get("name")),
        namespace=meta.get("namespace"),
        uid=str(meta.get("uid") or ""),
        generation=meta.get("generation"),
        conditions=tuple(c for c in conditions if isinstance(c, Mapping)),
    )


def egress_condition(
    key: str,
    manages: bool,
    desired: Mapping[str, EffectiveEgress],
    failed: Mapping[str, str],
    widened_by: Sequence[str] = (),
) -> dict[str, Any]:
    """Condition EgressNetworkPolicy of one policy: where its allowlist shapes mlgate-egress
    and which other policies' allowlists were intersected with it there; or why it cannot:
    writes failing, or NetworkPolicies (`widened_by`, "namespace/name") widening it."""
    mine = sorted(ns for ns, effective in desired.items() if key in effective.policies)
    broken = [ns for ns in mine if ns in failed]
    if broken:
        details = "; ".join(f"{ns}: {failed[ns]}" for ns in broken[:_MAX_LISTED])
        return {
            "type": CONDITION,
            "status": "False",
            "reason": "ApplyFailed",
            "message": f"cannot keep {MANAGED_NAME} in {len(broken)} namespace(s): {details}",
        }
    if widened_by:
        listed = ", ".join(widened_by[:_MAX_LISTED])
        more = f" and {len(widened_by) - _MAX_LISTED} more" if len(widened_by) > _MAX_LISTED else ""
        return {
            "type": CONDITION,
            "status": "False",
            "reason": "WidenedByNetworkPolicy",
            "message": f"{len(widened_by)} NetworkPolicy(ies) widen egress beyond this policy's "
            f"allowlist: {listed}{more}; remove or narrow them (new workloads in their "
            "namespaces are held back until then)",
        }
    if not mine:
        return {
            "type": CONDITION,
            "status": "False",
            "reason": "NoNamespaceInScope" if manages else "NotManaged",
            "message": f"no namespace in scope has {MANAGED_NAME}"
            + ("" if manages else " (this policy sets manage: false)"),
        }

    def describe(ns: str) -> str:
        others = [p for p in desired[ns].policies if p != key]
        return f"{ns} (intersected with {', '.join(others)})" if others else ns

    listed = ", ".join(describe(ns) for ns in mine[:_MAX_LISTED])
    more = f" and {len(mine) - _MAX_LISTED} more" if len(mine) > _MAX_LISTED else ""
    return {
        "type": CONDITION,
        "status": "True",
        "reason": "Managed" if manages else "Contributing",
        "message": f"{MANAGED_NAME} kept in {len(mine)} namespace(s): {listed}{more}",
    }


def _same(current: Mapping[str, Any] | None, wanted: Mapping[str, Any] | None) -> bool:
    if current is None or wanted is None:
        return current is wanted
    keys = ("status", "reason", "message", "observedGeneration")
    return all(current.get(k) == wanted.get(k) for k in keys)


async def own_username(client: KubeClient) -> str | None:
    """Who mlgate is to the apiserver (SelfSubjectReview), so its own writes to mlgate-egress
    pass the webhook whatever identity it runs as; None when the cluster cannot tell."""
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        answer = await client.create(
            resource_path("authentication.k8s.io/v1", "selfsubjectreviews"), review
        )
    except _TRANSIENT as exc:
        log.warning("cannot tell mlgate's own username (SelfSubjectReview): %s", exc)
        return None
    username = ((answer.get("status") or {}).get("userInfo") or {}).get("username")
    return str(username) if username else None


@dataclass
class EgressReconciler:
    client: KubeClient
    state: PolicyState
    own_namespace: str = "mlgate-system"
    resync_interval: float = 30.0
    # Every replica keeps its view current for admission; only the leader writes.
    leads: Callable[[], bool] = lambda: True
    max_retry_delay: float = 30.0
    _namespaces: dict[str, _Namespace] = field(default_factory=dict)
    # The live mlgate-egress per namespace as last seen: None when it does not exist.
    _observed: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)
    _policies: dict[str, _Policy] = field(default_factory=dict)
    # Every NetworkPolicy per namespace and name, to find those that widen an allowlist.
    _netpols: dict[str, dict[str, Mapping[str, Any]]] = field(default_factory=dict)
    _desired: dict[str, EffectiveEgress] = field(default_factory=dict)
    _failed: dict[str, str] = field(default_factory=dict)
    _retry_delay: dict[str, float] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)
    _all_dirty: bool = False
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    # -- observations (from kopf's watches and the resync) ----------------------------------

    def kick(self, namespace: str) -> None:
        self._dirty.add(namespace)
        self._wake.set()

    def kick_all(self) -> None:
        self._all_dirty = True
        self._wake.set()

    def observe_namespace(self, name: str, body: Mapping[str, Any] | None) -> None:
        known = name in self._namespaces
        if body is None:
            self._namespaces.pop(name, None)
        else:
            self._namespaces[name] = _namespace(body)
        # A namespace coming or going can change what globs in allowedNamespaces resolve to.
        if known and body is not None:
            self.kick(name)
        else:
            self.kick_all()

    def observe_network_policy(self, namespace: str, body: Mapping[str, Any] | None) -> None:
        self._observed[namespace] = None if body is None else dict(body)
        self.kick(namespace)

    def observe_any_network_policy(
        self, namespace: str, name: str, body: Mapping[str, Any] | None
    ) -> None:
        known = self._netpols.setdefault(namespace, {})
        if body is None:
            known.pop(name, None)
        else:
            known[name] = dict(body)
        self.kick(namespace)

    def network_policies(self, namespace: str) -> tuple[Mapping[str, Any], ...]:
        """The NetworkPolicies of `namespace` as last seen by the watch."""
        return tuple(self._netpols.get(namespace, {}).values())

    def every_network_policy(self) -> list[Mapping[str, Any]]:
        """Every NetworkPolicy the watch has seen: the audit judges them for widening egress."""
        return [netpol for known in self._netpols.values() for netpol in known.values()]

    def observe_policy(self, body: Mapping[str, Any], deleted: bool) -> None:
        policy = _policy(body)
        key = _policy_key(policy.kind, policy.namespace, policy.name)
        if deleted:
            self._policies.pop(key, None)
        else:
            self._policies[key] = policy
        self.kick_all()

    # -- the webhook's question -------------------------------------------------------------

    async def has_managed_policy(self, namespace: str) -> bool:
        """Whether mlgate-egress exists in `namespace`: known from the watch, else asked."""
        if self._observed.get(namespace) is not None:
            return True
        try:
            found = await self.client.get_or_none(network_policy_path(namespace))
        except _TRANSIENT as exc:
            log.warning("cannot look up %s in %s: %s", MANAGED_NAME, namespace, exc)
            return False
        return found is not None

    # -- the worker -------------------------------------------------------------------------

    async def run(self, after: asyncio.Event | None = None) -> None:
        """Reconcile on every change and everything every `resync_interval`; never returns.

        `after` is the initial policy sync: before it, an empty policy set would say that no
        namespace wants a NetworkPolicy, and the first pass would delete them all.
        """
        if after is not None:
            await after.wait()
        loop = asyncio.get_running_loop()
        while True:
            await self._guarded(self.resync)
            deadline = loop.time() + self.resync_interval
            while (remaining := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(remaining):
                        await self._wake.wait()
                except TimeoutError:
                    break
                await self._guarded(self.reconcile_pending)

    @staticmethod
    async def _guarded(step: Callable[[], Awaitable[None]]) -> None:
        # A bug in one pass must not end drift correction for good: log it, try next time.
        try:
            await step()
        except Exception:
            log.exception(
                "egress reconciliation failed; it is retried on the next change or resync"
            )

    async def resync(self) -> None:
        """Re-list namespaces and managed NetworkPolicies, then reconcile every namespace."""
        try:
            namespaces = await self.client.list(resource_path("v1", "namespaces"))
            managed = await self.client.list(
                resource_path(NETWORKING_API_VERSION, "networkpolicies"),
                {"fieldSelector": f"metadata.name={MANAGED_NAME}"},
            )
        except _TRANSIENT as exc:
            log.warning("egress resync failed, retrying in %gs: %s", self.resync_interval, exc)
            return
        self._namespaces = {
            str((ns.get("metadata") or {}).get("name")): _namespace(ns) for ns in namespaces
        }
        self._observed = dict.fromkeys(self._namespaces)
        for item in managed:
            self._observed[str((item.get("metadata") or {}).get("namespace"))] = item
        self._all_dirty = True
        await self.reconcile_pending()

    async def reconcile_pending(self) -> None:
        """Reconcile the namespaces something happened to since the last pass."""
        self._wake.clear()
        if self._all_dirty:
            dirty = set(self._namespaces) | {n for n, o in self._observed.items() if o}
        else:
            dirty = self._dirty
        self._dirty, self._all_dirty = set(), False
        for namespace in sorted(dirty):
            await self._reconcile(namespace)
        if self.leads():
            await self._write_statuses()

    def desired(self, namespace: str) -> tuple[EffectiveEgress, dict[str, Any]] | None:
        """The allowlist and NetworkPolicy `namespace` should have; None: it should have none."""
        info = self._namespaces.get(namespace)
        exempt = namespace in ALWAYS_EXEMPT or namespace == self.own_namespace
        if info is None or info.terminating or exempt:
            return None
        effective = egress.namespace_egress(
            self.state.snapshot().policies, namespace, info.labels, self._namespaces
        )
        if effective is None:
            return None
        owners = [
            self._policies[key].owner_reference
            for key in effective.managing
            if key in self._policies and self._policies[key].uid
        ]
        return effective, egress.managed_network_policy(namespace, effective, owners)

    async def _reconcile(self, namespace: str) -> None:
        wanted = self.desired(namespace)
        if not self.leads():
            self._remember(namespace, wanted)
            return
        self._remember(namespace, wanted)
        try:
            if wanted is None:
                await self._remove(namespace)
            else:
                await self._keep(namespace, wanted[1])
        except _TRANSIENT as exc:
            self._retry_later(namespace, exc)
            return
        self._failed.pop(namespace, None)
        self._retry_delay.pop(namespace, None)

    def _remember(
        self, namespace: str, wanted: tuple[EffectiveEgress, dict[str, Any]] | None
    ) -> None:
        if wanted is None:
            self._desired.pop(namespace, None)
        else:
            self._desired[namespace] = wanted[0]

    async def _keep(self, namespace: str, body: dict[str, Any]) -> None:
        current = self._observed.get(namespace)
        if up_to_date(current, body):
            return
        path = network_policy_path(namespace)
        self._observed[namespace] = await self.client.apply(path, body)
        log.info(
            "%s %s in %s", "created" if current is None else "updated", MANAGED_NAME, namespace
        )

    async def _remove(self, namespace: str) -> None:
        current, info = self._observed.get(namespace), self._namespaces.get(namespace)
        if info is None:  # the namespace is gone, and its objects with it
            self._observed.pop(namespace, None)
            return
        # A terminating namespace's objects go with it; deleting them ourselves would fail.
        if current is None or not _is_managed(current) or info.terminating:
            return
        try:
            await self.client.delete(network_policy_path(namespace))
        except ApiError as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise
        self._observed[namespace] = None
        log.info("removed %s from %s: no policy manages it", MANAGED_NAME, namespace)

    def _retry_later(self, namespace: str, exc: BaseException) -> None:
        delay = min(self._retry_delay.get(namespace, 0.5) * 2, self.max_retry_delay)
        self._retry_delay[namespace] = delay
        self._failed[namespace] = str(exc)
        log.warning(
            "cannot reconcile %s in %s (retry in %gs): %s", MANAGED_NAME, namespace, delay, exc
        )
        asyncio.get_running_loop().call_later(delay, self.kick, namespace)

    def _widened_by(self) -> dict[str, list[str]]:
        """Per policy, the NetworkPolicies ("namespace/name") that widen its allowlist."""
        policies = self.state.snapshot().policies
        found: dict[str, list[str]] = {}
        for namespace, netpols in sorted(self._netpols.items()):
            info = self._namespaces.get(namespace)
            if not netpols or info is None or namespace in ALWAYS_EXEMPT:
                continue
            if namespace == self.own_namespace:
                continue
            for w in widened.widenings(policies, netpols.values(), namespace, info.labels):
                found.setdefault(w.policy.name, []).append(f"{namespace}/{w.name}")
        return found

    async def _write_statuses(self) -> None:
        compiled = {p.name: p for p in self.state.snapshot().policies}
        widened_by = self._widened_by()
        for key, policy in list(self._policies.items()):
            rules = compiled.get(key)
            wanted = None
            if rules is not None and egress.allowlist(rules) is not None:
                wanted = egress_condition(
                    key,
                    egress.manages_egress(rules),
                    self._desired,
                    self._failed,
                    widened_by.get(key, ()),
                )
                wanted["observedGeneration"] = policy.generation
            current = next((c for c in policy.conditions if c.get("type") == CONDITION), None)
            if _same(current, wanted):
                continue
            await self._write_status(key, policy, wanted)

    async def _write_status(self, key: str, policy: _Policy, wanted: dict[str, Any] | None) -> None:
        others = [dict(c) for c in policy.conditions if c.get("type") != CONDITION]
        if wanted is not None:
            wanted["lastTransitionTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = [*others, *([wanted] if wanted else [])]
        try:
            await self.client.patch(policy.status_path, {"status": {"conditions": conditions}})
        except _TRANSIENT as exc:
            log.warning("cannot write the egress status of %s: %s", key, exc)
            return
        # Until the watch reports the write, remember it, so the next pass does not repeat it.
        self._policies[key] = _Policy(
            policy.kind, policy.name, policy.namespace, policy.uid, policy.generation,
            tuple(conditions),
        )  # fmt: skip

    # -- kopf ---------------------------------------------------------------------------------

    def register(self, registry: kopf.OperatorRegistry) -> None:
        """Feed the reconciler from kopf's watches (handlers run on the operator's loop)."""

        async def on_policy(type: str | None, body: kopf.Body, **_: Any) -> None:
            self.observe_policy(body, deleted=type == "DELETED")

        for plural in POLICY_PLURALS.values():
            kopf.on.event(GROUP, VERSION, plural, registry=registry, id=f"egress-{plural}")(
                on_policy
            )

        @kopf.on.event("", "v1", "namespaces", registry=registry, id="egress-namespaces")
        async def on_namespace(type: str | None, name: str, body: kopf.Body, **_: Any) -> None:
            self.observe_namespace(name, None if type == "DELETED" else body)

        @kopf.on.event(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            registry=registry,
            id="egress-drift",
            field="metadata.name",
            value=MANAGED_NAME,
        )
        async def on_network_policy(
            type: str | None, namespace: str | None, body: kopf.Body, **_: Any
        ) -> None:
            if namespace:
                self.observe_network_policy(namespace, None if type == "DELETED" else body)

        @kopf.on.event(
            "networking.k8s.io", "v1", "networkpolicies", registry=registry, id="egress-widening"
        )
        async def on_any_network_policy(
            type: str | None, namespace: str | None, name: str | None, body: kopf.Body, **_: Any
        ) -> None:
            if namespace and name:
                self.observe_any_network_policy(
                    namespace, name, None if type == "DELETED" else body
                )
