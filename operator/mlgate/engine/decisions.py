"""Decisions and violations: the engine's output, plain immutable data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Mode(StrEnum):
    """How a policy's violations affect admission."""

    ENFORCE = "Enforce"
    WARN = "Warn"
    AUDIT = "Audit"


class Rule(StrEnum):
    """Rule identifiers, stable: users filter and alert on them."""

    IMAGES_REGISTRY = "images.registry"
    IMAGES_DIGEST = "images.digest"
    IMAGES_TAG = "images.tag"
    IMAGES_SIGNATURE = "images.signature"
    MODELS_APPROVAL = "models.approval"
    MODELS_REFERENCE = "models.reference"
    MODELS_INDIRECT_REFERENCE = "models.indirectReference"
    MODELS_ENDPOINT = "models.endpoint"
    MODELS_IMMUTABLE = "models.immutable"
    MODELS_VERIFIER = "models.verifier"
    GPU_MAX_PER_POD = "gpu.maxPerPod"
    GPU_MAX_PER_WORKLOAD = "gpu.maxPerWorkload"
    GPU_NAMESPACE_QUOTA = "gpu.namespaceQuota"
    GPU_PRODUCT = "gpu.product"
    EGRESS_HOST_NETWORK = "egress.hostNetwork"
    EGRESS_HOST_PID = "egress.hostPID"
    EGRESS_HOST_IPC = "egress.hostIPC"
    EGRESS_PRIVILEGED = "egress.privileged"
    EGRESS_CAPABILITIES = "egress.capabilities"
    EGRESS_SECONDARY_NETWORK = "egress.secondaryNetwork"
    EGRESS_NETWORK_POLICY = "egress.networkPolicy"
    WORKLOAD_UNSUPPORTED = "workload.unsupported"
    WORKLOAD_RUNTIME = "workload.runtime"
    POLICY_INVALID = "policy.invalid"
    LLM_GUARDRAIL = "llm.requireGuardrail"
    LLM_DIRECT_EXPOSURE = "llm.noDirectExposure"
    LLM_RATE_LIMIT = "llm.requireRateLimit"


# MITRE ATLAS techniques per rule family (design section 3).
ATLAS: dict[Rule, tuple[str, ...]] = {
    Rule.IMAGES_REGISTRY: ("AML.T0010", "AML.T0010.004"),
    Rule.IMAGES_DIGEST: ("AML.T0010", "AML.T0010.004"),
    Rule.IMAGES_TAG: ("AML.T0010", "AML.T0010.004"),
    Rule.IMAGES_SIGNATURE: ("AML.T0010", "AML.T0010.004"),
    Rule.MODELS_APPROVAL: ("AML.T0010.003", "AML.T0058"),
    Rule.MODELS_REFERENCE: ("AML.T0010.003", "AML.T0058"),
    Rule.MODELS_INDIRECT_REFERENCE: ("AML.T0010.003", "AML.T0058"),
    Rule.MODELS_ENDPOINT: ("AML.T0010.003", "AML.T0058"),
    Rule.MODELS_IMMUTABLE: ("AML.T0010.003", "AML.T0058", "AML.T0018"),
    Rule.MODELS_VERIFIER: ("AML.T0010.003", "AML.T0058", "AML.T0018"),
    Rule.GPU_MAX_PER_POD: ("AML.T0029", "AML.T0034"),
    Rule.GPU_MAX_PER_WORKLOAD: ("AML.T0029", "AML.T0034"),
    Rule.GPU_NAMESPACE_QUOTA: ("AML.T0029", "AML.T0034"),
    Rule.GPU_PRODUCT: ("AML.T0029", "AML.T0034"),
    Rule.EGRESS_HOST_NETWORK: ("AML.T0025", "AML.T0024.002"),
    Rule.EGRESS_HOST_PID: ("AML.T0025", "AML.T0024.002"),
    Rule.EGRESS_HOST_IPC: ("AML.T0025", "AML.T0024.002"),
    Rule.EGRESS_PRIVILEGED: ("AML.T0025", "AML.T0024.002"),
    Rule.EGRESS_CAPABILITIES: ("AML.T0025", "AML.T0024.002"),
    Rule.EGRESS_SECONDARY_NETWORK: ("AML.T0025", "AML.T0024.002"),
    Rule.EGRESS_NETWORK_POLICY: ("AML.T0025", "AML.T0024.002"),
    Rule.WORKLOAD_UNSUPPORTED: ("AML.T0010",),
    Rule.WORKLOAD_RUNTIME: ("AML.T0010",),
    Rule.POLICY_INVALID: (),  # not an attack technique: mlgate failing closed
    # AML.M0020 is a mitigation (Generative AI Guardrails) rather than a technique: the rule
    # demands it; AML.T0051 (LLM Prompt Injection) and AML.T0054 (LLM Jailbreak) are what it stops.
    Rule.LLM_GUARDRAIL: ("AML.M0020", "AML.T0051", "AML.T0054"),
    Rule.LLM_DIRECT_EXPOSURE: ("AML.M0020", "AML.T0051", "AML.T0054"),
    Rule.LLM_RATE_LIMIT: ("AML.T0029", "AML.T0034"),
}

