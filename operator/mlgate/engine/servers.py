"""Model references where LLM servers read them: their command lines and config fields.

One table, SERVERS, says which server reads its model from which flag; the code below only
finds the server's invocation in a container's `command` + `args` (also inside `sh -c` scripts,
tokenised as a shell would) and reads those flags. RAY_SERVE_LLM_FIELDS says the same for Ray
Serve LLM's config. Values are returned as written (after variable expansion); `models` judges them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any

import yaml

from mlgate.engine.commandline import Token, commands, container_words, program
from mlgate.engine.memo import text_cache
from mlgate.engine.modelrefs import ModelRef


class Form(Enum):
    """How a flag's value names models."""

    PLAIN = "plain"  # the value is a model
    ADAPTERS = "adapters"  # one or more `name=path`, bare paths, or JSON objects with a path
    JSON = "json"  # a JSON object whose "model" key is a model


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    programs: tuple[tuple[str, ...], ...]  # executables, with their subcommand
    modules: tuple[str, ...]  # `python -m <module>`
    images: tuple[str, ...]  # images whose entrypoint is the server (args-only containers)
    flags: Mapping[str, Form]
    positional: bool = False  # the first bare argument is the model (`vllm serve <model>`)
    hf_ids: bool = True  # a bare `org/name` value is a Hugging Face repository
    # KServe model formats whose runtime is this server: an InferenceService's args-only
    # container for that format is appended to the server's command line.
    kserve_formats: tuple[str, ...] = ()
    # Flags naming a file of settings that may hold the model; CLI flags override it. With no
    # model on the command line, the file's is loaded, and mlgate cannot read it.
    config_flags: tuple[str, ...] = ()


def _flags(
    plain: Sequence[str], adapters: Sequence[str] = (), json_: Sequence[str] = ()
) -> dict[str, Form]:
    table = dict.fromkeys(plain, Form.PLAIN)
    table |= dict.fromkeys(adapters, Form.ADAPTERS)
    table |= dict.fromkeys(json_, Form.JSON)
    # Spelt with dashes once here, as `_flag_form` compares them: not for every word judged.
    return {flag.replace("_", "-"): form for flag, form in table.items()}


# Flag spellings from each project's documented CLI. `--served-model-name` / `--model_name` only
# name the endpoint and are deliberately absent.
SERVERS: tuple[Server, ...] = (
    Server(
        "vLLM",
        programs=(("vllm", "serve"),),
        modules=("vllm.entrypoints.openai.api_server", "vllm.entrypoints.api_server"),
        images=("*vllm-openai*", "*vllm/vllm-tpu*", "*vllm-cpu*"),
        flags=_flags(
            ["--model", "--tokenizer", "--speculative-model"],
            adapters=["--lora-modules"],
            json_=["--speculative-config"],
        ),
        positional=True,
        kserve_formats=("vllm",),
        config_flags=("--config",),
    ),
    Server(
        "SGLang",
        programs=(("sglang", "serve"),),
        modules=("sglang.launch_server",),
        images=("*lmsysorg/sglang*",),
        flags=_flags(
            ["--model-path", "--model", "--tokenizer-path", "--speculative-draft-model-path"],
            adapters=["--lora-paths"],
        ),
        config_flags=("--config",),
    ),
    Server(
        "TGI",
        programs=(("text-generation-launcher",),),
        modules=(),
        images=("*huggingface/text-generation-inference*",),
        flags=_flags(["--model-id"], adapters=["--lora-adapters"]),
    ),
    Server(
        "KServe huggingfaceserver",
        programs=(),
        modules=("huggingfaceserver",),
        images=("*kserve/huggingfaceserver*",),
        flags=_flags(["--model_id", "--model_dir"]),
        kserve_formats=("huggingface",),
    ),
    Server(
        "Triton",
        programs=(("tritonserver",),),
        modules=(),
        images=("*tritonserver*",),
        flags=_flags(["--model-repository", "--model-store"]),
        hf_ids=False,
        kserve_formats=("triton",),
    ),
)


