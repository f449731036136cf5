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
    """Turn a policy's findings into violations carrying its name, mode and ATLAS ids."""
    return [Violation(policy, mode, f.rule, f.path, f.message, ATLAS[f.rule]) for f in findings]
