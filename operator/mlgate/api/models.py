"""The custom resources of mlgate.io/v1alpha1 as pydantic models.

These models are the single source of truth: the CRD schemas in `crds/` are generated from them
(`make crds`), and `mlgate check` validates documents with them before compiling.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from mlgate.engine.decisions import Mode
from mlgate.engine.gpu import DEFAULT_RESOURCES
from mlgate.engine.policy import UnknownKinds
from mlgate.engine.references import InvalidReference, compile_pattern

GROUP = "mlgate.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Globs over names: DNS-1123 characters plus `*`.
NAME_GLOB = r"^[a-z0-9*]([-a-z0-9.*]*[a-z0-9*])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
RESOURCE_GLOB = r"^[a-z0-9.*-]+/[a-zA-Z0-9.*_-]+$"
PEM_PUBLIC_KEY = r"^\s*-----BEGIN PUBLIC KEY-----[A-Za-z0-9+/=\s]+-----END PUBLIC KEY-----\s*$"
# kserve-storage:// is KServe's `storage: {key, path}` (engine/modelrefs.py).
MODEL_URI = r"^(s3|gs|hf|oci|pvc|https|http|az|file|kserve-storage)://\S+$"

DEFAULT_GPU_RESOURCES = list(DEFAULT_RESOURCES)
DEFAULT_DEVICE_CLASSES = ["gpu.nvidia.com", "mig.nvidia.com", "gpu.amd.com", "gpu.intel.com"]
DEFAULT_MODEL_ANNOTATIONS = ["mlgate.io/model", "mlgate.io/model-uri"]
DEFAULT_MODEL_ENV = ["MODEL_URI", "MODEL_ID", "HF_MODEL_ID", "STORAGE_URI"]


class Spec(BaseModel):
    """Base of every spec object: camelCase on the wire, unknown fields are errors."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(Spec):
    key: Annotated[str, Field(min_length=1, max_length=317)]
    operator: SelectorOperator
    values: list[Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)]] = []

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        needs_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if needs_values != bool(self.values):
            raise ValueError(
                f"operator {self.operator} {'needs' if needs_values else 'takes no'} values"
            )
        return self


class LabelSelector(Spec):
    match_labels: dict[str, Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)]] = {}
    match_expressions: list[LabelSelectorRequirement] = []


class Match(Spec):
    """Which workloads a policy governs."""

    namespace_selector: LabelSelector | None = Field(
        None, description="Namespaces whose labels match; OR-ed with `namespaces`."
    )
    namespaces: list[Annotated[str, Field(pattern=NAME_GLOB, max_length=253)]] = Field(
        [], description="Namespace names or globs. Empty with no selector: every namespace."
    )
    exclude_namespaces: list[Annotated[str, Field(pattern=NAME_GLOB, max_length=253)]] = Field(
        [], description="Never governed. kube-system and mlgate's own namespace always are."
    )
    kinds: list[Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]*$")]] = Field(
        [], description="Workload kinds; empty means every supported kind."
    )
    selector: LabelSelector | None = Field(None, description="Label selector on the workload.")


class SecretKeyRef(Spec):
    namespace: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)]
    key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)]


