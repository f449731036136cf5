"""`mlgate check`: judge manifests offline with the engine the webhook uses.

Two passes keep memory flat however long the input is. The first collects every mlgate resource
(policies and ApprovedModels, from -p/--models and from the manifests themselves), so a policy
applies even when it comes after the workloads in a stream. The second judges workloads one at a
time and keeps only their small verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, TextIO

from mlgate.api import models as api
from mlgate.api.compile import compile_approval, compile_policy, parse_resource
from mlgate.api.workloadkind import compile_workload_kind
from mlgate.engine import egress, exposure, related
from mlgate.engine.decisions import Decision, Mode
from mlgate.engine.dra import CLAIM, DRA_GROUP, TEMPLATE, claim_spec
from mlgate.engine.effective import effective_view
from mlgate.engine.evaluate import evaluate
from mlgate.engine.gpu import workload_amounts
from mlgate.engine.policy import Approval, CompiledPolicy, Facts, GpuLoad, GpuUsage, ImageFact
from mlgate.engine.runtimes import CATALOG_KINDS, RuntimeCatalog, catalog_key
from mlgate.engine.workloads import BUILT_IN_ONLY, Kinds, KindSpec, Unsupported, WorkloadView
from mlgate.manifests import (
    DocRef,
    Document,
    InputError,
    Source,
    api_version_kind,
    documents,
    expand_paths,
)
from mlgate.spool import Spool

# Signature facts for one workload, from the registries (`mlgate check --verify-images`).
ImageFacts = Callable[[tuple[CompiledPolicy, ...], WorkloadView], Mapping[str, ImageFact]]

# The first pass parses only documents that can be mlgate resources: those all spell out
# `apiVersion: mlgate.io/v1alpha1`, while workloads mention `mlgate.io/model` and the like.
_MLGATE_API_VERSION = re.compile(rf"{re.escape(api.GROUP)}/v\d")
# ... and runtimes and configs, which workloads merge in wherever they come in the input.
_CATALOG_KIND = re.compile(rf"\bkind[\"']?\s*:\s*[\"']?(?:{'|'.join(CATALOG_KINDS)})\b")


@dataclass(frozen=True, slots=True)
class CheckRequest:
    paths: Sequence[str]
    now: datetime
    policy_paths: Sequence[str] = ()
    model_paths: Sequence[str] = ()
    runtime_paths: Sequence[str] = ()  # runtimes and configs only: merged in, not judged
    # For documents without metadata.namespace, as `kubectl apply -n` would place them.
    namespace: str | None = None
    # --verify-images: signature facts from the registries; None leaves signatures unverified.
    verify_images: ImageFacts | None = None


class Status(StrEnum):
    DENIED = "denied"  # an Enforce violation: the apiserver would reject it
    WARNED = "warned"  # Warn violations only: admitted with warnings
    AUDITED = "audited"  # Audit violations only: admitted and recorded
    COMPLIANT = "compliant"
    SKIPPED = "skipped"  # not a workload kind: nothing to judge


@dataclass(frozen=True, slots=True)
class Result:
    """The verdict on one document; small, so thousands can be kept for the report."""

    ref: DocRef
    api_version: str
    kind: str
    namespace: str
    name: str
    decision: Decision
    supported: bool  # a workload kind mlgate knows, or another document it judges
    # A workload kind, as opposed to another judged document (a NetworkPolicy, an unknown kind
    # that carries containers): the summary counts them apart.
    workload: bool = True

    @property
    def status(self) -> Status:
        modes = {v.mode for v in self.decision.violations}
        if not self.decision.allowed or Mode.ENFORCE in modes:
            return Status.DENIED
        if Mode.WARN in modes:
            return Status.WARNED
        if Mode.AUDIT in modes:
            return Status.AUDITED
        return Status.COMPLIANT if self.supported else Status.SKIPPED


@dataclass(frozen=True, slots=True)
class Outcome:
    results: tuple[Result, ...] = ()
    errors: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()  # names of the policies judged against
    approvals: int = 0

    @property
    def exit_code(self) -> int:
        if self.errors:
            return 2
        return 1 if any(r.status is Status.DENIED for r in self.results) else 0

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status)


# ---------------------------------------------------------------------------------------------
# Pass 1: mlgate resources


def meta_field(obj: Mapping[str, Any], key: str) -> str:
    meta = obj.get("metadata")
    value = meta.get(key) if isinstance(meta, Mapping) else None
    return value if isinstance(value, str) else ""


def _with_namespace(obj: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    if not namespace or meta_field(obj, "namespace"):
        return obj
    meta = obj.get("metadata")
    return {
        **obj,
        "metadata": {**(meta if isinstance(meta, Mapping) else {}), "namespace": namespace},
    }


def _title(obj: Mapping[str, Any]) -> str:
    _, kind = api_version_kind(obj)
    name = meta_field(obj, "name") or "(unnamed)"
    namespace = meta_field(obj, "namespace")
    return f"{kind or '(no kind)'} {namespace + '/' if namespace else ''}{name}"


@dataclass(slots=True)
class _Defined:
    ref: DocRef
    resource: api.Resource


@dataclass(slots=True)
class Resources:
    """Policies and approvals collected from every source; a name defined twice must agree."""

    policies: dict[tuple[str, str, str], CompiledPolicy] = field(default_factory=dict)
    approvals: dict[str, Approval] = field(default_factory=dict)
    declared: dict[str, KindSpec] = field(default_factory=dict)  # WorkloadKinds by name
    defined: dict[tuple[str, str, str], _Defined] = field(default_factory=dict)
    errors: list[InputError] = field(default_factory=list)
    read: set[DocRef] = field(default_factory=set)  # so the second pass can tell what it missed
    runtimes: list[Mapping[str, Any]] = field(default_factory=list)  # catalog kinds, any order
    # DRA claims and claim templates among the manifests: the devices pods request through them
    claims: dict[tuple[str, str], Any] = field(default_factory=dict)
    # Objects the llm rules read as facts (guardrails, Services, routes, LLM workloads), as the
    # webhook gathers them from the cluster.
    related: list[dict[str, Any]] = field(default_factory=list)

    def add(self, doc: Document) -> None:
        self.read.add(doc.ref)
        try:
            resource = parse_resource(doc.obj)
            # Only an MLPolicy lives in a namespace; the others ignore one set by mistake.
            namespace = resource.metadata.namespace if isinstance(resource, api.MLPolicy) else ""
            key = (type(resource).__name__, namespace or "", resource.metadata.name)
            if not self._first_definition(key, doc.ref, resource):
                return
            if isinstance(resource, api.ApprovedModel):
                self.approvals[resource.metadata.name] = compile_approval(resource)
            elif isinstance(resource, api.ClusterMLPolicy | api.MLPolicy):
                self.policies[key] = compile_policy(resource)
            elif isinstance(resource, api.WorkloadKind):
                self.declared[resource.metadata.name] = compile_workload_kind(resource)
        except ValueError as exc:  # InvalidResource, and anything compiling finds
            self.errors.append(doc.ref.error(f"{_title(doc.obj)}: {exc}"))

    def _first_definition(
        self, key: tuple[str, str, str], ref: DocRef, resource: api.Resource
    ) -> bool:
        """The same resource may be given twice (-p dir and inside the manifests): harmless when
        identical; when not, which one the cluster would keep depends on the apply order."""
        earlier = self.defined.get(key)
        if earlier is None:
            self.defined[key] = _Defined(ref, resource)
            return True
        if earlier.resource != resource:
            raise ValueError(
                f"defined differently at {earlier.ref.location} ({earlier.ref.label}); "
                "keep one definition"
            )
        return False

    def kinds(self) -> Kinds:
        """The built-in kinds and those the WorkloadKinds given declare; for the same kind the
        first by name, as the operator decides."""
        declared: dict[tuple[str, str], KindSpec] = {}
        for _, spec in sorted(self.declared.items()):
            declared.setdefault((spec.group, spec.kind), spec)
        return Kinds(declared) if declared else BUILT_IN_ONLY

    def facts(self, now: datetime) -> Facts:
        # Offline: namespace labels, GPU usage and image signatures are unknown. The engine
        # then treats namespaces as governed and reports signature rules as unverified notes.
        return Facts(
            now=now,
            approvals=tuple(self.approvals.values()),
            runtimes=RuntimeCatalog.of(self.runtimes),
            device_claims=dict(self.claims),
            kinds=self.kinds(),
            related=tuple(self.related),
        )


def _may_be_mlgate(text: str) -> bool:
    return (
        _MLGATE_API_VERSION.search(text) is not None
        # The regex needs a kind's name verbatim: looking for the names first is many times
        # faster on the documents (nearly all) that name none.
        or (any(k in text for k in CATALOG_KINDS) and _CATALOG_KIND.search(text) is not None)
        or "ResourceClaim" in text
    )


def collect_resources(
    resource_sources: Iterable[Source],
    manifest_sources: Iterable[Source],
    namespace: str | None,
    runtime_sources: Iterable[Source] = (),
    spool: Spool | None = None,
) -> Resources:
    """Every mlgate resource and runtime: -p/--models and --runtimes sources must hold nothing
    else; manifest sources are scanned for them among the workloads (and kept in `spool`, if
    given, for the passes after this one)."""
    found = Resources()
    for source in resource_sources:
        for doc in documents(source):
            _collect(found, _only_mlgate(doc), namespace)
    for source in runtime_sources:
        for doc in documents(source):
            if isinstance(doc, InputError):
                found.errors.append(doc)
            elif catalog_key(doc.obj) is None:
                found.errors.append(
                    doc.ref.error(f"{_title(doc.obj)} is not a runtime or config kind")
                )
            else:
                found.runtimes.append(_with_namespace(doc.obj, namespace))
    candidates: set[DocRef] = set()  # may be facts for the llm rules
    for source in manifest_sources:
        for doc in documents(source, _may_be_interesting, spool):
            if isinstance(doc, InputError) or api.is_mlgate_document(doc.obj):
                _collect(found, doc, namespace)
            elif catalog_key(doc.obj) is not None:
                found.runtimes.append(_with_namespace(doc.obj, namespace))
            elif (claim := _claim(doc.obj)) is not None:
                found.claims[claim[0]] = claim[1]
            # A fact for the llm rules may be a runtime too (a custom LLM ServingRuntime).
            if isinstance(doc, Document):
                candidates.add(doc.ref)
    _collect_related(found, manifest_sources, candidates, namespace, spool)
    return found


def _collect_related(
    found: Resources,
    manifest_sources: Iterable[Source],
    candidates: set[DocRef],
    namespace: str | None,
    spool: Spool | None,
) -> None:
    """The facts for the llm rules. Only those rules read them, so without a policy that has
    llm rules they are not looked for (recognising an LLM server costs more than the rest of
    reading a document); otherwise the candidates are read once more, then the guardrail kinds
    the policies declare."""
    policies = tuple(found.policies.values())
    if all(p.llm is None for p in policies):
        return
    for source in manifest_sources:
        for doc in documents(source, spool=spool):
            if isinstance(doc, Document) and doc.ref in candidates and related.is_related(doc.obj):
                found.related.append(_with_namespace(doc.obj, namespace))
    contracts = related.contract_kinds(policies)
    if contracts:
        for source in manifest_sources:
            for doc in documents(source, spool=spool):
                if isinstance(doc, Document) and related.of_kinds(doc.obj, contracts):
                    found.related.append(_with_namespace(doc.obj, namespace))


def _claim(obj: Mapping[str, Any]) -> tuple[tuple[str, str], Any] | None:
    """A ResourceClaim or ResourceClaimTemplate (any served version): its key and claim spec."""
    api_version, kind = api_version_kind(obj)
    if not api_version.startswith(f"{DRA_GROUP}/") or kind not in {CLAIM, TEMPLATE}:
        return None
    return (kind, meta_field(obj, "name")), claim_spec(kind, obj)


def _may_be_interesting(text: str) -> bool:
    return _may_be_mlgate(text) or related.may_be_related(text)


def _only_mlgate(doc: Document | InputError) -> Document | InputError:
    if isinstance(doc, InputError) or api.is_mlgate_document(doc.obj):
        return doc
    return doc.ref.error(
        f"{_title(doc.obj)} is not a ClusterMLPolicy, MLPolicy, ApprovedModel or WorkloadKind; "
        "pass manifests to judge as PATH arguments"
    )


def _collect(found: Resources, doc: Document | InputError, namespace: str | None) -> None:
    if isinstance(doc, InputError):
        found.errors.append(doc)
    else:
        found.add(Document(doc.ref, _with_namespace(doc.obj, namespace)))


def one_per_file(errors: Iterable[InputError]) -> tuple[str, ...]:
    """One line per bad file: its first problem, and how many more it has. A rendered chart or a
    generated List can break the same way in every document; a line each would bury the cause.
    Errors about no file (a missing path) keep a line each; a problem both passes found is one.
    """
    first: dict[str | InputError, str] = {}  # by file, or the error itself when it has none
    more: dict[str | InputError, set[str]] = {}
    for error in errors:
        key = error if error.source is None else error.source
        if key not in first:
            first[key], more[key] = str(error), set()
        elif str(error) != first[key]:
            more[key].add(str(error))
    return tuple(_with_count(first[key], len(more[key])) for key in first)


def _with_count(message: str, more: int) -> str:
    if not more:
        return message
    return f"{message} (and {more} more problem{'s' if more > 1 else ''} in this file)"


# ---------------------------------------------------------------------------------------------
# Pass 2: workloads


def judge(
    doc: Document,
    policies: tuple[CompiledPolicy, ...],
    facts: Facts,
    verify_images: ImageFacts | None = None,
    view: WorkloadView | Unsupported | None = None,
) -> Result | InputError:
    """`view` is the document's effective view when the caller has it already: it is computed
    at most once per document here (the engine's `evaluate` computes its own)."""
    obj = doc.obj
    api_version, kind = api_version_kind(obj)
    try:
        if verify_images is not None:
            item = effective_view(obj, facts.runtimes, facts.kinds) if view is None else view
            if isinstance(item, WorkloadView):
                facts = replace(facts, images=verify_images(policies, item))
        decision = evaluate(policies, obj, facts)
    except Exception as exc:  # an engine bug must still name the document, not traceback
        return doc.ref.error(
            f"mlgate failed to judge {_title(obj)}: {type(exc).__name__}: {exc} "
            "(a bug in mlgate: please report it with this document)"
        )
    return Result(
        ref=doc.ref,
        api_version=api_version,
        kind=kind,
        namespace=meta_field(obj, "namespace"),
        name=meta_field(obj, "name") or meta_field(obj, "generateName"),
        decision=decision,
        supported=facts.kinds.lookup(api_version, kind) is not None
        or egress.is_network_policy(obj)
        or (exposure.is_exposure(obj) and bool(decision.matched_policies)),
        workload=facts.kinds.lookup(api_version, kind) is not None,
    )


@dataclass(slots=True)
class _QuotaLedger:
    """What the workloads admitted so far in this run hold per namespace, per resource: one run
    is judged against a namespace quota together, as the webhook reserves each admitted
    workload, so seven 16-GPU workloads in one file do not each pass a 32-GPU quota on their own.
    Each policy counts the resources it names, as in the cluster.

    Offline there are no observed pods, so a charge counts as what it reserves, and the charges
    of a namespace add up resource by resource: one summed charge per namespace counts the same
    as all of them (and keeps each judgement O(1), not O(workloads so far)). Only kept when a
    policy has a namespace quota: nothing else reads it."""

    enabled: bool
    held: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, policies: tuple[CompiledPolicy, ...]) -> _QuotaLedger:
        return cls(any(p.gpu is not None and p.gpu.namespace_quota is not None for p in policies))

    def facts(self, obj: Mapping[str, Any], facts: Facts) -> Facts:
        held = self.held.get(meta_field(obj, "namespace")) if self.enabled else None
        others = (GpuLoad(reserved=dict(held)),) if held else ()
        return replace(facts, gpu_usage=GpuUsage(others=others))

    def admit(
        self,
        result: Result | InputError,
        view: Callable[[], WorkloadView | Unsupported],
        facts: Facts,
    ) -> None:
        if not self.enabled or isinstance(result, InputError) or not result.decision.allowed:
            return
        item = view()
        if isinstance(item, WorkloadView):
            held = self.held.setdefault(item.namespace, {})
            for resource, n in workload_amounts(item, facts.device_claims).items():
                held[resource] = held.get(resource, 0) + n


