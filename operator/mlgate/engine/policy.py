"""Compiled policies and the cluster facts the engine judges against: plain immutable data.

`mlgate.api` compiles the CRD models into these once per change; the hot path only reads them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from mlgate.engine.decisions import Mode
from mlgate.engine.model_uris import Identity, identity
from mlgate.engine.runtimes import RuntimeCatalog
from mlgate.engine.workloads import BUILT_IN_ONLY, Kinds


class UnknownKinds(StrEnum):
    """What a policy does with an object of a kind mlgate cannot judge that runs containers."""

    DENY = "Deny"  # a violation in the policy's mode: denied under Enforce
    WARN = "Warn"  # at most a warning, whatever the mode
    ALLOW = "Allow"  # admitted silently: the platform team vouches for those kinds


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    # (key, operator, values) with operator In | NotIn | Exists | DoesNotExist
    match_expressions: tuple[tuple[str, str, frozenset[str]], ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    namespaces: tuple[re.Pattern[str], ...] = ()
    exclude_namespaces: tuple[re.Pattern[str], ...] = ()
    namespace_selector: LabelSelector | None = None
    kinds: frozenset[str] = frozenset()  # empty: every supported kind
    selector: LabelSelector | None = None
    # An MLPolicy applies only in its own namespace.
    own_namespace: str | None = None


@dataclass(frozen=True, slots=True)
class ImagePattern:
    """A compiled allowlist glob: the host must match exactly (or its glob), the path by glob."""

    source: str
    host: re.Pattern[str]
    path: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A trusted public key: inline PEM, or a Secret the operator resolves."""

    id: str  # "sha256:<hex of the DER public key>" or "secret:<namespace>/<name>/<key>"
    pem: str | None = None
    secret: tuple[str, str, str] | None = None  # (namespace, name, key)


@dataclass(frozen=True, slots=True)
class SignatureRule:
    images: tuple[ImagePattern, ...]
    keys: tuple[KeyRef, ...]

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(k.id for k in self.keys)


@dataclass(frozen=True, slots=True)
class ImageRules:
    allowed_registries: tuple[ImagePattern, ...] | None = None
    require_digest: bool = False
    disallow_tags: frozenset[str] = frozenset()
    signatures: tuple[SignatureRule, ...] | None = None
    # With signatures: pin images verified by tag to their digest at admission (engine.pinning);
    # when off, a tag-only reference is refused, since the tag could move after admission.
    mutate_digest: bool = True


@dataclass(frozen=True, slots=True)
class SignatureRequirement:
    """Whose OMS signature an approval must record; both empty: any verified signer."""

    key_ids: frozenset[str] = frozenset()
    identities: tuple[tuple[str, str | None], ...] = ()  # (identity, OIDC issuer or None)


@dataclass(frozen=True, slots=True)
class ModelRules:
    require_approved: bool = True
    require_reference: bool = False
    # Provenance (engine.model_provenance): references must pin a revision; approvals must carry
    # this evidence to count.
    require_immutable: bool = False
    require_digest: bool = False
    require_scan: bool = False
    require_signature: SignatureRequirement | None = None
    # None: downloads are not verified in the pod; else the (init container, model path)
    # downloads the policy names besides KServe's storage-initializer (engine.modelverify).
    verify_loaded: tuple[tuple[str, str], ...] | None = None
    annotations: tuple[str, ...] = ("mlgate.io/model", "mlgate.io/model-uri")
    env: tuple[str, ...] = ("MODEL_URI", "MODEL_ID", "HF_MODEL_ID", "STORAGE_URI")
    # Accept model env and endpoint variables mlgate cannot read (envFrom, valueFrom).
    allow_indirect_references: bool = False
    # Values endpoint variables (HF_ENDPOINT, AWS_ENDPOINT_URL, ...) may take; no trailing "/".
    allowed_endpoints: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class NetworkPolicyRules:
    manage: bool = True
    allow_dns: bool = True
    allowed_cidrs: tuple[str, ...] = ()
    allowed_ports: tuple[int, ...] = ()
    allowed_namespaces: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EgressRules:
    allow_host_network: bool = False
    allow_host_pid: bool = False
    allow_host_ipc: bool = False
    allow_privileged: bool = False
    allow_network_capabilities: bool = False
    allow_secondary_networks: bool = False
    network_policy: NetworkPolicyRules | None = None


# Resource names a GpuRules remembers; real clusters use a few dozen extended resources.
MAX_CLASSIFIED = 1024


@dataclass(frozen=True, slots=True)
class GpuRules:
    resources: tuple[re.Pattern[str], ...]
    max_per_pod: int | None = None
    max_per_workload: int | None = None
    namespace_quota: int | None = None
    allowed_products: frozenset[str] = frozenset()
    # Whether `resources` count a resource name, classified once per name for as long as this
    # compiled policy is in force (a policy change compiles a new one). Bounded: names come
    # from workloads, and one past the bound is matched without being remembered.
    _classified: dict[str, bool] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False
    )

    def counts(self, resource: str) -> bool:
        """Whether this policy counts `resource` as GPUs (its patterns, usually 12 or more)."""
        known = self._classified.get(resource)
        if known is None:
            known = any(p.fullmatch(resource) for p in self.resources)
            if len(self._classified) < MAX_CLASSIFIED:
                self._classified[resource] = known
        return known


