"""Model references (KServe fields, annotations, env) judged against ApprovedModels."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from mlgate.engine import model_env, servers
from mlgate.engine.commandline import container_env
from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.model_provenance import immutability_problem, missing_evidence
from mlgate.engine.model_uris import identity
from mlgate.engine.modelrefs import ModelRef
from mlgate.engine.policy import Approval, ModelRules
from mlgate.engine.workloads import ContainerView, PodView, WorkloadView, metadata_path

_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", re.ASCII)
# Env vars whose bare values are Hugging Face repository ids.
_HF_ENV = frozenset({"HF_MODEL_ID", "MODEL_ID"})
# Kubeflow Trainer's dataset initializer: its STORAGE_URI names a dataset, not a model. Only
# where Trainer puts it (a container and replicated job both so named), so that naming an
# ordinary container after it hides nothing.
DATASET_CONTAINERS = frozenset({"dataset-initializer"})


class Source(Enum):
    """What a reference's value may be, by where it was found.

    `name@version` is a declaration, so only annotations may use it (design section 3): a value
    the server loads (env, storageUri) must be a URI, or `fraud-detector@3` in MODEL_URI would
    borrow that model's approval for whatever the server makes of the string.
    """

    ANNOTATION = "annotation"  # URI or name@version
    LOCATION = "location"  # URI only
    HF_LOCATION = "hf-location"  # URI or bare Hugging Face id
    INDIRECT = "indirect"  # valueFrom: unknown at admission, judged by model_env


@dataclass(frozen=True, slots=True)
class Wanted:
    """A model reference in a comparable form: a URI, or a name and a version."""

    uri: str | None = None
    name: str | None = None
    version: str | None = None


def normalise(value: str, hf_id: bool = False, name_version: bool = False) -> Wanted | None:
    """None when the value names no URI (nor, where allowed, a version or Hugging Face id), so it
    cannot be matched to an approval."""
    text = value.strip()
    if _URI.match(text):
        return Wanted(uri=text.rstrip("/"))
    name, sep, version = text.rpartition("@")
    if name_version and sep and name and version:
        return Wanted(name=name, version=version)
    if hf_id and _HF_ID.match(text):
        return Wanted(uri=f"hf://{text}")
    return None


def references(rules: ModelRules, view: WorkloadView) -> Iterator[tuple[ModelRef, Source]]:
    """Every model reference with what its value may be."""
    for ref in view.model_refs:
        yield ref, _location(ref)
    yield from _annotation_references(rules, view.annotations, "metadata")
    for pod in view.pods:
        # A bare Pod's annotations are the workload's, judged above.
        if pod.annotations and pod.path != "spec" and pod.annotations is not view.annotations:
            yield from _annotation_references(rules, pod.annotations, metadata_path(pod))
        for container in pod.containers:
            if not (container.name in DATASET_CONTAINERS and pod.role in DATASET_CONTAINERS):
                yield from _env_references(rules, container)
            yield from _server_references(view, pod, container)


def _annotation_references(
    rules: ModelRules, annotations: Mapping[str, str], metadata: str
) -> Iterator[tuple[ModelRef, Source]]:
    for key in rules.annotations:
        if key in annotations:
            path = f'{metadata}.annotations["{key}"]'
            yield ModelRef(annotations[key], path), Source.ANNOTATION


def _env_references(
    rules: ModelRules, container: ContainerView
) -> Iterator[tuple[ModelRef, Source]]:
    for env in container.env:
        if env.name in rules.env:
            if env.value is None:
                yield ModelRef("", env.path), Source.INDIRECT
            elif env.name in _HF_ENV:
                yield ModelRef(env.value, env.path), Source.HF_LOCATION
            else:
                yield ModelRef(env.value, env.path), Source.LOCATION


def _server_references(
    view: WorkloadView, pod: PodView, container: ContainerView
) -> Iterator[tuple[ModelRef, Source]]:
    """The models an LLM server in the container is told to load (engine/servers.py)."""
    spec = container.spec
    command, args = spec.get("command"), spec.get("args")
    if not (command or args):  # most containers: nothing tells a server which model to load
        return
    env = container_env((e.name, e.value) for e in container.env)
    entry = servers.entrypoint(container.image, spec, container.path)
    found = servers.command_refs(command, args, container.path, env, entry)
    for ref in found:
        value = servers.local_model(ref.value, spec, pod.spec, view.kind)
        if value is not None:
            yield ModelRef(value, ref.path), _location(ref)


def _location(ref: ModelRef) -> Source:
    return Source.HF_LOCATION if ref.hf_ids else Source.LOCATION


def _matching(wanted: Wanted, approvals: tuple[Approval, ...]) -> list[Approval]:
    """The approvals of `wanted`, in their order. A URI is parsed once here, not once per
    approval: each approval holds its URIs' identities."""
    if wanted.uri is not None:
        key = identity(wanted.uri)
        return [a for a in approvals if key in a.identities]
    return [a for a in approvals if a.model == wanted.name and a.version == wanted.version]


def _why_void(approval: Approval, namespace: str, now: datetime) -> str | None:
    if approval.revoked:
        return f"approval {approval.name} is revoked"
    if approval.expires is not None and approval.expires <= now:
        return f"approval {approval.name} expired at {approval.expires.isoformat()}"
    if approval.namespaces and not any(g.fullmatch(namespace) for g in approval.namespaces):
        return f"approval {approval.name} does not cover namespace {namespace or '(unset)'}"
    return None


