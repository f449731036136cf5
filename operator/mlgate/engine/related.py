"""The objects the llm rules read as facts, as one table: the webhook lists them in the
namespace of the object it judges; `mlgate check` keeps them from its input."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlgate.engine.llm import SERVERS, recognise
from mlgate.engine.policy import CompiledPolicy


@dataclass(frozen=True, slots=True)
class RelatedKind:
    group: str
    versions: tuple[str, ...]  # tried in order: the first one the cluster serves is read
    kind: str
    plural: str
    namespaced: bool = True
    workload: bool = False  # a fact only when it serves an LLM
    exposure: bool = False  # may expose an LLM: judged by llm.noDirectExposure


_GATEWAY = "gateway.networking.k8s.io"
RELATED: tuple[RelatedKind, ...] = (
    RelatedKind("", ("v1",), "Service", "services", exposure=True),
    RelatedKind("", ("v1",), "ConfigMap", "configmaps"),
    RelatedKind("networking.k8s.io", ("v1",), "Ingress", "ingresses", exposure=True),
    RelatedKind(_GATEWAY, ("v1", "v1beta1"), "HTTPRoute", "httproutes", exposure=True),
    RelatedKind(_GATEWAY, ("v1", "v1alpha2"), "GRPCRoute", "grpcroutes", exposure=True),
    RelatedKind(_GATEWAY, ("v1alpha2",), "TCPRoute", "tcproutes", exposure=True),
    RelatedKind(_GATEWAY, ("v1alpha2",), "TLSRoute", "tlsroutes", exposure=True),
    # Routes from other namespaces reach this one's Services only through a ReferenceGrant here.
    RelatedKind(_GATEWAY, ("v1beta1",), "ReferenceGrant", "referencegrants", exposure=True),
    RelatedKind("route.openshift.io", ("v1",), "Route", "routes", exposure=True),
    RelatedKind("inference.networking.k8s.io", ("v1",), "InferencePool", "inferencepools"),
    RelatedKind(
        "inference.networking.x-k8s.io", ("v1alpha2",), "InferencePool", "inferencepools"
    ),
    RelatedKind(
        "trustyai.opendatahub.io", ("v1alpha1",), "GuardrailsOrchestrator",
        "guardrailsorchestrators",
    ),
    RelatedKind(
        "trustyai.opendatahub.io", ("v1alpha1",), "ClusterGuardrailPolicy",
        "clusterguardrailpolicies", namespaced=False,
    ),
    RelatedKind("apps.nvidia.com", ("v1alpha1",), "NemoGuardrail", "nemoguardrails"),
    # What an InferenceService may run on: a runtime running an LLM server makes it an LLM.
    RelatedKind("serving.kserve.io", ("v1alpha1",), "ServingRuntime", "servingruntimes"),
    RelatedKind(
        "serving.kserve.io", ("v1alpha1",), "ClusterServingRuntime", "clusterservingruntimes",
        namespaced=False,
    ),
    RelatedKind("kuadrant.io", ("v1alpha1",), "TokenRateLimitPolicy", "tokenratelimitpolicies"),
    RelatedKind("kuadrant.io", ("v1", "v1beta3"), "RateLimitPolicy", "ratelimitpolicies"),
    # LLM-serving workloads, for the exposure rule's view of what a Service reaches.
    RelatedKind("apps", ("v1",), "Deployment", "deployments", workload=True),
    RelatedKind("apps", ("v1",), "StatefulSet", "statefulsets", workload=True),
    RelatedKind("", ("v1",), "Pod", "pods", workload=True),
    RelatedKind(
        "serving.kserve.io", ("v1beta1",), "InferenceService", "inferenceservices", workload=True
    ),
    RelatedKind(
        "serving.kserve.io", ("v1alpha2", "v1alpha1"), "LLMInferenceService",
        "llminferenceservices", workload=True,
    ),
    RelatedKind(
        "leaderworkerset.x-k8s.io", ("v1",), "LeaderWorkerSet", "leaderworkersets", workload=True
    ),
    RelatedKind("ray.io", ("v1",), "RayService", "rayservices", workload=True),
    RelatedKind("apps.nvidia.com", ("v1alpha1",), "NIMService", "nimservices", workload=True),
    RelatedKind("kaito.sh", ("v1beta1", "v1alpha1"), "Workspace", "workspaces", workload=True),
)  # fmt: skip

_FACT_KINDS = frozenset((k.group, k.kind) for k in RELATED if not k.workload)
# A cheap look at a document's text before parsing it: its kind, or a server it may run.
_TEXT = re.compile(
    r"kind:\s*[\"']?(?:" + "|".join(sorted({k.kind for k in RELATED})) + r")\b"
    r"|vllm|sglang|text-generation|huggingface|nvcr\.io/nim|trtllm|tensorrt-llm|ray-llm"
    r"|ray\.serve\.llm|llama|ollama|lmdeploy",
    re.IGNORECASE,
)


def contract_kinds(policies: tuple[CompiledPolicy, ...]) -> tuple[RelatedKind, ...]:
    """The guardrail kinds policies declare (llm.requireGuardrail.contracts), to read too."""
    return tuple(
        RelatedKind(c.api_version.rpartition("/")[0], (c.api_version.rpartition("/")[2],),
                    c.kind, c.resource)
        for p in policies
        if p.llm is not None and p.llm.require_guardrail is not None
        for c in p.llm.require_guardrail.contracts
    )  # fmt: skip


def may_be_related(text: str) -> bool:
    return _TEXT.search(text) is not None


def _group_kind(obj: Mapping[str, Any]) -> tuple[str, Any]:
    api_version = obj.get("apiVersion")
    return (api_version.rpartition("/")[0] if isinstance(api_version, str) else "", obj.get("kind"))


def of_kinds(obj: Mapping[str, Any], kinds: tuple[RelatedKind, ...]) -> bool:
    return _group_kind(obj) in {(k.group, k.kind) for k in kinds}


def is_related(obj: Mapping[str, Any]) -> bool:
    """Whether `obj` is a fact for the llm rules: a related kind or an LLM-serving workload
    (any InferenceService: whether it is one may depend on its runtime)."""
    group_kind = _group_kind(obj)
    return (
        group_kind in _FACT_KINDS
        or group_kind == ("serving.kserve.io", "InferenceService")
        or recognise(obj, SERVERS) is not None
    )


def runtimes(related: tuple[Mapping[str, Any], ...]) -> tuple[Mapping[str, Any], ...]:
    """The KServe serving runtimes among the facts."""
    return tuple(o for o in related if o.get("kind") in ("ServingRuntime", "ClusterServingRuntime"))