def _lookup() -> tuple[dict[str, Server], dict[str, list[tuple[tuple[str, ...], Server]]]]:
    """SERVERS by `-m` module, and by program name with the words that must follow it; in table
    order, so the first server that matches wins, as a scan of the table would find."""
    modules: dict[str, Server] = {}
    programs: dict[str, list[tuple[tuple[str, ...], Server]]] = {}
    for server in SERVERS:
        for module in server.modules:
            modules.setdefault(module, server)
        for prog in server.programs:
            programs.setdefault(prog[0], []).append((prog[1:], server))
    return modules, programs


# Every simple command of every container is looked up: in a dict, not by a scan of the table.
_BY_MODULE, _BY_PROGRAM = _lookup()


def _server_of(command: Sequence[Token]) -> tuple[Server, int] | None:
    name, start = program(command)
    if name.startswith("-m "):
        server = _BY_MODULE.get(name[3:])
        return None if server is None else (server, start)
    for rest, server in _BY_PROGRAM.get(name, ()):
        if tuple(t.text for t in command[start : start + len(rest)]) == rest:
            return server, start + len(rest)
    return None


# ---------------------------------------------------------------------------------------------
# Flags


def _flag_form(server: Server, flag: str) -> Form | None:
    """The form of `flag` for `server`. Dashes and underscores are interchangeable (vLLM accepts
    both), and a unique prefix of a model flag counts as it, as argparse and getopt accept
    abbreviations: an ambiguous one would make the server refuse to start anyway."""
    given = flag.replace("_", "-")
    exact = server.flags  # spelt with dashes (`_flags`)
    if given in exact:
        return exact[given]
    if len(given) > 3:
        for name, form in exact.items():
            if name.startswith(given):
                return form
    return None


def _adapter_paths(text: str) -> Iterator[str]:
    value = text.strip()
    if value.startswith("{"):
        try:
            obj = json.loads(value)
        except ValueError:
            yield value
            return
        path = obj.get("path", obj.get("lora_path")) if isinstance(obj, dict) else None
        if isinstance(path, str):
            yield path
        return
    for item in value.split(","):  # TGI takes a comma-separated list
        yield item.partition("=")[2] if "=" in item else item


def _values(form: Form, token: Token, hf_ids: bool) -> Iterator[ModelRef]:
    if form is Form.PLAIN:
        yield ModelRef(token.text, token.path, hf_ids)
    elif form is Form.ADAPTERS:
        for path in _adapter_paths(token.text):
            yield ModelRef(path, token.path, hf_ids)
    else:
        try:
            obj = json.loads(token.text)
        except ValueError:
            obj = None
        model = obj.get("model") if isinstance(obj, dict) else None
        if isinstance(model, str):
            yield ModelRef(model, token.path, hf_ids)


# Flags that take no value (vLLM's switches): a bare word after one can be the positional model.
_BOOLEAN_PREFIXES = ("--enable-", "--disable-", "--no-", "--trust-remote-code", "--enforce-eager")


def _server_refs(server: Server, words: Sequence[Token]) -> Iterator[ModelRef]:
    refs = list(_flag_refs(server, words))
    yield from refs
    if not refs:
        yield from _config_refs(server, words)


def _config_refs(server: Server, words: Sequence[Token]) -> Iterator[ModelRef]:
    """A settings file given instead of a model: reported as it is written (`--config x.yaml`),
    which names no model, so no approval matches it."""
    for i, token in enumerate(words):
        flag, eq, value = token.text.partition("=")
        if flag in server.config_flags:
            if not eq and i + 1 < len(words):
                value = words[i + 1].text
            yield ModelRef(f"{flag} {value}".strip(), token.path, server.hf_ids)


def _flag_refs(server: Server, words: Sequence[Token]) -> Iterator[ModelRef]:
    positional_done = not server.positional
    i = 0
    while i < len(words):
        word = words[i].text
        if not word.startswith("-") or word in ("-", "--"):
            follows_value_flag = i > 0 and _takes_value(words[i - 1].text)
            if not positional_done and not follows_value_flag and word not in ("-", "--"):
                yield ModelRef(word, words[i].path, server.hf_ids)
                positional_done = True
            i += 1
            continue
        flag, eq, inline = word.partition("=")
        form = _flag_form(server, flag) if flag.startswith("--") else None
        i += 1
        if form is None:
            continue
        if eq:
            yield from _values(form, Token(inline, words[i - 1].path), server.hf_ids)
            continue
        # ADAPTERS flags take several values (argparse nargs='+'); the others one.
        while i < len(words) and not words[i].text.startswith("-"):
            yield from _values(form, words[i], server.hf_ids)
            i += 1
            if form is not Form.ADAPTERS:
                break