class PublicKey(Spec):
    """A cosign public key, inline or from a Secret."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.publicKey) != has(self.secretRef)",
                    "message": "set exactly one of publicKey or secretRef",
                }
            ]
        }
    )
    public_key: Annotated[str, Field(pattern=PEM_PUBLIC_KEY, max_length=16384)] | None = None
    secret_ref: SecretKeyRef | None = None

    @field_validator("public_key")
    @classmethod
    def _pem_parses(cls, pem: str | None) -> str | None:
        if pem is not None:
            # Imported for the few policies with keys: `mlgate check` starts faster without it.
            from cryptography.exceptions import UnsupportedAlgorithm  # noqa: PLC0415
            from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
                load_pem_public_key,
            )

            try:
                load_pem_public_key(pem.encode())
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                raise ValueError(f"malformed PEM public key: {exc}") from None
        return pem

    @model_validator(mode="after")
    def _exactly_one(self) -> PublicKey:
        if (self.public_key is None) == (self.secret_ref is None):
            raise ValueError("set exactly one of publicKey or secretRef")
        return self


def _check_image_glob(glob: str) -> str:
    try:
        compile_pattern(glob)
    except InvalidReference as exc:
        raise ValueError(str(exc)) from None
    return glob


# Validated one by one, so an error names the item: spec.images.allowedRegistries[1].
ImageGlob = Annotated[
    str,
    Field(min_length=1, max_length=512, pattern=r"^[a-zA-Z0-9._:*/\[\]-]+$"),
    AfterValidator(_check_image_glob),
]


class SignatureEntry(Spec):
    images: Annotated[list[ImageGlob], Field(min_length=1)]
    keys: Annotated[list[PublicKey], Field(min_length=1)]


class Images(Spec):
    allowed_registries: list[ImageGlob] | None = Field(
        None, description="Repository globs images must come from (`*` spans path segments)."
    )
    require_digest: StrictBool = Field(
        False, description="Images must be pinned by @sha256 digest."
    )
    disallow_tags: list[Annotated[str, Field(pattern=r"^[\w][\w.-]{0,127}$")]] = []
    signatures: list[SignatureEntry] | None = Field(
        None, description="If set, every image must be covered by an entry and verify."
    )
    mutate_digest: StrictBool = Field(
        True,
        description="With signatures, rewrite each image verified by tag to its verified digest "
        "(repo:tag@sha256:...) at admission, so a moved tag cannot change what runs. When "
        "false, images covered by signatures must already be pinned by digest.",
    )


class ModelSources(Spec):
    annotations: list[Annotated[str, Field(min_length=1, max_length=317)]] = Field(
        default_factory=lambda: list(DEFAULT_MODEL_ANNOTATIONS)
    )
    env: list[Annotated[str, Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")]] = Field(
        default_factory=lambda: list(DEFAULT_MODEL_ENV)
    )


class SignerIdentity(Spec):
    identity: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        description="Certificate identity (SAN email or URI) of the signer."
    )
    issuer: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        None, description="OIDC issuer of a sigstore signer; unset: any."
    )


class ModelSignatureRequirement(Spec):
    keys: list[PublicKey] = Field(
        [], description="Public keys (inline PEM) whose OMS signature counts."
    )
    identities: list[SignerIdentity] = Field(
        [], description="Certificate or sigstore identities whose OMS signature counts."
    )

    @field_validator("keys")
    @classmethod
    def _inline(cls, keys: list[PublicKey]) -> list[PublicKey]:
        if any(k.public_key is None for k in keys):
            raise ValueError("model signature keys must be inline (publicKey), not secretRef")
        return keys


class Downloader(Spec):
    init_container: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
    path: Annotated[str, Field(pattern=r"^/\S*$", max_length=1024)] = Field(
        description="Where it writes the model (what the verifier checks)."
    )


class VerifyLoaded(Spec):
    downloaders: list[Downloader] = Field(
        [],
        description="Init containers that download the model, besides KServe's "
        "storage-initializer (always recognised).",
    )


class Models(Spec):
    require_approved: StrictBool = Field(
        True, description="Every model reference must be approved."
    )
    require_reference: StrictBool = Field(
        False, description="Workloads must name at least one model."
    )
    allow_indirect_references: StrictBool = Field(
        False,
        description="Accept model env names and endpoint variables set through envFrom or "
        "valueFrom, which mlgate cannot read at admission.",
    )
    allowed_endpoints: list[Annotated[str, Field(min_length=1, max_length=2048)]] = Field(
        [],
        description="Values endpoint variables (HF_ENDPOINT, AWS_ENDPOINT_URL, ...) may take; "
        "compared literally, ignoring a trailing slash.",
    )
    require_immutable: StrictBool = Field(
        False,
        description="References must pin a revision (hf @commit, S3 versionId, GCS "
        "#generation, oci @sha256).",
    )
    require_digest: StrictBool = Field(
        False, description="Approvals count only with a content digest (OMS manifest)."
    )
    require_scan: StrictBool = Field(
        False, description="Approvals count only with a clean unsafe-serialisation scan."
    )
    require_signature: ModelSignatureRequirement | None = Field(
        None,
        description="Approvals count only with a verified OMS signature by these keys or "
        "identities ({}: any verified signer).",
    )
    verify_loaded: VerifyLoaded | None = Field(
        None,
        description="Enforce only: inject `mlgate verify-model` after each download into a pod "
        "and check the files against the approved digest before the server starts.",
    )
    sources: ModelSources = Field(default_factory=ModelSources)


class NetworkPolicySpec(Spec):
    manage: StrictBool = Field(True, description="Keep NetworkPolicy mlgate-egress in scope.")
    allow_dns: StrictBool = Field(True, alias="allowDNS")
    allowed_cidrs: list[Annotated[str, Field(max_length=64)]] = Field([], alias="allowedCIDRs")
    allowed_ports: list[Annotated[int, Field(ge=1, le=65535)]] = []
    allowed_namespaces: list[Annotated[str, Field(pattern=NAME_GLOB, max_length=63)]] = []

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs_parse(cls, cidrs: list[str]) -> list[str]:
        import ipaddress  # noqa: PLC0415 - only policies with CIDRs pay for it

        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"invalid CIDR {cidr!r}: {exc}") from None
        return cidrs


class Egress(Spec):
    """Under an egress policy every way out of the pod's network namespace is denied unless
    allowed here (docs/rules.md, egress side doors)."""

    allow_host_network: StrictBool = False
    allow_host_pid: StrictBool = Field(False, alias="allowHostPID")
    allow_host_ipc: StrictBool = Field(False, alias="allowHostIPC")
    allow_privileged: StrictBool = Field(
        False, description="Privileged and Windows HostProcess containers."
    )
    allow_network_capabilities: StrictBool = Field(
        False, description="Capabilities NET_ADMIN, NET_RAW, SYS_ADMIN or ALL."
    )
    allow_secondary_networks: StrictBool = Field(
        False, description="Multus annotations k8s.v1.cni.cncf.io/networks, default-network."
    )
    network_policy: NetworkPolicySpec | None = None


class Gpu(Spec):
    resources: list[Annotated[str, Field(pattern=RESOURCE_GLOB, max_length=253)]] = Field(
        default_factory=lambda: list(DEFAULT_GPU_RESOURCES),
        description="Extended resources counted as GPUs (globs).",
    )
    # strict: `true` or "8" is a mistake to report, not a limit of 1 or 8 to guess.
    max_per_pod: Annotated[int, Field(ge=0, strict=True)] | None = None
    max_per_workload: Annotated[int, Field(ge=0, strict=True)] | None = Field(
        None, description="Whole workload: replicas x pods, all roles of a training job."
    )
    namespace_quota: Annotated[int, Field(ge=0, strict=True)] | None = Field(
        None, description="Sum over running pods and admitted workloads in the namespace."
    )
    allowed_products: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        [], description="Values of node label nvidia.com/gpu.product the pods may select."
    )
    device_classes: list[Annotated[str, Field(pattern=NAME_GLOB, max_length=253)]] = Field(
        default_factory=lambda: list(DEFAULT_DEVICE_CLASSES),
        description="DRA device classes whose devices count as GPUs (globs).",
    )


class GuardrailKind(StrEnum):
    ORCHESTRATOR = "GuardrailsOrchestrator"
    NEMO = "NemoGuardrail"
    GATEWAY_POLICY = "ClusterGuardrailPolicy"


class GuardrailContract(Spec):
    """A guardrail kind of the cluster's own: which objects count and which field names the LLM."""

    api_version: Annotated[str, Field(pattern=r"^[a-z0-9.-]+/[a-z0-9]+$", max_length=253)]
    kind: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=63)]
    resource: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)] = (
        Field(description="The kind's plural resource name, which the webhook lists.")
    )
    selector: LabelSelector | None = Field(
        None, description="Label selector on the guardrail objects; none: every object of kind."
    )
    target_field: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")] = Field(
        description="Dotted path of the field naming the guarded LLM: its name, its Service's "
        "name or host name, or its URL (e.g. spec.upstream.url)."
    )