@dataclass(slots=True)
class _OnceView:
    """A document's effective view, computed when first asked for and then kept."""

    obj: Mapping[str, Any]
    facts: Facts
    item: WorkloadView | Unsupported | None = None

    def __call__(self) -> WorkloadView | Unsupported:
        if self.item is None:
            self.item = effective_view(self.obj, self.facts.runtimes, self.facts.kinds)
        return self.item


def judge_all(
    sources: Iterable[Source],
    found: Resources,
    now: datetime,
    namespace: str | None,
    read_only: bool = False,
    *,
    verify_images: ImageFacts | None = None,
    spool: Spool | None = None,
) -> Iterator[Result | InputError]:
    """Verdicts in input order. `read_only` only reads, to report every bad document at once
    when verdicts will not be shown anyway."""
    policies, facts = tuple(found.policies.values()), found.facts(now)
    quota = _QuotaLedger.of(policies)
    for source in sources:
        for doc in documents(source, spool=spool):
            if isinstance(doc, InputError):
                yield doc
            elif not all(api_version_kind(doc.obj)):
                yield doc.ref.error("not a Kubernetes object: apiVersion and kind must be set")
            elif api.is_mlgate_document(doc.obj):
                if doc.ref not in found.read:  # its text escaped the first pass's filter
                    yield doc.ref.error(f"{_title(doc.obj)}: apiVersion must be {api.API_VERSION}")
            elif not read_only:
                placed = Document(doc.ref, _with_namespace(doc.obj, namespace))
                view = _OnceView(placed.obj, facts)
                result = judge(
                    placed,
                    policies,
                    quota.facts(placed.obj, facts),
                    verify_images,
                    view() if verify_images is not None else None,
                )
                quota.admit(result, view, facts)
                yield result