def _takes_value(word: str) -> bool:
    """Whether a flag without `=` takes the next word as its value, as far as can be told."""
    return word.startswith("-") and "=" not in word and not word.startswith(_BOOLEAN_PREFIXES)


def command_refs(
    command: Any, args: Any, path: str, env: Mapping[str, str], entrypoint: Server | None = None
) -> Iterator[ModelRef]:
    """Model references in a container's command and args (paths `<path>.command[i]`,
    `<path>.args[i]`). With no command the image's `entrypoint` (see `entrypoint`) runs the args.
    """
    words = container_words(command, f"{path}.command", env) + container_words(
        args, f"{path}.args", env
    )
    if not words:  # most containers: no server is told anything, whatever the image runs
        return
    for simple in commands(words, env):
        found = _server_of(simple)
        if found is not None:
            server, start = found
            yield from _server_refs(server, simple[start:])
    has_command = isinstance(command, list) and bool(command)
    if entrypoint is not None and not has_command and _server_of(words) is None:
        yield from _server_refs(entrypoint, words)


def entrypoint(image: str | None, container: Mapping[str, Any], path: str) -> Server | None:
    """The server an args-only container runs: its image's, or for a KServe model container
    without an image, the runtime's for its model format (`modelFormat.name`, or the framework
    field the container is, as in `spec.predictor.huggingface`)."""
    if image:
        return _image_server(image)
    model_format = container.get("modelFormat")
    name = model_format.get("name") if isinstance(model_format, Mapping) else None
    name = name if isinstance(name, str) else path.rpartition(".")[2]
    return next((s for s in SERVERS if name.lower() in s.kserve_formats), None)


# Longer images are matched every time (engine.references refuses them as malformed anyway).
_CACHED_IMAGE_LENGTH = 4096


@text_cache(maxsize=4096, max_length=_CACHED_IMAGE_LENGTH)
def _image_server(image: str) -> Server | None:
    # Every container of every admission asks, and a cluster runs few distinct images: the
    # glob scan over SERVERS runs once per image (bounded in count and in the length of the
    # images kept, so odd images cannot grow it).
    return next((s for s in SERVERS if any(fnmatchcase(image, p) for p in s.images)), None)


# ---------------------------------------------------------------------------------------------
# Ray Serve LLM: serveConfigV2 applications built by ray.serve.llm

_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Where an LLMConfig names model weights (the second field replaces the first when absent:
# Ray loads `model_id` from Hugging Face when `model_source` is unset).
RAY_SERVE_LLM_FIELDS: tuple[tuple[str, ...], ...] = (
    ("model_loading_config", "model_source"),
    ("model_loading_config", "tokenizer_source"),
    ("lora_config", "dynamic_lora_loading_path"),
)


def ray_serve_refs(obj: Mapping[str, Any]) -> Iterator[ModelRef]:
    """Model references of a RayService's `spec.serveConfigV2` (a YAML string): the LLMConfigs
    in any application's `args.llm_configs` (or `args.llm_config`), whatever its import_path, as
    an application of one's own may hand them to Ray Serve LLM."""
    spec = obj.get("spec")
    text = spec.get("serveConfigV2") if isinstance(spec, Mapping) else None
    if not isinstance(text, str):
        return
    base = "spec.serveConfigV2"
    try:
        config = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a SafeLoader
    except (yaml.YAMLError, RecursionError):
        yield ModelRef("(unreadable YAML)", base)  # KubeRay cannot read it either
        return
    apps = config.get("applications") if isinstance(config, Mapping) else None
    for i, app in enumerate(apps if isinstance(apps, list) else []):
        args = app.get("args") if isinstance(app, Mapping) else None
        if not isinstance(args, Mapping):
            continue
        where = f"{base}(applications[{i}].args"
        if "llm_config" in args:
            yield from _llm_config_refs(args["llm_config"], f"{where}.llm_config")
        configs = args.get("llm_configs")
        for j, config in enumerate(configs if isinstance(configs, list) else []):
            yield from _llm_config_refs(config, f"{where}.llm_configs[{j}]")


def _llm_config_refs(config: Any, path: str) -> Iterator[ModelRef]:
    if isinstance(config, str):  # a file in the image: its model cannot be read here
        yield ModelRef(config, f"{path})", hf_ids=True)
        return
    if not isinstance(config, Mapping):
        return
    loading = config.get("model_loading_config")
    loading = loading if isinstance(loading, Mapping) else {}
    if loading.get("model_source") is None and isinstance(loading.get("model_id"), str):
        yield ModelRef(loading["model_id"], f"{path}.model_loading_config.model_id)", True)
    for keys in RAY_SERVE_LLM_FIELDS:
        section = config.get(keys[0])
        value = section.get(keys[1]) if isinstance(section, Mapping) else None
        if isinstance(value, Mapping):  # a cloud mirror config
            value = value.get("bucket_uri")
        if isinstance(value, str):
            yield ModelRef(value, f"{path}.{'.'.join(keys)})", hf_ids=True)


# ---------------------------------------------------------------------------------------------
# Local paths

# Mounts an operator fills from a model reference it reads elsewhere (KServe's storage
# initializer downloads storageUri / model.uri there): a server reading them loads that model.
OPERATOR_MODEL_MOUNTS: Mapping[str, str] = {
    "InferenceService": "/mnt/models",
    "ServingRuntime": "/mnt/models",
    "ClusterServingRuntime": "/mnt/models",
    "LLMInferenceService": "/mnt/models",
    "LLMInferenceServiceConfig": "/mnt/models",
}


# Env vars KServe sets in the model containers it builds from a storageUri (multi-node
# runtimes pass `--model_dir=${MODEL_DIR}`): unset in the manifest, they are the operator's.
OPERATOR_MODEL_VARIABLES = frozenset({"MODEL_DIR", "MODEL_ID"})
_WHOLE_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|\((\w+)\)|(\w+))")