class RequireGuardrail(Spec):
    accept: list[GuardrailKind] = Field(
        default_factory=lambda: list(GuardrailKind),
        description="Built-in guardrail kinds that count (default: all of them).",
    )
    contracts: list[GuardrailContract] = Field(
        [], description="Further guardrail kinds, declared by the policy."
    )
    detector_selector: LabelSelector | None = Field(
        default_factory=lambda: LabelSelector(match_labels={"trustyai/guardrails": "true"}),
        description="LLM workloads with these labels are guardrail detectors (Llama Guard, ...): "
        "instead of a guardrail of their own, their model must be an approved guardrail model "
        "(one of guardrailModels; with none named, detectors need a guardrail too).",
    )
    guardrail_models: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        [],
        description="ApprovedModel `model` names (globs) a guardrail's own model must be approved "
        "as; empty: any approved model.",
    )


class LlmServerSpec(Spec):
    name: Annotated[str, Field(min_length=1, max_length=63)]
    images: list[Annotated[str, Field(pattern=r"^[a-z0-9._:*/@-]+$", max_length=512)]] = Field(
        [], description="Globs over the image as host/path:tag, lower case (`*` spans `/`)."
    )
    commands: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        [], description="A command token, or two (`vllm serve`), that starts the server."
    )


class Llm(Spec):
    """Rules for LLM-serving workloads (docs/rules.md, llm)."""

    servers: list[LlmServerSpec] = Field(
        [], description="LLM servers beyond the built-in table (vLLM, SGLang, TGI, NIM, ...)."
    )
    require_guardrail: RequireGuardrail | None = Field(
        None, description="An LLM must be targeted by an accepted guardrail."
    )
    no_direct_exposure: StrictBool = Field(
        True,
        description="No LoadBalancer/NodePort Service, Ingress, route straight to the LLM's pods.",
    )
    require_rate_limit: StrictBool = Field(
        False, description="A Kuadrant (Token)RateLimitPolicy must target the LLM's route."
    )


