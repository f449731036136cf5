"""Admission decisions for one request: routing, update shortcuts, facts, the engine's verdict.

Everything here is synchronous or awaits only the injected fact sources, so the server can put
one deadline around it and answer fail-closed when it is exceeded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from mlgate.api.compile import InvalidResource
from mlgate.api.models import GROUP
from mlgate.api.resources import compile_resource
from mlgate.controller.gpu_budget import BudgetStore, MemoryBudgetStore
from mlgate.controller.gpu_ledger import GpuLedger
from mlgate.controller.state import PolicyState
from mlgate.engine import egress, exposure, widened
from mlgate.engine.decisions import Decision, Mode, Violation, attribute, framework_ids
from mlgate.engine.effective import effective_view
from mlgate.engine.evaluate import (
    ALWAYS_EXEMPT,
    decide,
    evaluate_network_policy,
    evaluate_unsupported,
    evaluate_view,
    with_llm,
)
from mlgate.engine.llm import recognise
from mlgate.engine.llm_policy import may_concern
from mlgate.engine.modelverify import unverified
from mlgate.engine.pinning import PINNED_SUBRESOURCES, pinning_rules, unpinned
from mlgate.engine.policy import CompiledPolicy, Facts, GpuRules, GpuUsage, ImageFact
from mlgate.engine.related import RelatedKind, contract_kinds
from mlgate.engine.runtimes import RuntimeCatalog
from mlgate.engine.scope import namespace_in_scope
from mlgate.engine.updates import benign_update
from mlgate.engine.workloads import Unsupported, WorkloadView
from mlgate.webhook.gpu_facts import (
    GpuAccounting,
    GpuPlan,
    GpuStep,
    ObjectLookup,
    device_claims,
)
from mlgate.webhook.review import Request

NamespaceLookup = Callable[[str], Awaitable[Mapping[str, str] | None]]
ImageVerifier = Callable[
    [tuple[CompiledPolicy, ...], WorkloadView], Awaitable[Mapping[str, ImageFact]]
]
# namespace -> whether NetworkPolicy mlgate-egress exists there
EgressLookup = Callable[[str], Awaitable[bool]]
# namespace -> the NetworkPolicies there (as last seen by a watch)
NetworkPolicyLookup = Callable[[str], Sequence[Mapping[str, Any]]]
# (namespace, further kinds) -> the objects the llm rules read there (engine.related), and
# cluster-scoped ones
RelatedLookup = Callable[[str, tuple[RelatedKind, ...]], Awaitable[tuple[Mapping[str, Any], ...]]]

# Cluster components that delete a namespace's objects with it (namespace controller) or an
# owned object with its owners (garbage collector); whoever can act as them owns the cluster.
CLUSTER_CONTROLLERS_PREFIX = "system:serviceaccount:kube-system:"
CONTROLLER_MANAGER = "system:kube-controller-manager"


async def no_namespace_lookup(_: str) -> Mapping[str, str] | None:
    return None


async def no_object_lookup(*_: str) -> Mapping[str, Any] | None:
    return None


async def no_egress_lookup(_: str) -> bool:
    """Without a reconciler nothing creates mlgate-egress: workloads that need it wait."""
    return False


def no_network_policies(_: str) -> Sequence[Mapping[str, Any]]:
    return ()


async def no_related(_: str, __: tuple[RelatedKind, ...]) -> tuple[Mapping[str, Any], ...]:
    """Without a cluster there are no guardrails: LLMs under requireGuardrail wait for one."""
    return ()


async def no_image_verifier(
    _: tuple[CompiledPolicy, ...], __: WorkloadView
) -> Mapping[str, ImageFact]:
    """Without a registry client no image verifies, so signature rules fail closed."""
    return {}


@dataclass(frozen=True)
class Config:
    own_namespace: str = "mlgate-system"
    # Who may take a namespace out of a policy's scope by relabelling it.
    scope_admin_groups: frozenset[str] = frozenset({"system:masters"})
    gpu_rules: GpuRules | None = None  # resources always tracked, whatever the policies count
    # Who may edit or delete NetworkPolicy mlgate-egress, and write status.lastGood of policies:
    # mlgate itself (its ServiceAccount, and whatever identity `mlgate run` found it runs as).
    egress_managers: frozenset[str] = frozenset({"system:serviceaccount:mlgate-system:mlgate"})
    # The image of the init container that verifies downloaded models (engine.modelverify).
    verifier_image: str | None = None

    def manages_egress(self, username: str) -> bool:
        return (
            username in self.egress_managers
            or username == CONTROLLER_MANAGER
            or username.startswith(CLUSTER_CONTROLLERS_PREFIX)
        )


@dataclass(frozen=True)
class Outcome:
    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()
    decision: Decision | None = None
    route: str = "judged"  # why this answer: judged, exempt, benign-update, scope-guard, ...
    workload: WorkloadView | None = None


def render_denial(kind: str, namespace: str, name: str, violations: tuple[Violation, ...]) -> str:
    lines = [
        f"mlgate denied {kind} {namespace}/{name or '(generated)'}: {len(violations)} violation(s)"
    ]
    lines += [
        f"{i}. [{v.policy}] {v.rule} at {v.path}: {v.message}"
        + (f" ({ids})" if (ids := framework_ids(v)) else "")
        for i, v in enumerate(violations, 1)
    ]
    return "\n".join(lines)


def render_warning(v: Violation) -> str:
    return f"mlgate [{v.policy}] {v.rule} at {v.path}: {v.message}"


def mutates(policies: tuple[CompiledPolicy, ...]) -> bool:
    """Whether the mutating webhook can patch anything under these policies: an Enforce policy
    pins verified tags (engine.pinning.pinning_rules) or inserts model verifiers
    (engine.modelverify.verifying). Without one, every mutating answer is "not mutated" and
    validation finds nothing mutation should have done, whatever the request; the router then
    routes no request to the mutating webhook (controller.routing)."""
    return any(
        pinning_rules(p) is not None
        or (p.mode is Mode.ENFORCE and p.models is not None and p.models.verify_loaded is not None)
        for p in policies
    )


@dataclass
class Admission:
    state: PolicyState
    ledger: GpuLedger
    config: Config = field(default_factory=Config)
    namespace_lookup: NamespaceLookup = no_namespace_lookup
    verify_images: ImageVerifier = no_image_verifier
    object_lookup: ObjectLookup = no_object_lookup
    egress_present: EgressLookup = no_egress_lookup
    network_policies: NetworkPolicyLookup = no_network_policies
    related: RelatedLookup = no_related
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    # The runtimes and configs workloads name (the operator's watch cache). Empty by default, so
    # a workload naming one is refused for want of it rather than judged without it.
    runtimes: Callable[[], RuntimeCatalog] = RuntimeCatalog
    budgets: BudgetStore = field(default_factory=MemoryBudgetStore)
    _watched: tuple[tuple[CompiledPolicy, ...], frozenset[str]] = field(
        default=((), frozenset()), repr=False
    )

    @property
    def gpu(self) -> GpuAccounting:
        return GpuAccounting(
            self.ledger, self.budgets, self.object_lookup, self.now, self.config.gpu_rules
        )

    def exempt(self, namespace: str) -> bool:
        return namespace in ALWAYS_EXEMPT or namespace == self.config.own_namespace

    async def review(self, req: Request) -> Outcome:
        if req.resource == "networkpolicies" and not self.exempt(req.namespace):
            return await self._network_policy(req)
        if req.resource_group == GROUP and req.operation in ("CREATE", "UPDATE"):
            return self._last_good_guard(req) if req.sub_resource else _compiles(req)
        if req.operation not in ("CREATE", "UPDATE"):
            return Outcome(True, route="not-judged-operation")
        if req.resource == "namespaces":
            return await self._namespace_guard(req)
        if self.exempt(req.namespace):
            return Outcome(True, route="exempt")
        if req.obj is None:
            return Outcome(False, "mlgate: the request carries no object to judge", route="error")
        if req.sub_resource == "scale":
            return await self._judge_scale(req)
        obj = with_namespace(req.obj, req.namespace)
        # A /status write is judged like an update of the object: the apiserver passes the
        # object as it will be stored, and some kinds take metadata changes through /status.
        if (
            req.operation == "UPDATE"
            and req.old_obj is not None
            and req.sub_resource in ("", "status")
        ):
            reason = benign_update(req.old_obj, obj, self.watched_annotations())
            if reason is not None:
                return Outcome(True, route="benign-update", message=reason)
        item = effective_view(obj, self.runtimes(), self.state.snapshot().kinds)
        if isinstance(item, Unsupported):
            if exposure.is_exposure(obj) or recognise(obj) is not None:
                return await self._judge_llm_only(obj)
            return await self._unsupported(item, obj)
        return await self._judge(req, item, obj)

    async def _unsupported(self, item: Unsupported, obj: Mapping[str, Any]) -> Outcome:
        """A kind routed here that mlgate cannot judge (a WorkloadKind deleted a moment ago, an
        AppWrapper wrapping an unknown kind): the policies' unknownKinds decide, as in `check`."""
        snapshot = self.state.snapshot()
        facts = Facts(
            now=self.now(),
            namespace_labels=await self.namespace_labels(item.namespace),
            approvals=snapshot.approvals,
            kinds=snapshot.kinds,
        )
        decision = evaluate_unsupported(snapshot.policies, item, obj, facts)
        return _verdict(item.kind, item.namespace, item.name, decision)

    async def _judge_scale(self, req: Request) -> Outcome:
        """A scale-up through /scale is judged as the parent workload with the new replicas."""
        wanted = _replicas(req.obj)
        if req.old_obj is not None and wanted <= _replicas(req.old_obj):
            return Outcome(True, "only scales down", route="benign-update")
        parent = await self.object_lookup(
            req.resource_group, req.resource_version, req.resource, req.namespace, req.name
        )
        if parent is None:
            return Outcome(
                False, f"mlgate cannot read {req.resource}/{req.name} to judge the scale-up"
            )
        kinds = self.state.snapshot().kinds
        kind = kinds.lookup(str(parent.get("apiVersion") or ""), str(parent.get("kind") or ""))
        scaled = with_namespace(
            _with_value(parent, kind.scale_path if kind else ("spec", "replicas"), wanted),
            req.namespace,
        )
        item = effective_view(scaled, self.runtimes(), kinds)
        if isinstance(item, Unsupported):
            return await self._unsupported(item, scaled)
        return await self._judge(req, item, scaled)

    def watched_annotations(self) -> frozenset[str]:
        """The annotations model rules read, computed once per set of policies in force."""
        policies = self.state.snapshot().policies
        if self._watched[0] is not policies:
            keys = frozenset(
                k for p in policies if p.models is not None for k in p.models.annotations
            )
            self._watched = (policies, keys)
        return self._watched[1]

    async def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        labels = self.state.namespace_labels(namespace)
        if labels is None:
            labels = await self.namespace_lookup(namespace)
        return labels if labels is not None else {}

    async def _facts(
        self, item: WorkloadView, obj: Mapping[str, Any], policies: tuple[CompiledPolicy, ...]
    ) -> Facts:
        # A cluster-scoped runtime serves every namespace: judged as if in a governed one.
        labels = await self.namespace_labels(item.namespace) if item.namespace else None
        images = await self.verify_images(policies, item)
        return Facts(
            now=self.now(),
            namespace_labels=labels,
            approvals=self.state.snapshot().approvals,
            images=images,
            device_claims=await device_claims(self.object_lookup, item, obj),
            kinds=self.state.snapshot().kinds,
            related=await self._related(policies, obj, labels or {}),
        )

    async def _related(
        self,
        policies: tuple[CompiledPolicy, ...],
        obj: Mapping[str, Any],
        labels: Mapping[str, str],
    ) -> tuple[Mapping[str, Any], ...] | None:
        """The llm rules' facts, read only for an object they may judge (an LLM, a Service or
        route) in a namespace that a policy with llm rules covers."""
        namespace = str(_meta(obj).get("namespace") or "")
        covering = tuple(p for p in policies if namespace_in_scope(p.match, namespace, labels))
        if not may_concern(covering, obj):
            return None
        return await self.related(namespace, contract_kinds(covering))

    async def _judge_llm_only(self, obj: Mapping[str, Any]) -> Outcome:
        """A Service, Ingress or route (llm.noDirectExposure), or an LLM-serving kind mlgate
        judges only by its llm rules (NIMService, a Kaito Workspace)."""
        snapshot = self.state.snapshot()
        namespace, name = str(_meta(obj).get("namespace") or ""), str(_meta(obj).get("name") or "")
        labels = await self.namespace_labels(namespace)
        facts = Facts(
            now=self.now(),
            namespace_labels=labels,
            approvals=snapshot.approvals,
            related=await self._related(snapshot.policies, obj, labels),
        )
        decision = with_llm(Decision(True), snapshot.policies, obj, facts)
        return _verdict(str(obj.get("kind") or ""), namespace, name, decision)

    async def _judge(self, req: Request, item: WorkloadView, obj: Mapping[str, Any]) -> Outcome:
        snapshot = self.state.snapshot()
        facts = await self._facts(item, obj, snapshot.policies)
        waiting = await self._awaiting_egress(snapshot.policies, item, facts)
        late = self._unpinned(req, snapshot.policies, item, facts)
        plan = await self.gpu.plan(item, obj, snapshot.policies, facts.device_claims)
        while True:
            # GPU usage is read last; the reservation is written only if nobody (this replica
            # or another) reserved since, otherwise the workload is judged again on the news.
            # The server's deadline bounds the retries (and then denies: fail closed).
            usage, step = await self._gpu_usage(item, plan)
            judged = facts if usage is None else replace(facts, gpu_usage=usage)
            decision = with_llm(
                evaluate_view(snapshot.policies, item, judged),
                snapshot.policies,
                obj,
                facts,
            )
            if waiting or late:
                decision = decide(
                    [*decision.violations, *waiting, *late],
                    decision.matched_policies,
                    decision.notes,
                )
            outcome = _verdict(item.kind, item.namespace, item.name, decision, item)
            if not outcome.allowed or req.dry_run or step is None:
                return outcome
            if await self.gpu.reserve(step):
                return outcome

    async def _gpu_usage(
        self, item: WorkloadView, plan: GpuPlan | None
    ) -> tuple[GpuUsage | None, GpuStep | None]:
        if plan is None:
            return None, None
        return await self.gpu.gather(item.namespace, plan)

    def _unpinned(
        self, req: Request, policies: tuple[CompiledPolicy, ...], item: WorkloadView, facts: Facts
    ) -> list[Violation]:
        """What the mutating webhook, which ran just before, should have done: pin verified tags
        and insert model verifiers."""
        if req.sub_resource not in PINNED_SUBRESOURCES or not mutates(policies):
            # A Scale carries no images (the parent's were judged when they came in); without
            # a policy that mutates there is nothing mutation could have done.
            return []
        before = (
            effective_view(req.old_obj, self.runtimes(), self.state.snapshot().kinds)
            if req.old_obj is not None
            else None
        )
        old = before if isinstance(before, WorkloadView) else None
        image = self.config.verifier_image
        return [
            *unpinned(policies, item, facts, old),
            *unverified(policies, item, facts, image, old),
        ]

    async def _awaiting_egress(
        self, policies: tuple[CompiledPolicy, ...], item: WorkloadView, facts: Facts
    ) -> list[Violation]:
        """Violations holding a workload back while its namespace's egress limits are not in
        force: mlgate-egress does not exist yet, or a NetworkPolicy there widens them.

        Both concern every pod of the namespace, as mlgate-egress does, whatever the
        policies' kinds and selectors. Never a runtime's: it runs nothing until a workload in
        some namespace names it."""
        if not item.runs_pods:
            return []
        netpols = self.network_policies(item.namespace)
        held = [
            widened.held_back(w)
            for w in widened.widenings(policies, netpols, item.namespace, facts.namespace_labels)
        ]
        managing = [
            p
            for p in policies
            if egress.manages_egress(p)
            and namespace_in_scope(p.match, item.namespace, facts.namespace_labels)
        ]
        if not managing or await self.egress_present(item.namespace):
            return held
        finding = egress.awaiting_network_policy(item.namespace)
        return held + [v for p in managing for v in attribute(p.name, p.mode, [finding])]

    async def _network_policy(self, req: Request) -> Outcome:
        """User NetworkPolicies must not widen egress; mlgate-egress is mlgate's alone."""
        target = req.obj if req.obj is not None else req.old_obj
        if target is None and req.operation == "DELETE" and not req.name:
            # A collection delete: the apiserver admits each item again, with its old object.
            return Outcome(True, route="collection-delete")
        if target is None:
            return Outcome(False, "mlgate: the request carries no object to judge", route="error")
        name = req.name or str(_meta(target).get("name") or "")
        labels = await self.namespace_labels(req.namespace)
        if name == egress.MANAGED_NAME and self._managed_here(req, labels):
            return self._egress_guard(req)
        if req.operation not in {"CREATE", "UPDATE"}:
            return Outcome(True, route="not-judged-operation")  # removing allows only narrows
        if req.old_obj is not None and req.obj is not None and _spec(req.old_obj) == _spec(req.obj):
            # Labels, annotations, finalizers: a NetworkPolicy admitted (or grandfathered)
            # before stays editable, so its owners and the garbage collector are never stuck.
            return Outcome(True, route="benign-update")
        netpol = with_namespace(target, req.namespace)
        facts = Facts(now=self.now(), namespace_labels=labels)
        decision = evaluate_network_policy(self.state.snapshot().policies, netpol, facts)
        return _verdict("NetworkPolicy", req.namespace, name, decision)

    def _managed_here(self, req: Request, labels: Mapping[str, str]) -> bool:
        """Whether this mlgate-egress is mlgate's: labelled so, or in a namespace where a
        policy manages one (a user may not pre-empt the name there either)."""
        if any(obj is not None and _is_managed(obj) for obj in (req.obj, req.old_obj)):
            return True
        return any(
            egress.manages_egress(p) and namespace_in_scope(p.match, req.namespace, labels)
            for p in self.state.snapshot().policies
        )

    def _egress_guard(self, req: Request) -> Outcome:
        if self.config.manages_egress(req.username):
            return Outcome(True, route="egress-guard")
        verb = {"CREATE": "create", "UPDATE": "edit", "DELETE": "delete"}.get(
            req.operation, req.operation.lower()
        )
        return Outcome(
            False,
            f"mlgate denied: NetworkPolicy {egress.MANAGED_NAME} in {req.namespace} is managed by "
            f"mlgate and only mlgate may {verb} it; it enforces the egress allowlist of the "
            "policies governing this namespace, so change their spec.egress.networkPolicy "
            "instead (or add a NetworkPolicy of your own within the allowlist)",
            route="egress-guard",
        )

    def _last_good_guard(self, req: Request) -> Outcome:
        """status.lastGood is what mlgate enforces when the spec is invalid after a restart:
        whoever could write it could pick the policy in force, so only mlgate may."""
        before, after = (_status(o).get("lastGood") for o in (req.old_obj, req.obj))
        if before == after or req.username in self.config.egress_managers:
            return Outcome(True, route="last-good-guard")
        name = req.name or str(_meta(req.obj or {}).get("name") or "")
        return Outcome(
            False,
            f"mlgate denied writing status.lastGood of {req.kind} {name}: only mlgate records "
            "the last spec it compiled, which it enforces while the current spec is invalid",
            route="last-good-guard",
        )

    async def _namespace_guard(self, req: Request) -> Outcome:
        if req.operation != "UPDATE" or req.obj is None or req.old_obj is None:
            return Outcome(True, route="scope-guard")
        if set(req.groups) & self.config.scope_admin_groups:
            return Outcome(True, route="scope-guard")
        before, after = _labels(req.old_obj), _labels(req.obj)
        name = req.name or str((req.obj.get("metadata") or {}).get("name") or "")
        escaped = [
            p.name
            for p in self.state.snapshot().policies
            if p.match.own_namespace is None
            and namespace_in_scope(p.match, name, before)
            and not namespace_in_scope(p.match, name, after)
        ]
        if not escaped:
            return Outcome(True, route="scope-guard")
        admins = ", ".join(sorted(self.config.scope_admin_groups)) or "(none configured)"
        return Outcome(
            False,
            f"mlgate denied relabelling namespace {name}: the new labels take it out of the scope "
            f"of polic{'y' if len(escaped) == 1 else 'ies'} {', '.join(escaped)}; only members of "
            f"{admins} may do that",
            route="scope-guard",
        )