def _operator_variable(value: str) -> bool:
    match = _WHOLE_VARIABLE.fullmatch(value)
    return match is not None and max(match.groups(), key=bool) in OPERATOR_MODEL_VARIABLES


def _under(path: str, directory: str) -> str | None:
    """`path` relative to `directory`, or None when it is not inside it."""
    directory = directory.rstrip("/") or "/"
    if path == directory:
        return ""
    prefix = directory if directory.endswith("/") else directory + "/"
    return path[len(prefix) :] if path.startswith(prefix) else None


def local_model(
    value: str, container: Mapping[str, Any], pod: Mapping[str, Any], kind: str
) -> str | None:
    """What a local model path refers to: `pvc://claim/sub/path` when a PersistentVolumeClaim is
    mounted there; None when it is the operator's model mount or variable (its source is judged
    where it is declared); otherwise the value itself, which no approval can match."""
    managed = OPERATOR_MODEL_MOUNTS.get(kind)
    if managed is not None and _operator_variable(value):
        return None
    if not value.startswith("/"):
        return value
    mount = _mount_of(value, container)
    if mount is not None:
        volume, rest = mount
        claim = _claim(pod, volume)
        return f"pvc://{claim}/{rest}".rstrip("/") if claim else value
    if managed is not None and _under(value, managed) is not None:
        return None
    return value


def _mount_of(path: str, container: Mapping[str, Any]) -> tuple[str, str] | None:
    """The volume mounted deepest above `path`, and the path within that volume."""
    best: tuple[int, str, str] | None = None
    mounts = container.get("volumeMounts")
    for mount in mounts if isinstance(mounts, list) else []:
        where = mount.get("mountPath") if isinstance(mount, Mapping) else None
        rest = _under(path, where) if isinstance(where, str) else None
        if rest is None or (best is not None and len(where or "") <= best[0]):
            continue
        sub = mount.get("subPath")
        rest = "/".join(p for p in (sub if isinstance(sub, str) else "", rest) if p)
        best = (len(where or ""), str(mount.get("name")), rest)
    return None if best is None else (best[1], best[2])


def _claim(pod: Mapping[str, Any], volume: str) -> str | None:
    volumes = pod.get("volumes")
    for entry in volumes if isinstance(volumes, list) else []:
        if isinstance(entry, Mapping) and entry.get("name") == volume:
            pvc = entry.get("persistentVolumeClaim")
            claim = pvc.get("claimName") if isinstance(pvc, Mapping) else None
            return claim if isinstance(claim, str) else None
    return None
