"""Model env mlgate cannot read (envFrom, valueFrom) and endpoint variables that redirect it."""

from __future__ import annotations

from typing import Any

import pytest

from mlgate.engine import model_env, models
from mlgate.engine.decisions import Rule
from mlgate.engine.policy import ModelRules
from tests.unit.test_rules_models import APPROVED, NOW, _view, rules

CONTAINER = "spec.template.spec.containers[0]"
APPROVED_URI = {"name": "MODEL_URI", "value": "s3://models/fraud-detector/v3"}
SECRET = {"secretKeyRef": {"name": "model", "key": "uri"}}


def deployment(
    env: list[dict[str, Any]] | None = None, env_from: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.example.com/ml/x:1"}
    if env is not None:
        container["env"] = env
    if env_from is not None:
        container["envFrom"] = env_from
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fraud-api", "namespace": "team-a"},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def findings(obj: dict[str, Any], policy: ModelRules | None = None) -> list[tuple[str, str]]:
    found = models.check(policy or rules(), _view(obj), APPROVED, NOW)
    return [(f.rule, f.path) for f in found]


def messages(obj: dict[str, Any], policy: ModelRules | None = None) -> list[str]:
    return [f.message for f in models.check(policy or rules(), _view(obj), APPROVED, NOW)]


# --- envFrom ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "creds"}}],
)
@pytest.mark.parametrize("prefix", [None, "", "MODEL", "MODEL_", "HF_", "H", "AWS_", "FSSPEC_S3"])
def test_env_from_that_can_set_a_governed_name_is_denied(
    source: dict[str, Any], prefix: str | None
) -> None:
    entry = dict(source, **({} if prefix is None else {"prefix": prefix}))
    obj = deployment(env=[APPROVED_URI], env_from=[entry])
    assert findings(obj) == [(Rule.MODELS_INDIRECT_REFERENCE, f"{CONTAINER}.envFrom[0]")]


def test_env_from_message_says_what_it_can_set_and_how_to_fix_it() -> None:
    (message,) = messages(deployment(env_from=[{"prefix": "HF_", "configMapRef": {"name": "c"}}]))
    assert message == (
        "envFrom with prefix 'HF_' can set HF_ENDPOINT, HF_MODEL_ID from keys mlgate cannot read "
        "at admission, so a model reference or endpoint there cannot be verified; set the "
        "approved model URI literally in `env[].value` of the container (or a policy may set "
        "models.allowIndirectReferences: true), and give envFrom a prefix no governed name "
        "starts with (e.g. APP_)"
    )


@pytest.mark.parametrize("prefix", ["APP_", "CONFIG_", "MODEL_URIX", "HF_ENDPOINTS", "AWS_REGION"])
def test_env_from_with_a_prefix_no_governed_name_starts_with_passes(prefix: str) -> None:
    obj = deployment(
        env=[APPROVED_URI], env_from=[{"prefix": prefix, "configMapRef": {"name": "c"}}]
    )
    assert findings(obj) == []


def test_env_from_prefix_inside_an_endpoint_pattern_is_denied() -> None:
    # AWS_ENDPOINT_URL_S3 + key "" cannot happen, but AWS_ENDPOINT_URL_S3 + "X" matches the
    # botocore per-service pattern AWS_ENDPOINT_URL_*.
    obj = deployment(env_from=[{"prefix": "AWS_ENDPOINT_URL_S3", "secretRef": {"name": "c"}}])
    assert findings(obj) == [(Rule.MODELS_INDIRECT_REFERENCE, f"{CONTAINER}.envFrom[0]")]


def test_env_from_respects_the_policys_own_env_names() -> None:
    policy = rules(sources={"env": ["WEIGHTS"]})
    obj = deployment(env_from=[{"prefix": "W", "configMapRef": {"name": "c"}}])
    assert findings(obj, policy) == [(Rule.MODELS_INDIRECT_REFERENCE, f"{CONTAINER}.envFrom[0]")]
    obj = deployment(env_from=[{"prefix": "MODEL_", "configMapRef": {"name": "c"}}])
    assert findings(obj, policy) == []


def test_env_from_with_a_prefix_that_is_not_a_string_counts_as_no_prefix() -> None:
    obj = deployment(env_from=[{"prefix": 7, "configMapRef": {"name": "c"}}])
    assert findings(obj) == [(Rule.MODELS_INDIRECT_REFERENCE, f"{CONTAINER}.envFrom[0]")]


def test_env_from_in_init_containers_is_judged_too() -> None:
    obj = deployment(env=[APPROVED_URI])
    obj["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "fetch", "image": "registry.example.com/ml/x:1", "envFrom": [{"secretRef": {}}]}
    ]
    assert findings(obj) == [
        (Rule.MODELS_INDIRECT_REFERENCE, "spec.template.spec.initContainers[0].envFrom[0]")
    ]