@dataclass(frozen=True, slots=True)
class GuardrailContract:
    """A guardrail kind the policy accepts: objects of `api_version`/`kind` whose labels match
    `selector` guard the LLM that the string at `target_field` (dotted path) names, by name,
    Service name, host name or URL."""

    api_version: str
    kind: str
    resource: str  # plural, for listing
    target_field: str
    selector: LabelSelector | None = None


@dataclass(frozen=True, slots=True)
class GuardrailRules:
    # Built-in guardrail kinds accepted: GuardrailsOrchestrator, NemoGuardrail,
    # ClusterGuardrailPolicy (engine.guardrails.BUILT_IN).
    accept: frozenset[str] = frozenset()
    contracts: tuple[GuardrailContract, ...] = ()
    # Workloads with these labels are guardrail detectors (e.g. Llama Guard), not guarded LLMs.
    detector_selector: LabelSelector | None = None
    # ApprovedModel names (globs) a guardrail's own model must be approved as; empty: any.
    guardrail_models: tuple[re.Pattern[str], ...] = ()
    model_annotations: tuple[str, ...] = ("mlgate.io/model", "mlgate.io/model-uri")


@dataclass(frozen=True, slots=True)
class LlmRules:
    # Extra LLM servers: (name, image globs, commands), as engine.llm.LlmServer.
    servers: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()
    require_guardrail: GuardrailRules | None = None
    no_direct_exposure: bool = False
    require_rate_limit: bool = False


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    name: str  # "ClusterMLPolicy/<name>" or "MLPolicy/<namespace>/<name>"
    mode: Mode
    match: Match
    images: ImageRules | None = None
    models: ModelRules | None = None
    egress: EgressRules | None = None
    gpu: GpuRules | None = None
    # Set when no version of the policy compiles: it then denies everything it governs.
    invalid: str | None = None
    unknown_kinds: UnknownKinds = UnknownKinds.DENY
    llm: LlmRules | None = None


@dataclass(frozen=True, slots=True)
class Signer:
    """Who signed an approved model, as `mlgate approve-model` verified and recorded it."""

    method: str  # key | certificate | sigstore
    key_id: str | None = None
    identity: str | None = None
    issuer: str | None = None

    def describe(self) -> str:
        who = self.key_id or self.identity or "unknown"
        return f"{self.method} {who}" + (f" from {self.issuer}" if self.issuer else "")


@dataclass(frozen=True, slots=True)
class Approval:
    name: str
    model: str
    version: str
    uris: frozenset[str]  # normalised: no trailing slash
    digest: str | None = None
    scan_result: str | None = None  # clean | suspicious | dangerous | error, as recorded
    signer: Signer | None = None
    signature_problem: str | None = None  # why a recorded signature was not accepted
    expires: datetime | None = None
    revoked: bool = False
    namespaces: tuple[re.Pattern[str], ...] = ()  # globs; empty: every namespace
    # What `uris` approve (model_uris.identity), parsed once per approval rather than per
    # reference of every admission: a reference matches by one set lookup.
    identities: frozenset[Identity] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "identities", frozenset(identity(u) for u in self.uris))


@dataclass(frozen=True, slots=True)
class ImageFact:
    """What the registry adapter found for one image reference."""

    digest: str | None = None
    verified_by: frozenset[str] = frozenset()  # key ids whose signature over `digest` verified
    error: str | None = None  # why verification could not succeed


@dataclass(frozen=True, slots=True)
class GpuLoad:
    """One charge in a namespace's GPU ledger: what is reserved for it (durably, by admissions)
    and what its existing pods use, per extended resource. It counts as the larger of the two."""

    reserved: Mapping[str, int] = field(default_factory=dict)
    observed: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GpuUsage:
    """A namespace's GPU use as the workload under judgement sees it.

    `others` is every charge except the workload's own. A workload with a controlling owner
    that holds a reservation (a Deployment's ReplicaSet and Pods, a Job's Pods) is judged
    against that reservation: `owner` is it, with `observed` counting only the owner's pods
    outside the workload. The workload fits inside it when, for every resource, those pods plus
    the workload's demand stay within the reservation; otherwise it is charged in full.
    """

    others: tuple[GpuLoad, ...] = ()
    owner: GpuLoad | None = None
    owner_name: str = ""  # e.g. "Deployment web", for messages
    # The workload's demand in every resource the ledger tracks (the union of all policies'
    # resources): coverage is decided on it, the same way whichever policy judges.
    demand: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Facts:
    now: datetime
    # None: the namespace's labels are unknown (offline check); selectors then count as matching.
    namespace_labels: Mapping[str, str] | None = None
    approvals: tuple[Approval, ...] = ()
    # GPUs already used or reserved in the workload's namespace; None: unknown (offline check).
    gpu_usage: GpuUsage | None = None
    # None: signatures were not verified (offline check); rules report them as unverified.
    images: Mapping[str, ImageFact] | None = None
    # The runtimes and configs workloads may name; None views each object on its own.
    runtimes: RuntimeCatalog | None = None
    # DRA claims the workload's pods name: (kind, name) -> claim spec. None: not gathered.
    device_claims: Mapping[tuple[str, str], Any] | None = None
    # The kinds mlgate judges: built in, and those WorkloadKinds declare.
    kinds: Kinds = BUILT_IN_ONLY
    # Objects around the workload that guardrail and exposure rules read: guardrails, Services,
    # routes, gateways, rate-limit policies and LLM workloads of its namespace, and the
    # cluster-scoped guardrail policies. None: not gathered (no policy has llm rules).
    related: tuple[Mapping[str, Any], ...] | None = None