class PolicySpec(Spec):
    mode: Mode = Field(Mode.ENFORCE, description="Enforce denies, Warn warns, Audit reports.")
    unknown_kinds: UnknownKinds = Field(
        UnknownKinds.DENY,
        description="An object of a kind mlgate cannot judge that runs containers: Deny (a "
        "violation in this policy's mode), Warn (at most a warning) or Allow.",
    )
    match: Match = Field(default_factory=Match)
    images: Images | None = None
    models: Models | None = None
    egress: Egress | None = None
    gpu: Gpu | None = None
    llm: Llm | None = None


class ScanResult(StrEnum):
    CLEAN = "clean"
    SUSPICIOUS = "suspicious"
    DANGEROUS = "dangerous"
    ERROR = "error"


class ModelScan(Spec):
    """The unsafe-serialisation scan `mlgate approve-model` ran."""

    scanner: Annotated[str, Field(min_length=1, max_length=63)]
    version: Annotated[str, Field(min_length=1, max_length=63)]
    result: ScanResult
    findings: list[Annotated[str, Field(max_length=1024)]] = Field(
        [], max_length=100, description="What the scanner found (first 100)."
    )
    allowed_unsafe_reason: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        None, description="Why an unsafe model was approved anyway (--allow-unsafe --reason)."
    )


class SignerMethod(StrEnum):
    KEY = "key"
    CERTIFICATE = "certificate"
    SIGSTORE = "sigstore"


class ModelSignature(Spec):
    """The OMS signature `mlgate approve-model` verified over the same files as `digest`."""

    method: SignerMethod
    signer: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        description="Key id (sha256:<hex of the DER public key>) or certificate identity."
    )
    issuer: Annotated[str, Field(max_length=1024)] | None = None
    public_key: Annotated[str, Field(pattern=PEM_PUBLIC_KEY, max_length=16384)] | None = Field(
        None, description="method key: the signer's public key (PEM)."
    )
    bundle: Annotated[str, Field(max_length=1048576)] | None = Field(
        None,
        description="method key: the OMS signature (sigstore bundle JSON). mlgate re-verifies "
        "it with publicKey against digest; without it a key signer does not count.",
    )