# --- valueFrom -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MODEL_URI", "HF_MODEL_ID", "HF_ENDPOINT", "AWS_ENDPOINT_URL_S3"])
def test_value_from_of_a_governed_name_is_denied(name: str) -> None:
    obj = deployment(env=[{"name": name, "valueFrom": SECRET}])
    assert findings(obj) == [(Rule.MODELS_INDIRECT_REFERENCE, f"{CONTAINER}.env[0].valueFrom")]


def test_value_from_of_other_names_passes() -> None:
    obj = deployment(env=[APPROVED_URI, {"name": "API_TOKEN", "valueFrom": SECRET}])
    assert findings(obj) == []


def test_allow_indirect_references_accepts_env_from_and_value_from() -> None:
    policy = rules(allowIndirectReferences=True)
    obj = deployment(
        env=[
            {"name": "MODEL_URI", "valueFrom": SECRET},
            {"name": "HF_ENDPOINT", "valueFrom": SECRET},
        ],
        env_from=[{"configMapRef": {"name": "c"}}],
    )
    assert findings(obj, policy) == []
    # Literal values are still judged.
    obj = deployment(env=[{"name": "MODEL_URI", "value": "s3://evil/weights"}])
    assert [r for r, _ in findings(obj, policy)] == [Rule.MODELS_APPROVAL]


def test_value_from_counts_as_a_declared_reference() -> None:
    policy = rules(requireReference=True, allowIndirectReferences=True)
    assert findings(deployment(env=[{"name": "MODEL_URI", "valueFrom": SECRET}]), policy) == []


def test_nothing_is_judged_when_approval_is_not_required() -> None:
    policy = rules(requireApproved=False)
    obj = deployment(env=[{"name": "HF_ENDPOINT", "value": "https://evil.example"}], env_from=[{}])
    assert findings(obj, policy) == []


# --- endpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "HF_ENDPOINT",
        "HUGGINGFACE_CO_RESOLVE_ENDPOINT",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "S3_ENDPOINT",
        "MLFLOW_S3_ENDPOINT_URL",
        "STORAGE_EMULATOR_HOST",
        "FSSPEC_S3_ENDPOINT_URL",
    ],
)
def test_endpoint_variables_outside_the_allowlist_are_denied(name: str) -> None:
    obj = deployment(env=[APPROVED_URI, {"name": name, "value": "https://evil.example"}])
    assert findings(obj) == [(Rule.MODELS_ENDPOINT, f"{CONTAINER}.env[1].value")]


def test_endpoint_message_names_the_variable_and_the_allowlist() -> None:
    policy = rules(allowedEndpoints=["https://hf-mirror.internal"])
    obj = deployment(env=[{"name": "HF_ENDPOINT", "value": "https://evil.example"}])
    assert messages(obj, policy) == [
        "HF_ENDPOINT='https://evil.example' points huggingface_hub, so transformers, vLLM, TGI "
        "and KServe's hf:// download at a server the policy does not allow, so an approved "
        "model identifier would be fetched from it; remove HF_ENDPOINT or use an endpoint from "
        "models.allowedEndpoints: https://hf-mirror.internal"
    ]


def test_allowed_endpoints_match_literally_ignoring_a_trailing_slash() -> None:
    policy = rules(allowedEndpoints=["https://hf-mirror.internal/", "minio.storage:9000"])
    allowed = [
        {"name": "HF_ENDPOINT", "value": "https://hf-mirror.internal"},
        {"name": "S3_ENDPOINT", "value": "minio.storage:9000"},
        {"name": "AWS_ENDPOINT_URL", "value": ""},  # the client's default server
    ]
    assert findings(deployment(env=allowed), policy) == []
    denied = [{"name": "HF_ENDPOINT", "value": "https://hf-mirror.internal.evil.example"}]
    assert findings(deployment(env=denied), policy) == [
        (Rule.MODELS_ENDPOINT, f"{CONTAINER}.env[0].value")
    ]


def test_flags_next_to_endpoint_variables_are_not_endpoints() -> None:
    obj = deployment(
        env=[
            {"name": "AWS_USE_FIPS_ENDPOINT", "value": "true"},
            {"name": "S3_USE_HTTPS", "value": "1"},
        ]
    )
    assert findings(obj) == []


def test_endpoint_table_is_read_by_name() -> None:
    assert model_env.endpoint_variable("AWS_ENDPOINT_URL_SAGEMAKER") is not None
    assert model_env.endpoint_variable("HF_ENDPOINT_X") is None
    names = [v.name for v in model_env.ENDPOINT_VARIABLES]
    assert len(names) == len(set(names))
