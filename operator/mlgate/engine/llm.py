"""Which objects serve an LLM: one table of LLM servers and one of LLM-serving kinds.

A server is recognised by its image repository or by its command line (including commands
wrapped in `sh -c` strings and Ray Serve configs); a kind is LLM-serving by itself
(LLMInferenceService, NIMService, a Kaito inference Workspace) or by what it runs. Policies add
servers of their own (`llm.servers`). Recognition reads the raw object, so kinds mlgate does not
otherwise judge (Kaito, NIM operator) are recognised too.

Input is untrusted: every read is type-checked, and anything odd means fewer matches of the
exposure and guardrail tables, never an exception.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlgate.engine.reads import as_map as _map
from mlgate.engine.reads import as_str as _str
from mlgate.engine.reads import mappings_under as _walk
from mlgate.engine.references import InvalidReference, parse


@dataclass(frozen=True, slots=True)
class LlmServer:
    """An LLM server: image globs (over `host/path:tag`, lower case; `*` spans `/`) and
    commands (one token, or two consecutive tokens such as `vllm serve`; a token also matches
    a dotted module path or `module:attr` below it)."""

    name: str
    images: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()


SERVERS: tuple[LlmServer, ...] = (
    LlmServer(
        "vllm",
        ("*/vllm/vllm-openai*", "*/vllm/vllm-tpu*", "*/rocm/vllm*", "*/llm-d/llm-d*",
         "*/vllm-openai:*", "*/vllm-openai@*", "*/kserve/vllmserver*"),
        ("vllm serve", "vllm.entrypoints"),
    ),
    LlmServer("sglang", ("*/lmsysorg/sglang*",), ("sglang.launch_server", "sglang serve")),
    LlmServer(
        "text-generation-inference",
        ("*/huggingface/text-generation-inference*",),
        ("text-generation-launcher",),
    ),
    LlmServer("kserve-huggingfaceserver", ("*/kserve/huggingfaceserver*",), ("huggingfaceserver",)),
    LlmServer("nvidia-nim", ("nvcr.io/nim/*",)),
    LlmServer(
        "tensorrt-llm",
        ("nvcr.io/nvidia/tensorrt-llm/*", "*/tritonserver:*-trtllm-*", "*/tritonserver:*-vllm-*"),
        ("trtllm-serve",),
    ),
    LlmServer("ray-serve-llm", ("*/rayproject/ray-llm*",), ("ray.serve.llm",)),
    LlmServer("llama.cpp", ("*/ggml-org/llama.cpp:server*",), ("llama-server",)),
    LlmServer("ollama", ("*/ollama/ollama*",), ("ollama serve",)),
    LlmServer("lmdeploy", ("*/openmmlab/lmdeploy*",), ("lmdeploy serve",)),
)  # fmt: skip

# KServe model formats and runtimes that are LLM servers (InferenceService predictors).
LLM_MODEL_FORMATS = frozenset({"huggingface", "vllm", "tgi", "sglang"})
# Runtime names of LLM servers (KServe's kserve-huggingfaceserver, Open Data Hub's vllm-runtime,
# tgis-runtime, ...); TrustyAI's guardrails-detector-huggingface classifiers are not among them.
_LLM_RUNTIME = re.compile(
    r"huggingfaceserver|vllm|\btgis?\b|text-generation|sglang|\bnim\b", re.IGNORECASE
)

# Kinds whose pods keep serving: an LLM image alone makes them LLM-serving. Batch kinds (Job,
# training jobs) only count when their command starts a server, since evaluation and batch
# inference use the same images.
SERVING_KINDS = frozenset(
    {"Pod", "Deployment", "ReplicaSet", "StatefulSet", "ReplicationController", "DaemonSet"}
    | {"LeaderWorkerSet", "RayService", "RayCluster", "InferenceService", "LLMInferenceService"}
    | {"NIMService", "Workspace", "Service"}  # a Knative Service (a core one runs nothing)
)
# Kinds that serve an LLM whatever they run: (API group, kind).
_ALWAYS_LLM = frozenset(
    {("serving.kserve.io", "LLMInferenceService"), ("apps.nvidia.com", "NIMService")}
)
KAITO_GROUP = "kaito.sh"
# Kinds that configure servers without running them: judged through the workloads naming them.
CONFIG_KINDS = frozenset(
    {"ServingRuntime", "ClusterServingRuntime", "LLMInferenceServiceConfig", "PodTemplate"}
    | {"TrainingRuntime", "ClusterTrainingRuntime", "ClusterStorageContainer"}
)
# A Ray Serve application importing an LLM server's module (or vLLM's examples).
_SERVE_LLM = re.compile(r"\b(?:vllm|sglang|ray\.serve\.llm)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LlmTarget:
    """An LLM-serving object: how its pods are labelled and which Services reach them."""

    api_version: str
    kind: str
    name: str
    namespace: str
    server: str  # what made it an LLM: a server name, a model format, or the kind
    pod_labels: tuple[Mapping[str, str], ...]  # label sets its pods will carry, one per template
    services: frozenset[str]  # Services its operator creates for it, by name
    labels: Mapping[str, str]  # of the object itself

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} ({self.server})"


# ---------------------------------------------------------------------------------------------
# Defensive reads


def _strings(value: Any) -> dict[str, str]:
    return {k: v for k, v in _map(value).items() if isinstance(k, str) and isinstance(v, str)}


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


# ---------------------------------------------------------------------------------------------
# Containers and commands


def _image_text(value: Any) -> str:
    """An image as `host/path:tag` in lower case; NIM operator's {repository, tag} form too."""
    if isinstance(value, Mapping):
        repo, tag = _str(value.get("repository")), _str(value.get("tag"))
        value = f"{repo}:{tag}" if repo and tag else repo
    if not isinstance(value, str) or not value:
        return ""
    try:
        ref = parse(value)
    except InvalidReference:
        return value.lower()
    suffix = f":{ref.tag}" if ref.tag else ""
    suffix += f"@{ref.digest}" if ref.digest else ""
    return f"{ref.host}/{ref.path}{suffix}".lower()