class ApprovedModelSpec(Spec):
    model: Annotated[str, Field(min_length=1, max_length=253)]
    version: Annotated[str, Field(min_length=1, max_length=128)]
    uris: list[Annotated[str, Field(pattern=MODEL_URI, max_length=2048)]] = Field(
        [],
        description="Where the model may be loaded from; a revision-pinned URI (hf @commit, "
        "?versionId=, #generation, @sha256:) approves that revision only.",
    )
    digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")] | None = Field(
        None, description="OMS manifest digest of the files (the signature subject)."
    )
    scan: ModelScan | None = None
    signature: ModelSignature | None = None
    approved_by: Annotated[str, Field(max_length=253)] | None = None
    expires: datetime | None = Field(None, description="After this time the approval is void.")
    revoked: StrictBool = False
    namespaces: list[Annotated[str, Field(pattern=NAME_GLOB, max_length=63)]] = Field(
        [], description="Namespaces that may use the model; empty means all."
    )

    @field_validator("expires")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires needs a time zone, e.g. 2027-06-30T00:00:00Z")
        return value


class Condition(Spec):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(max_length=1024)] = ""
    message: Annotated[str, Field(max_length=32768)] = ""
    observed_generation: int | None = None
    last_transition_time: datetime | None = None


class LastGood(Spec):
    """The last spec mlgate compiled, kept in force while the current spec is invalid."""

    generation: int | None = None
    spec: str = Field(description="The spec as JSON, written by mlgate.")


class PolicyStatus(Spec):
    conditions: list[Condition] = []
    last_good: LastGood | None = Field(
        None, description="The last valid spec; enforced while the current one is invalid."
    )
    violations: int | None = Field(None, description="Violations found by the background audit.")
    observed_generation: int | None = None


class ApprovedModelStatus(Spec):
    conditions: list[Condition] = []
    last_good: LastGood | None = Field(
        None, description="The last valid spec; in force while the current one is invalid."
    )


# --- WorkloadKind: a kind taught declaratively (engine.kindspec) ------------------------------

FIELD_PATH = r'^[A-Za-z0-9_*."\[\]/ :@#%+=~-]*$'
# A field path: `spec.tasks[*].template`, `spec.replicaSpecs.*.template`, `a["x/y"]`.
FieldPathText = Annotated[str, Field(max_length=512, pattern=FIELD_PATH)]


class ReplicaFactor(Spec):
    """One factor of a pod count: the largest number found at `paths`, else `default`."""

    paths: list[FieldPathText] = Field(
        [],
        description="Numbers read here (the largest present counts); wildcards bind to the "
        "item or key the location matched.",
    )
    default: Annotated[int, Field(ge=0, strict=True)] = Field(
        1, description="When no path holds a number."
    )
    unbounded_by_default: StrictBool = Field(
        False, description="When no path holds a number, the count has no limit."
    )
    ceiling: list[FieldPathText] = Field(
        [],
        description="An autoscaler's maximum: the factor is at least this, and unbounded "
        "when it is unset.",
    )
    autoscaled: FieldPathText | None = Field(
        None, description="The ceiling applies only while this switch is on (default: always)."
    )
    zero_unset: StrictBool = Field(False, description="A ceiling of 0 means no ceiling.")
    less_one_with: FieldPathText | None = Field(
        None, description="One pod fewer when this field is set (a leader takes one pod)."
    )
    unbounded_unless: FieldPathText | None = Field(
        None, description="No limit unless this field holds one of boundedBy."
    )
    bounded_by: list[Annotated[str, Field(max_length=253)]] = []


class ContainerRoleName(StrEnum):
    APP = "container"
    INIT = "initContainer"
    SIDECAR = "sidecar"


