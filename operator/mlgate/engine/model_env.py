"""Environment that carries or redirects a model reference without mlgate being able to read it.

Two ways around a literal, approved `MODEL_URI`:

- Indirect values. `valueFrom` (a Secret, ConfigMap or field) and `envFrom` (every key of a
  ConfigMap or Secret, prefixed) are resolved by the kubelet after admission, so mlgate cannot
  see what they hold. A governed name delivered that way is unverifiable and is denied unless the
  policy sets `models.allowIndirectReferences`. The keys behind an `envFrom` are unknown, so any
  `envFrom` whose prefix can begin a governed name (no prefix at all, or a prefix such as `HF_`
  or `MODEL`) is such a carrier; an `envFrom` with a prefix no governed name starts with (`APP_`)
  cannot set one and passes.
- Endpoint variables. An approved `hf://org/model` or `s3://bucket/key` means nothing if the
  client is pointed at another server: the identifier is the same, the bytes are not. A variable
  of `ENDPOINT_VARIABLES` is therefore part of the reference: allowed only with a literal value
  listed in `models.allowedEndpoints` (an empty value is the client's default server).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.policy import ModelRules
from mlgate.engine.workloads import ContainerView, EnvSource, EnvVar, WorkloadView


@dataclass(frozen=True, slots=True)
class EndpointVariable:
    """An env var that points a model client at a server; `name` ending in `*` is a prefix."""

    name: str
    read_by: str


# Every variable known to redirect where an approved model identifier is fetched from.
# Deliberately not here: MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI (they resolve models:/ URIs,
# which no ApprovedModel can list, and training jobs set them to log metrics) and HTTP(S)_PROXY
# (TLS keeps the origin's identity through a proxy).
ENDPOINT_VARIABLES: tuple[EndpointVariable, ...] = (
    EndpointVariable(
        "HF_ENDPOINT", "huggingface_hub, so transformers, vLLM, TGI and KServe's hf:// download"
    ),
    EndpointVariable("HUGGINGFACE_CO_RESOLVE_ENDPOINT", "older transformers releases"),
    EndpointVariable("AWS_ENDPOINT_URL", "boto3/botocore and KServe's storage initializer (s3://)"),
    EndpointVariable("AWS_ENDPOINT_URL_*", "botocore, per service: AWS_ENDPOINT_URL_S3, ..."),
    EndpointVariable("S3_ENDPOINT", "KServe's storage initializer and TensorFlow's S3 filesystem"),
    EndpointVariable("MLFLOW_S3_ENDPOINT_URL", "MLflow's artifact download from s3://"),
    EndpointVariable("STORAGE_EMULATOR_HOST", "google-cloud-storage and gcsfs (gs://)"),
    EndpointVariable(
        "FSSPEC_*", "fsspec options for s3fs, gcsfs, ...: FSSPEC_S3_ENDPOINT_URL, FSSPEC_S3={...}"
    ),
)


# Every env var of every container is looked up: a dict and one `startswith` of the prefixes, not
# a scan of the table.
_EXACT = {v.name: v for v in ENDPOINT_VARIABLES if not v.name.endswith("*")}
_PREFIXES = tuple((v.name[:-1], v) for v in ENDPOINT_VARIABLES if v.name.endswith("*"))
_ANY_PREFIX = tuple(prefix for prefix, _ in _PREFIXES)


def endpoint_variable(name: str) -> EndpointVariable | None:
    exact = _EXACT.get(name)
    if exact is not None or not name.startswith(_ANY_PREFIX):
        return exact
    return next(v for prefix, v in _PREFIXES if name.startswith(prefix))


def _governed(rules: ModelRules) -> Iterator[str]:
    """Every governed env name, endpoint prefixes ending in `*`."""
    yield from rules.env
    yield from (v.name for v in ENDPOINT_VARIABLES)


def _can_begin(prefix: str, governed: str) -> bool:
    """Whether `prefix` + some key can be `governed` (or match it, for a `*` prefix pattern)."""
    if governed.endswith("*"):
        stem = governed[:-1]
        return prefix.startswith(stem) or stem.startswith(prefix)
    return governed.startswith(prefix)


def _names(names: Iterable[str]) -> str:
    listed = sorted(names)
    return ", ".join(listed[:6]) + (", ..." if len(listed) > 6 else "")


_HOW = (
    "set the approved model URI literally in `env[].value` of the container (or a policy may "
    "set models.allowIndirectReferences: true)"
)


def _env_from(rules: ModelRules, source: EnvSource) -> Finding | None:
    carried = [g for g in _governed(rules) if _can_begin(source.prefix, g)]
    if not carried:
        return None
    prefix = f"prefix {source.prefix!r}" if source.prefix else "no prefix"
    return Finding(
        Rule.MODELS_INDIRECT_REFERENCE,
        source.path,
        f"envFrom with {prefix} can set {_names(carried)} from keys mlgate cannot read at "
        "admission, so a model reference or endpoint there cannot be verified; "
        f"{_HOW}, and give envFrom a prefix no governed name starts with (e.g. APP_)",
    )


def _value_from(env: EnvVar) -> Finding:
    return Finding(
        Rule.MODELS_INDIRECT_REFERENCE,
        f"{env.path}.valueFrom",
        f"{env.name} is set from valueFrom, which mlgate cannot read at admission, so the "
        f"model reference cannot be verified; {_HOW}",
    )


def _endpoint(rules: ModelRules, env: EnvVar, variable: EndpointVariable) -> Finding | None:
    value = (env.value or "").strip().rstrip("/")
    if not value or value in rules.allowed_endpoints:
        return None
    allowed = _names(rules.allowed_endpoints) or "(none)"
    return Finding(
        Rule.MODELS_ENDPOINT,
        f"{env.path}.value",
        f"{env.name}={env.value!r} points {variable.read_by} at a server the policy does not "
        f"allow, so an approved model identifier would be fetched from it; remove {env.name} "
        f"or use an endpoint from models.allowedEndpoints: {allowed}",
    )


def _container(rules: ModelRules, c: ContainerView) -> list[Finding]:
    found: list[Finding] = []
    indirect_allowed = rules.allow_indirect_references
    for env in c.env:
        # Runs for every env var admitted, nearly all no endpoint variable: the dict lookup of
        # `endpoint_variable` inline, the function only for a name that begins like a prefix.
        variable = _EXACT.get(env.name)
        if variable is None and env.name.startswith(_ANY_PREFIX):
            variable = endpoint_variable(env.name)
        if env.value is None:
            if not indirect_allowed and (variable is not None or env.name in rules.env):
                found.append(_value_from(env))
        elif variable is not None and (finding := _endpoint(rules, env, variable)):
            found.append(finding)
    if not indirect_allowed and c.env_from:
        found.extend(filter(None, (_env_from(rules, s) for s in c.env_from)))
    return found


def check(rules: ModelRules, view: WorkloadView) -> list[Finding]:
    """Indirect model env and endpoint redirection in every container of the workload."""
    return [f for pod in view.pods for c in pod.containers for f in _container(rules, c)]