def first_pass(
    request: CheckRequest, stdin: TextIO, spool: Spool
) -> tuple[list[Source], Resources, list[InputError]]:
    """The manifest sources, every mlgate resource, and the input errors found so far; the
    manifests parsed are kept in `spool` for the next pass."""
    seen: set[str] = set()
    resource_sources, errors = expand_paths(
        [*request.policy_paths, *request.model_paths], stdin, seen
    )
    runtime_sources, runtime_errors = expand_paths(request.runtime_paths, stdin, seen)
    manifest_sources, more_errors = expand_paths(request.paths, stdin, seen)
    problems = [*errors, *runtime_errors, *more_errors]
    found = collect_resources(
        resource_sources, manifest_sources, request.namespace, runtime_sources, spool
    )
    return manifest_sources, found, problems + found.errors


def run(request: CheckRequest, stdin: TextIO) -> Outcome:
    """Both passes; on any bad input the outcome holds only errors, as partial verdicts (say,
    against a policy set missing the policy that failed to parse) would mislead."""
    with Spool() as spool:
        manifest_sources, found, problems = first_pass(request, stdin, spool)
        results: list[Result] = []
        for item in judge_all(
            manifest_sources,
            found,
            request.now,
            request.namespace,
            bool(problems),
            verify_images=request.verify_images,
            spool=spool,
        ):
            if isinstance(item, InputError):
                problems.append(item)
            elif not problems:
                results.append(item)
    if problems:
        return Outcome(errors=one_per_file(problems))
    return Outcome(
        results=tuple(results),
        policies=tuple(p.name for p in found.policies.values()),
        approvals=len(found.approvals),
    )
