"""Model references against ApprovedModels: every way to name a model, every way to be void."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mlgate.api.compile import compile_approval, compile_policy, parse_resource
from mlgate.engine import models
from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.policy import Approval, ModelRules
from mlgate.engine.workloads import WorkloadView, view

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HINT = "; use an approved model or ask security to approve this one (ApprovedModel)"


def approval(name: str = "fraud-detector-v3", **spec: Any) -> Approval:
    doc = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ApprovedModel",
        "metadata": {"name": name},
        "spec": {
            "model": "fraud-detector",
            "version": "3",
            "uris": ["s3://models/fraud-detector/v3", "hf://acme/fraud-detector"],
            "approvedBy": "security-team",
            **spec,
        },
    }
    resource = parse_resource(doc)
    assert resource.kind == "ApprovedModel"
    return compile_approval(resource)  # type: ignore[arg-type]


APPROVED = (approval(),)


def rules(**models_spec: Any) -> ModelRules:
    doc = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": "models"},
        "spec": {"models": models_spec},
    }
    compiled = compile_policy(parse_resource(doc))
    assert compiled.models is not None
    return compiled.models


def _view(obj: dict[str, Any]) -> WorkloadView:
    result = view(obj)
    assert isinstance(result, WorkloadView)
    return result


def deployment(
    env: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    pod_annotations: dict[str, str] | None = None,
    namespace: str = "team-a",
) -> WorkloadView:
    return _view(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "fraud-api",
                "namespace": namespace,
                "annotations": annotations or {},
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "fraud-api"}},
                "template": {
                    "metadata": {
                        "labels": {"app": "fraud-api"},
                        "annotations": pod_annotations or {},
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "server",
                                "image": "registry.example.com/ml/server:1.4",
                                "env": [{"name": "LOG_LEVEL", "value": "info"}, *(env or [])],
                            }
                        ]
                    },
                },
            },
        }
    )


def inference_service(storage_uri: str, namespace: str = "team-a") -> WorkloadView:
    return _view(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "fraud", "namespace": namespace},
            "spec": {
                "predictor": {
                    "minReplicas": 1,
                    "model": {
                        "modelFormat": {"name": "sklearn"},
                        "storageUri": storage_uri,
                        "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
                    },
                }
            },
        }
    )


ENV_1 = "spec.template.spec.containers[0].env[1]"
STORAGE = "spec.predictor.model.storageUri"


def check(
    w: WorkloadView, approvals: tuple[Approval, ...] = APPROVED, r: ModelRules | None = None
) -> list[Finding]:
    return models.check(r or rules(), w, approvals, NOW)


# --- URIs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "s3://models/fraud-detector/v3",
        "s3://models/fraud-detector/v3/",
        "hf://acme/fraud-detector",
        " s3://models/fraud-detector/v3 ",
    ],
)
def test_approved_uri(uri: str) -> None:
    assert check(inference_service(uri)) == []


def test_approval_uri_with_trailing_slash() -> None:
    a = approval(uris=["gs://bucket/fraud/v3/"])
    assert check(inference_service("gs://bucket/fraud/v3"), (a,)) == []
    assert check(inference_service("gs://bucket/fraud/v3/"), (a,)) == []


@pytest.mark.parametrize(
    "uri",
    [
        "s3://models/fraud-detector/v3/extra",  # equality, not prefix
        "s3://models/fraud-detector/v",
        "s3://models/fraud-detector/v3/../v4",
        "s3://models/fraud-detector/v3?versionId=evil",
        "s3://models/fraud-detector",
        "s3://evil/fraud-detector/v3",
        "hf://acme/fraud-detector-evil",
        "hf://acme/fraud-detector@main",
        "gs://models/fraud-detector/v3",
    ],
)
def test_unapproved_uri(uri: str) -> None:
    assert check(inference_service(uri)) == [
        Finding(
            Rule.MODELS_APPROVAL,
            STORAGE,
            f"model {uri!r} is not approved: no ApprovedModel matches it{HINT}",
        )
    ]


def test_a_repeated_reference_is_reported_at_every_path_judged_by_where_it_is() -> None:
    # Each distinct (value, kind of field) is judged once; every reference gets its verdict.
    env = [
        {"name": "MODEL_URI", "value": "acme/other"},
        {"name": "STORAGE_URI", "value": "acme/other"},
        {"name": "HF_MODEL_ID", "value": "acme/other"},
    ]
    findings = check(deployment(env))
    base = "spec.template.spec.containers[0].env"
    assert [f.path for f in findings] == [f"{base}[1]", f"{base}[2]", f"{base}[3]"]
    assert findings[0].message == findings[1].message
    assert "is not a model URI" in findings[0].message
    assert findings[2].message == (
        f"model 'acme/other' is not approved: no ApprovedModel matches it{HINT}"
    )


@pytest.mark.parametrize(
    "value",
    ["S3://models/fraud-detector/v3", "models/fraud-detector/v3", "fraud-detector", "/mnt/models"],
)
def test_unrecognisable_reference(value: str) -> None:
    findings = check(inference_service(value))
    assert [(f.rule, f.path) for f in findings] == [(Rule.MODELS_APPROVAL, STORAGE)]
    assert findings[0].message.startswith(f"model reference {value!r} is not a model URI")


def test_storage_uris_list_and_every_component() -> None:
    w = _view(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "llm", "namespace": "team-a"},
            "spec": {
                "predictor": {
                    "storageUris": [
                        {"uri": "s3://models/fraud-detector/v3", "mountPath": "/mnt/a"},
                        {"uri": "s3://models/unknown/v1", "mountPath": "/mnt/b"},
                    ],
                    "containers": [{"name": "kserve-container", "image": "ghcr.io/acme/x:1"}],
                },
                "transformer": {
                    "containers": [{"name": "t", "image": "ghcr.io/acme/t:1"}],
                    "storageUri": "s3://models/tokenizer/v9",
                },
            },
        }
    )
    assert [f.path for f in check(w)] == [
        "spec.predictor.storageUris[1].uri",
        "spec.transformer.storageUri",
    ]


# --- name@version ----------------------------------------------------------------------------


def test_name_at_version_annotation() -> None:
    assert check(deployment(annotations={"mlgate.io/model": "fraud-detector@3"})) == []


def test_wrong_version() -> None:
    assert check(deployment(annotations={"mlgate.io/model": "fraud-detector@4"})) == [
        Finding(
            Rule.MODELS_APPROVAL,
            'metadata.annotations["mlgate.io/model"]',
            f"model 'fraud-detector@4' is not approved: no ApprovedModel matches it{HINT}",
        )
    ]


@pytest.mark.parametrize("value", ["fraud-detector", "fraud-detector@", "@3", ""])
def test_annotation_without_version(value: str) -> None:
    findings = check(deployment(annotations={"mlgate.io/model": value}))
    assert [(f.rule, f.path) for f in findings] == [
        (Rule.MODELS_APPROVAL, 'metadata.annotations["mlgate.io/model"]')
    ]


def test_name_at_version_is_not_accepted_where_a_uri_is_loaded() -> None:
    # The server loads whatever MODEL_URI says; `fraud-detector@3` is no URI it would fetch from
    # an approved location, so it must not borrow the approval of fraud-detector version 3.
    findings = check(deployment(env=[{"name": "MODEL_URI", "value": "fraud-detector@3"}]))
    assert [(f.rule, f.path) for f in findings] == [(Rule.MODELS_APPROVAL, ENV_1)]
    assert findings[0].message.startswith("model reference 'fraud-detector@3' is not a model URI")
    assert [f.path for f in check(inference_service("fraud-detector@3"))] == [STORAGE]


def test_pod_template_annotation() -> None:
    w = deployment(pod_annotations={"mlgate.io/model-uri": "s3://models/other/v1"})
    assert [(f.rule, f.path) for f in check(w)] == [
        (Rule.MODELS_APPROVAL, 'spec.template.metadata.annotations["mlgate.io/model-uri"]')
    ]
    w = deployment(pod_annotations={"mlgate.io/model-uri": "s3://models/fraud-detector/v3"})
    assert check(w) == []


def test_workload_and_pod_annotations_are_both_judged() -> None:
    w = deployment(
        annotations={"mlgate.io/model": "fraud-detector@3"},
        pod_annotations={"mlgate.io/model": "backdoor@1"},
    )
    assert [f.path for f in check(w)] == ['spec.template.metadata.annotations["mlgate.io/model"]']


def test_kserve_component_annotations_are_judged() -> None:
    w = _view(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "fraud", "namespace": "team-a"},
            "spec": {
                "predictor": {
                    "annotations": {"mlgate.io/model": "backdoor@1"},
                    "model": {
                        "modelFormat": {"name": "sklearn"},
                        "storageUri": "s3://models/fraud-detector/v3",
                    },
                }
            },
        }
    )
    assert [f.path for f in check(w)] == ['spec.predictor.annotations["mlgate.io/model"]']


def test_bare_pod_annotations_are_judged_once() -> None:
    w = _view(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "namespace": "team-a",
                "annotations": {"mlgate.io/model": "backdoor@1"},
            },
            "spec": {"containers": [{"name": "c", "image": "ghcr.io/acme/x:1"}]},
        }
    )
    assert [f.path for f in check(w)] == ['metadata.annotations["mlgate.io/model"]']


# --- env -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["HF_MODEL_ID", "MODEL_ID"])
def test_bare_hugging_face_id(name: str) -> None:
    assert check(deployment(env=[{"name": name, "value": "acme/fraud-detector"}])) == []
    findings = check(deployment(env=[{"name": name, "value": "evil-org/fraud-detector"}]))
    assert findings == [
        Finding(
            Rule.MODELS_APPROVAL,
            ENV_1,
            f"model 'evil-org/fraud-detector' is not approved: no ApprovedModel matches it{HINT}",
        )
    ]


def test_bare_id_is_only_a_hugging_face_id_in_hugging_face_variables() -> None:
    findings = check(deployment(env=[{"name": "MODEL_URI", "value": "acme/fraud-detector"}]))
    assert [f.path for f in findings] == [ENV_1]


def test_env_uri() -> None:
    assert (
        check(deployment(env=[{"name": "STORAGE_URI", "value": "s3://models/fraud-detector/v3"}]))
        == []
    )
    assert (
        check(deployment(env=[{"name": "MODEL_URI", "value": "hf://acme/fraud-detector/"}])) == []
    )


def test_env_value_from() -> None:
    env = [
        {
            "name": "MODEL_URI",
            "valueFrom": {"configMapKeyRef": {"name": "model", "key": "uri"}},
        }
    ]
    assert check(deployment(env=env)) == [
        Finding(
            Rule.MODELS_INDIRECT_REFERENCE,
            f"{ENV_1}.valueFrom",
            "MODEL_URI is set from valueFrom, which mlgate cannot read at admission, so the "
            "model reference cannot be verified; set the approved model URI literally in "
            "`env[].value` of the container (or a policy may set "
            "models.allowIndirectReferences: true)",
        )
    ]


def test_env_duplicates_are_all_judged() -> None:
    # Kubernetes uses the last duplicate: an approved first value must not hide it.
    env = [
        {"name": "MODEL_URI", "value": "s3://models/fraud-detector/v3"},
        {"name": "MODEL_URI", "value": "s3://evil/model"},
    ]
    assert [f.path for f in check(deployment(env=env))] == [
        "spec.template.spec.containers[0].env[2]"
    ]


def test_env_names_are_exact() -> None:
    env = [{"name": "model_uri", "value": "s3://evil/model"}, {"name": "LOG", "value": "x@1"}]
    assert check(deployment(env=env)) == []


def test_env_in_init_containers() -> None:
    w = _view(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "finetune", "namespace": "team-a"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "initContainers": [
                            {
                                "name": "download",
                                "image": "ghcr.io/acme/dl:1",
                                "env": [{"name": "MODEL_URI", "value": "s3://evil/weights"}],
                            }
                        ],
                        "containers": [{"name": "train", "image": "ghcr.io/acme/train:1"}],
                    }
                }
            },
        }
    )
    assert [f.path for f in check(w)] == ["spec.template.spec.initContainers[0].env[0]"]


def test_custom_sources() -> None:
    r = rules(sources={"annotations": ["example.com/weights"], "env": ["WEIGHTS"]})
    w = deployment(
        env=[{"name": "WEIGHTS", "value": "s3://evil/w"}, {"name": "MODEL_URI", "value": "s3://x"}],
        annotations={"example.com/weights": "s3://evil/a", "mlgate.io/model": "evil@1"},
    )
    assert [f.path for f in check(w, r=r)] == [
        'metadata.annotations["example.com/weights"]',
        ENV_1,
    ]


# --- approvals -------------------------------------------------------------------------------


def test_expiry_is_judged_against_now() -> None:
    w = inference_service("s3://models/fraud-detector/v3")
    assert check(w, (approval(expires="2026-03-01T12:00:01Z"),)) == []
    assert check(w, (approval(expires="2026-03-01T12:00:00Z"),)) == [
        Finding(
            Rule.MODELS_APPROVAL,
            STORAGE,
            "model 's3://models/fraud-detector/v3' is not approved: approval fraud-detector-v3 "
            f"expired at 2026-03-01T12:00:00+00:00{HINT}",
        )
    ]


def test_expiry_in_another_time_zone() -> None:
    w = inference_service("s3://models/fraud-detector/v3")
    # 13:30 in UTC+02:00 is 11:30 UTC: before NOW, so expired.
    assert len(check(w, (approval(expires="2026-03-01T13:30:00+02:00"),))) == 1


def test_revoked() -> None:
    assert check(inference_service("hf://acme/fraud-detector"), (approval(revoked=True),)) == [
        Finding(
            Rule.MODELS_APPROVAL,
            STORAGE,
            "model 'hf://acme/fraud-detector' is not approved: approval fraud-detector-v3 is "
            f"revoked{HINT}",
        )
    ]


def test_namespace_restricted() -> None:
    a = (approval(namespaces=["team-*", "fraud"]),)
    assert check(inference_service("s3://models/fraud-detector/v3", "team-a"), a) == []
    assert check(inference_service("s3://models/fraud-detector/v3", "fraud"), a) == []
    assert check(inference_service("s3://models/fraud-detector/v3", "sandbox"), a) == [
        Finding(
            Rule.MODELS_APPROVAL,
            STORAGE,
            "model 's3://models/fraud-detector/v3' is not approved: approval fraud-detector-v3 "
            f"does not cover namespace sandbox{HINT}",
        )
    ]
    # a namespace that merely contains an allowed name is not it
    assert len(check(inference_service("s3://models/fraud-detector/v3", "fraud-x"), a)) == 1


def test_namespace_restricted_without_namespace_fails_closed() -> None:
    a = (approval(namespaces=["team-a"]),)
    findings = check(inference_service("s3://models/fraud-detector/v3", ""), a)
    assert [f.message for f in findings] == [
        "model 's3://models/fraud-detector/v3' is not approved: approval fraud-detector-v3 "
        f"does not cover namespace (unset){HINT}"
    ]


def test_one_valid_approval_suffices() -> None:
    approvals = (
        approval("fd-revoked", revoked=True),
        approval("fd-expired", expires="2025-01-01T00:00:00Z"),
        approval("fd-prod-only", namespaces=["prod"]),
        approval("fd-team-a", namespaces=["team-a"]),
    )
    assert check(inference_service("s3://models/fraud-detector/v3"), approvals) == []


def test_every_void_approval_is_explained() -> None:
    approvals = (
        approval("fd-revoked", revoked=True),
        approval("fd-expired", expires="2025-01-01T00:00:00Z"),
        approval("fd-prod-only", namespaces=["prod"]),
        approval("other", model="other", uris=["s3://models/other"]),
    )
    assert [
        f.message for f in check(inference_service("s3://models/fraud-detector/v3"), approvals)
    ] == [
        "model 's3://models/fraud-detector/v3' is not approved: approval fd-revoked is revoked; "
        "approval fd-expired expired at 2025-01-01T00:00:00+00:00; approval fd-prod-only does not "
        f"cover namespace team-a{HINT}"
    ]


def test_name_version_of_a_void_approval() -> None:
    w = deployment(annotations={"mlgate.io/model": "fraud-detector@3"})
    assert len(check(w, (approval(revoked=True),))) == 1


def test_no_approvals_at_all() -> None:
    assert len(check(inference_service("s3://models/fraud-detector/v3"), ())) == 1


# --- policy switches -------------------------------------------------------------------------


def test_require_reference() -> None:
    r = rules(requireReference=True)
    assert check(deployment(), r=r) == [
        Finding(
            Rule.MODELS_REFERENCE,
            "metadata.annotations",
            "the workload declares no model; add annotation mlgate.io/model=<name>@<version> or a "
            "model URI",
        )
    ]
    assert check(deployment(annotations={"mlgate.io/model": "fraud-detector@3"}), r=r) == []


def test_require_approved_off() -> None:
    r = rules(requireApproved=False)
    assert check(inference_service("s3://evil/x"), r=r) == []
    r = rules(requireApproved=False, requireReference=True)
    assert [f.rule for f in check(deployment(), r=r)] == [Rule.MODELS_REFERENCE]


def test_normalise() -> None:
    assert models.normalise("s3://b/k//") == models.Wanted(uri="s3://b/k")
    assert models.normalise("fraud-detector@3", name_version=True) == models.Wanted(
        name="fraud-detector", version="3"
    )
    assert models.normalise("fraud-detector@3") is None
    assert models.normalise("acme/bert", hf_id=True) == models.Wanted(uri="hf://acme/bert")
    assert models.normalise("acme/bert") is None
    assert models.normalise("bert", hf_id=True) is None