_SPLIT = re.compile(r"[\s;&|()'\"`]+")


def _tokens(values: Sequence[Any]) -> list[str]:
    """Command-line tokens: list items, split further so `sh -c "vllm serve m"` counts."""
    out: list[str] = []
    for value in values:
        if isinstance(value, str):
            out += [t for t in _SPLIT.split(value) if t]
    return out


def _token_matches(token: str, word: str) -> bool:
    base = token.rsplit("/", 1)[-1]
    return base == word or token.startswith((f"{word}.", f"{word}:"))


def _command_matches(tokens: list[str], command: str) -> bool:
    words = command.split()
    for i, token in enumerate(tokens):
        if _token_matches(token, words[0]) and tokens[i + 1 : i + len(words)] == words[1:]:
            return True
    return False


def _container_tokens(container: Mapping[str, Any]) -> list[str]:
    command, args = container.get("command"), container.get("args")
    return _tokens(
        [
            *(command if isinstance(command, list) else [command]),
            *(args if isinstance(args, list) else [args]),
        ]
    )


def _server_of(
    obj: Mapping[str, Any], servers: Sequence[LlmServer], images_count: bool
) -> str | None:
    """The first server any container-shaped mapping of the object runs."""
    spec_like = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    for node in _walk(spec_like):
        tokens = _container_tokens(node)
        # Ray Serve configs carry the server in a string field.
        if any(_SERVE_LLM.search(_str(node.get(k))) for k in ("serveConfigV2", "serveConfig")):
            return "ray-serve-llm"
        image = _image_text(node.get("image")) if images_count else ""
        for server in servers:
            if image and any(fnmatch.fnmatchcase(image, g) for g in server.images):
                return server.name
            if any(_command_matches(tokens, c) for c in server.commands):
                return server.name
    return None


# ---------------------------------------------------------------------------------------------
# Kinds: pod labels and operator-made Services


def _template_labels(template: Any) -> dict[str, str]:
    return _strings(_map(_map(template).get("metadata")).get("labels"))


def _pod_labels(obj: Mapping[str, Any], kind: str, name: str) -> tuple[Mapping[str, str], ...]:
    """The labels each of the object's pod templates gives its pods, with those its operator
    adds (KServe, LeaderWorkerSet, Kaito, NIM operator) that mlgate can predict."""
    spec = _map(obj.get("spec"))
    meta_labels = _strings(_map(obj.get("metadata")).get("labels"))
    if kind == "Pod":
        return (meta_labels,)
    if kind == "InferenceService":
        return tuple(
            {**_strings(_map(spec.get(c)).get("labels")),
             "serving.kserve.io/inferenceservice": name, "component": c}
            for c in ("predictor", "transformer", "explainer")
            if isinstance(spec.get(c), Mapping)
        )  # fmt: skip
    if kind == "LLMInferenceService":
        return (
            {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "llminferenceservice"},
        )
    if kind == "LeaderWorkerSet":
        lwt = _map(spec.get("leaderWorkerTemplate"))
        own = {"leaderworkerset.sigs.k8s.io/name": name}
        return tuple(
            {**_template_labels(lwt.get(t)), **own} for t in ("leaderTemplate", "workerTemplate")
        )
    if kind == "NIMService":
        return ({**meta_labels, "app": name, "app.kubernetes.io/name": name},)
    if kind == "Workspace":
        return ({"kaito.sh/workspace": name, "app": name},)
    templates = [
        node["template"]
        for node in _walk(spec)
        if isinstance(node.get("template"), Mapping) and "spec" in _map(node.get("template"))
    ]
    return tuple(_template_labels(t) for t in templates) or (meta_labels,)