class ContainerFieldSpec(Spec):
    """A container-shaped field, relative to its pod spec; "" is the pod spec itself."""

    path: FieldPathText
    role: ContainerRoleName = ContainerRoleName.APP
    name: Annotated[str, Field(max_length=253)] = ""
    resources: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=128)] = "resources"
    image_default: FieldPathText | None = Field(
        None, description="Absolute path of the image the container runs when it names none."
    )
    gpus: FieldPathText | None = Field(None, description="Relative path of a plain GPU count.")
    gpu_resource: FieldPathText | None = Field(
        None, description="Relative path of the resource name those GPUs are of."
    )
    gpu_resource_default: Annotated[str, Field(pattern=RESOURCE_GLOB, max_length=253)] = (
        "nvidia.com/gpu"
    )
    instance_type: FieldPathText | None = Field(
        None, description="Absolute path of a node type whose GPUs the container takes."
    )
    gpus_per_instance: dict[
        Annotated[str, Field(max_length=253)], Annotated[int, Field(ge=0, strict=True)]
    ] = Field({}, description="GPUs per node type named at instanceType.")


class Shape(StrEnum):
    POD_TEMPLATE = "PodTemplate"
    POD_SPEC = "PodSpec"
    OBJECT = "Object"


class PodLocation(Spec):
    path: FieldPathText = Field(description="Where the pods are; wildcards [*] and * allowed.")
    shape: Shape = Field(
        Shape.POD_TEMPLATE,
        description="PodTemplate (metadata and spec), PodSpec, or Object (a whole object of "
        "another kind, judged by that kind).",
    )
    replicas: list[ReplicaFactor] = Field([], description="A product of factors; empty: 1.")
    role: Annotated[str, Field(max_length=253)] = ""
    role_path: FieldPathText | None = None
    containers: list[ContainerFieldSpec] = Field(
        [],
        description="Container fields besides containers, initContainers and ephemeralContainers.",
    )
    annotations: FieldPathText | None = Field(
        None, description="The pods' annotations, where not in a PodTemplate's metadata."
    )
    exclude: list[Annotated[str, Field(max_length=253)]] = []


class ModelFieldSpec(Spec):
    path: FieldPathText
    prefix: Annotated[str, Field(max_length=64, pattern=r"^([a-z0-9]+://)?$")] = Field(
        "", description="Put before a value that is not a URI, e.g. hf://."
    )


class WorkloadKindScope(StrEnum):
    NAMESPACED = "Namespaced"
    CLUSTER = "Cluster"


class WorkloadKindSpec(Spec):
    group: Annotated[
        str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    ]
    kind: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$")]
    plural: Annotated[
        str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ]
    versions: Annotated[
        list[Annotated[str, Field(pattern=r"^v[0-9]+((alpha|beta)[0-9]+)?$", max_length=63)]],
        Field(min_length=1),
    ]
    scope: WorkloadKindScope = WorkloadKindScope.NAMESPACED
    per_node: StrictBool = Field(False, description="Pods run one per node: per-pod limits only.")
    pods: list[PodLocation] = []
    models: list[ModelFieldSpec] = []


class WorkloadKindStatus(Spec):
    conditions: list[Condition] = []


class ObjectMeta(BaseModel):
    """The part of metadata mlgate reads; the rest is the apiserver's business."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: Annotated[str, Field(min_length=1, max_length=253)]
    namespace: str | None = None
    generation: int | None = None


class Resource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    api_version: Literal["mlgate.io/v1alpha1"] = Field(alias="apiVersion")
    metadata: ObjectMeta


class ClusterMLPolicy(Resource):
    kind: Literal["ClusterMLPolicy"]
    spec: PolicySpec
    status: PolicyStatus | None = None


class MLPolicy(Resource):
    kind: Literal["MLPolicy"]
    spec: PolicySpec
    status: PolicyStatus | None = None


class ApprovedModel(Resource):
    kind: Literal["ApprovedModel"]
    spec: ApprovedModelSpec
    status: ApprovedModelStatus | None = None


class WorkloadKind(Resource):
    kind: Literal["WorkloadKind"]
    spec: WorkloadKindSpec
    status: WorkloadKindStatus | None = None


MLGATE_KINDS: dict[str, type[Resource]] = {
    "ClusterMLPolicy": ClusterMLPolicy,
    "MLPolicy": MLPolicy,
    "ApprovedModel": ApprovedModel,
    "WorkloadKind": WorkloadKind,
}


def is_mlgate_document(doc: Any) -> bool:
    return isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith(f"{GROUP}/")


NAME_GLOB_RE = re.compile(NAME_GLOB)