def _compiles(req: Request) -> Outcome:
    """A policy or approval is admitted only if the operator will be able to compile it, so
    `kubectl apply` shows the field error instead of a policy silently not in force."""
    if req.obj is None:
        return Outcome(True, route="not-judged-operation")
    if req.old_obj is not None and _spec(req.old_obj) == _spec(req.obj):
        return Outcome(True, route="benign-update")  # metadata: an old spec stays editable
    try:
        compile_resource(with_namespace(req.obj, req.namespace))
    except InvalidResource as exc:
        name = req.name or str(_meta(req.obj).get("name") or "")
        return Outcome(False, f"mlgate denied {req.kind} {name}: {exc}", route="policy-invalid")
    return Outcome(True, route="policy-compiles")


def _verdict(
    kind: str, namespace: str, name: str, decision: Decision, item: WorkloadView | None = None
) -> Outcome:
    warnings = tuple(render_warning(v) for v in decision.warnings)
    if not decision.allowed:
        message = render_denial(kind, namespace, name, decision.denials)
        return Outcome(False, message, warnings, decision, workload=item)
    return Outcome(True, "", warnings, decision, workload=item)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _spec(obj: Mapping[str, Any]) -> Any:
    return obj.get("spec")


def _status(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    status = (obj or {}).get("status")
    return status if isinstance(status, Mapping) else {}


def _is_managed(obj: Mapping[str, Any]) -> bool:
    return _labels(obj).get(egress.MANAGED_BY_LABEL) == egress.MANAGED_BY


def _replicas(scale: Mapping[str, Any] | None) -> int:
    spec = (scale or {}).get("spec")
    replicas = spec.get("replicas") if isinstance(spec, Mapping) else None
    return replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 0


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    meta = obj.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    return labels if isinstance(labels, Mapping) else {}


def with_namespace(obj: Mapping[str, Any], namespace: str) -> Mapping[str, Any]:
    """Objects in a create request may omit metadata.namespace; the request always has it."""
    meta = obj.get("metadata")
    if not namespace or (isinstance(meta, Mapping) and meta.get("namespace") == namespace):
        return obj
    return {
        **obj,
        "metadata": {**(meta if isinstance(meta, Mapping) else {}), "namespace": namespace},
    }


def _with_value(obj: Mapping[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of `obj` with `value` at `path`, the mappings on the way copied too."""
    head, rest = path[0], path[1:]
    inner = obj.get(head)
    inner = inner if isinstance(inner, Mapping) else {}
    return {**obj, head: _with_value(inner, rest, value) if rest else value}