def _services(kind: str, name: str) -> frozenset[str]:
    """Services the kind's operator creates in front of the pods, by name."""
    made = {
        "InferenceService": (name, f"{name}-predictor", f"{name}-predictor-default"),
        "LLMInferenceService": (f"{name}-kserve-workload-svc", f"{name}-kserve", name),
        "RayService": (f"{name}-serve-svc", f"{name}-head-svc"),
        "NIMService": (name,),
        "Workspace": (name,),
        "LeaderWorkerSet": (name,),
    }
    return frozenset(made.get(kind, ()))


def _kind_server(obj: Mapping[str, Any], group: str, kind: str) -> str | None:
    """What makes the kind LLM-serving by itself, if anything."""
    if (group, kind) in _ALWAYS_LLM:
        return kind
    if group == KAITO_GROUP and kind == "Workspace":
        # Kaito keeps `inference` (or `tuning`) at the top level, not under spec.
        return "kaito-inference" if isinstance(obj.get("inference"), Mapping) else None
    if kind == "InferenceService":
        predictor = _map(_map(obj.get("spec")).get("predictor"))
        model = _map(predictor.get("model"))
        fmt = _str(_map(model.get("modelFormat")).get("name")).lower()
        if fmt in LLM_MODEL_FORMATS:
            return f"modelFormat {fmt}"
        if _LLM_RUNTIME.search(_str(model.get("runtime"))):
            return f"runtime {model.get('runtime')}"
        if isinstance(predictor.get("huggingface"), Mapping):
            return "huggingface predictor"
    return None


def _runtime_server(
    obj: Mapping[str, Any],
    runtimes: Sequence[Mapping[str, Any]],
    servers: Sequence[LlmServer],
) -> str | None:
    """An InferenceService whose KServe runtime (named, or auto-selected for its model format
    from the given ServingRuntimes and ClusterServingRuntimes) runs an LLM server."""
    model = _map(_map(_map(obj.get("spec")).get("predictor")).get("model"))
    wanted, fmt = _str(model.get("runtime")), _str(_map(model.get("modelFormat")).get("name"))
    namespace = _str(_map(obj.get("metadata")).get("namespace"))
    for runtime in runtimes:
        meta, spec = _map(runtime.get("metadata")), _map(runtime.get("spec"))
        if runtime.get("kind") == "ServingRuntime" and _str(meta.get("namespace")) != namespace:
            continue
        formats = [_map(f) for f in spec.get("supportedModelFormats") or ()]
        chosen = (
            _str(meta.get("name")) == wanted
            if wanted
            else any(_str(f.get("name")) == fmt and f.get("autoSelect") is True for f in formats)
        )
        server = _server_of(runtime, servers, True) if chosen else None
        if server is not None:
            return f"runtime {meta.get('name')} ({server})"
    return None


def recognise(
    obj: Mapping[str, Any],
    extra: Sequence[LlmServer] = (),
    runtimes: Sequence[Mapping[str, Any]] = (),
) -> LlmTarget | None:
    """The LLM `obj` serves, or None when it is not LLM-serving. `runtimes` are the KServe
    serving runtimes an InferenceService may run on."""
    if not isinstance(obj, Mapping):
        return None
    api_version, kind = _str(obj.get("apiVersion")), _str(obj.get("kind"))
    if not kind or kind in CONFIG_KINDS:
        return None
    meta = _map(obj.get("metadata"))
    name = _str(meta.get("name")) or _str(meta.get("generateName"))
    servers = (*SERVERS, *extra)
    server = (
        _kind_server(obj, group_of(api_version), kind)
        or _server_of(obj, servers, kind in SERVING_KINDS)
        or (_runtime_server(obj, runtimes, servers) if kind == "InferenceService" else None)
    )
    if server is None:
        return None
    return LlmTarget(
        api_version=api_version,
        kind=kind,
        name=name,
        namespace=_str(meta.get("namespace")),
        server=server,
        pod_labels=_pod_labels(obj, kind, name),
        services=_services(kind, name),
        labels=_strings(meta.get("labels")),
    )