def _why_insufficient(
    approval: Approval, rules: ModelRules, namespace: str, now: datetime
) -> str | None:
    void = _why_void(approval, namespace, now)
    if void is not None:
        return void
    missing = missing_evidence(approval, rules)
    if missing:
        return f"approval {approval.name} lacks {', '.join(missing)}"
    return None


def counting_approvals(
    uri: str, approvals: tuple[Approval, ...], rules: ModelRules, namespace: str, now: datetime
) -> list[Approval]:
    """The approvals that approve the model URI `uri` under `rules` (in force, with the
    evidence the rules demand)."""
    wanted = normalise(uri)
    if wanted is None:
        return []
    return [
        a
        for a in _matching(wanted, approvals)
        if _why_insufficient(a, rules, namespace, now) is None
    ]


_PLAIN_APPROVAL = ModelRules()


def _approval_problem(
    wanted: Wanted,
    approvals: tuple[Approval, ...],
    rules: ModelRules,
    namespace: str,
    now: datetime,
) -> str | None:
    reasons = []
    for approval in _matching(wanted, approvals):
        reason = _why_insufficient(approval, rules, namespace, now)
        if reason is None:
            return None  # one approval that counts is enough: the others' faults do not matter
        reasons.append(reason)
    return "; ".join(reasons) if reasons else "no ApprovedModel matches it"


def approval_problem(
    wanted: Wanted,
    approvals: tuple[Approval, ...],
    namespace: str,
    now: datetime,
    rules: ModelRules = _PLAIN_APPROVAL,
) -> str | None:
    """Why no approval covers `wanted` in `namespace` at `now`; None when one does. Without
    `rules` an approval in force (not expired, revoked or restricted away) is enough: no
    evidence (digest, scan, signature) is demanded."""
    return _approval_problem(wanted, approvals, rules, namespace, now)


def _unrecognised(value: str, source: Source) -> str:
    if source is Source.ANNOTATION:
        return (
            f"model reference {value!r} names neither a URI (s3://, hf://, ...) nor "
            "name@version; reference an approved model precisely"
        )
    hf = " or Hugging Face id (org/name)" if source is Source.HF_LOCATION else ""
    return (
        f"model reference {value!r} is not a model URI (s3://, hf://, ...){hf}; reference an "
        "approved model by one of its URIs"
    )


def _problem(
    value: str,
    source: Source,
    approvals: tuple[Approval, ...],
    rules: ModelRules,
    *,
    namespace: str,
    now: datetime,
) -> str | None:
    """Why the reference `value` is not an approved model; None when it is."""
    if not value.strip():
        return "model reference is empty, so it cannot be checked; set the approved model URI"
    wanted = normalise(
        value,
        hf_id=source is Source.HF_LOCATION,
        name_version=source is Source.ANNOTATION,
    )
    if wanted is None:
        return _unrecognised(value, source)
    problem = _approval_problem(wanted, approvals, rules, namespace, now)
    if problem is None:
        return None
    return (
        f"model {value!r} is not approved: {problem}; use an approved model or ask "
        "security to approve this one (ApprovedModel)"
    )


def _approval_findings(
    refs: list[tuple[ModelRef, Source]],
    approvals: tuple[Approval, ...],
    rules: ModelRules,
    namespace: str,
    now: datetime,
) -> Iterator[Finding]:
    # Containers and replicas of a workload usually repeat one model: each distinct value is
    # judged once, and every reference to it gets the verdict at its own path.
    verdicts: dict[tuple[str, Source], str | None] = {}
    for ref, source in refs:
        if source is Source.INDIRECT:
            continue  # model_env reports it, or the policy accepts indirect references
        key = (ref.value, source)
        if key not in verdicts:
            verdicts[key] = _problem(
                ref.value, source, approvals, rules, namespace=namespace, now=now
            )
        problem = verdicts[key]
        if problem is not None:
            yield Finding(Rule.MODELS_APPROVAL, ref.path, problem)


def check(
    rules: ModelRules, view: WorkloadView, approvals: tuple[Approval, ...], now: datetime
) -> list[Finding]:
    refs = list(references(rules, view))
    findings: list[Finding] = []
    if rules.require_reference and not refs and view.runs_pods:
        findings.append(
            Finding(
                Rule.MODELS_REFERENCE,
                "metadata.annotations",
                "the workload declares no model; add annotation "
                f"{rules.annotations[0] if rules.annotations else 'mlgate.io/model'}"
                "=<name>@<version> or a model URI",
            )
        )
    if rules.require_immutable:
        findings.extend(_mutable(refs))
    if rules.require_approved:
        findings.extend(_approval_findings(refs, approvals, rules, view.namespace, now))
        findings += model_env.check(rules, view)
    return findings


def _mutable(refs: list[tuple[ModelRef, Source]]) -> Iterator[Finding]:
    """References whose content can change behind them (models.requireImmutable)."""
    for ref, source in refs:
        wanted = normalise(ref.value, hf_id=source is Source.HF_LOCATION)
        problem = immutability_problem(wanted.uri) if wanted and wanted.uri else None
        if problem is not None:
            yield Finding(Rule.MODELS_IMMUTABLE, ref.path, problem)