# OWASP Top 10 for LLM Applications 2025, where a category fits the rule (design section 3):
# LLM01 prompt injection, LLM02 sensitive information disclosure, LLM03 supply chain, LLM04 data
# and model poisoning, LLM05 improper output handling, LLM09 misinformation, LLM10 unbounded
# consumption.
_SUPPLY_CHAIN = ("LLM03",)
_MODEL_PROVENANCE = ("LLM03", "LLM04")
_CONSUMPTION = ("LLM10",)
_GUARDRAILED = ("LLM01", "LLM02", "LLM05", "LLM09")
OWASP: dict[Rule, tuple[str, ...]] = {
    Rule.IMAGES_REGISTRY: _SUPPLY_CHAIN,
    Rule.IMAGES_DIGEST: _SUPPLY_CHAIN,
    Rule.IMAGES_TAG: _SUPPLY_CHAIN,
    Rule.IMAGES_SIGNATURE: _SUPPLY_CHAIN,
    Rule.MODELS_APPROVAL: _MODEL_PROVENANCE,
    Rule.MODELS_REFERENCE: _MODEL_PROVENANCE,
    Rule.MODELS_INDIRECT_REFERENCE: _MODEL_PROVENANCE,
    Rule.MODELS_ENDPOINT: _MODEL_PROVENANCE,
    Rule.MODELS_IMMUTABLE: _MODEL_PROVENANCE,
    Rule.MODELS_VERIFIER: _MODEL_PROVENANCE,
    Rule.GPU_MAX_PER_POD: _CONSUMPTION,
    Rule.GPU_MAX_PER_WORKLOAD: _CONSUMPTION,
    Rule.GPU_NAMESPACE_QUOTA: _CONSUMPTION,
    Rule.GPU_PRODUCT: _CONSUMPTION,
    # Egress limits stop a workload sending what it holds (data, weights) out of the cluster.
    Rule.EGRESS_HOST_NETWORK: ("LLM02",),
    Rule.EGRESS_HOST_PID: ("LLM02",),
    Rule.EGRESS_HOST_IPC: ("LLM02",),
    Rule.EGRESS_PRIVILEGED: ("LLM02",),
    Rule.EGRESS_CAPABILITIES: ("LLM02",),
    Rule.EGRESS_SECONDARY_NETWORK: ("LLM02",),
    Rule.EGRESS_NETWORK_POLICY: ("LLM02",),
    Rule.WORKLOAD_UNSUPPORTED: _SUPPLY_CHAIN,
    Rule.WORKLOAD_RUNTIME: _SUPPLY_CHAIN,
    Rule.LLM_GUARDRAIL: _GUARDRAILED,
    Rule.LLM_DIRECT_EXPOSURE: _GUARDRAILED,
    Rule.LLM_RATE_LIMIT: _CONSUMPTION,
}


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's complaint about one field, before it is attributed to a policy."""

    rule: Rule
    path: str
    message: str


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule of one policy at one field of the workload."""

    policy: str
    mode: Mode
    rule: Rule
    path: str
    message: str
    atlas: tuple[str, ...]
    owasp: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"[{self.policy}] {self.rule} at {self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one workload against every policy that matched it."""

    allowed: bool
    violations: tuple[Violation, ...] = ()
    matched_policies: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def by_mode(self, mode: Mode) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.mode is mode)

    @property
    def denials(self) -> tuple[Violation, ...]:
        return self.by_mode(Mode.ENFORCE)

    @property
    def warnings(self) -> tuple[Violation, ...]:
        return self.by_mode(Mode.WARN)


def attribute(policy: str, mode: Mode, findings: list[Finding]) -> list[Violation]:
    """Turn a policy's findings into violations carrying its name, mode, ATLAS and OWASP ids."""
    return [
        Violation(policy, mode, f.rule, f.path, f.message, ATLAS[f.rule], OWASP.get(f.rule, ()))
        for f in findings
    ]


def framework_ids(v: Violation) -> str:
    """`MITRE ATLAS ...; OWASP LLM ...` for messages; "" for a rule with neither (policy.invalid
    is mlgate failing closed, not an attack technique)."""
    ids = [f"MITRE ATLAS {', '.join(v.atlas)}"] if v.atlas else []
    ids += [f"OWASP {', '.join(v.owasp)}"] if v.owasp else []
    return "; ".join(ids)
