"""`mlgate check` and egress: NetworkPolicy documents and hostNetwork are judged as the webhook
judges them, and --print-egress-policy shows the NetworkPolicy mlgate would keep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate import cli
from mlgate.engine import egress
from mlgate.engine.policy import NetworkPolicyRules


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


def policy(name: str = "prod", mode: str = "Enforce", **network_policy: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": name},
        "spec": {
            "mode": mode,
            "match": {"namespaceSelector": {"matchLabels": {"mlgate.io/governed": "true"}}},
            "egress": {"networkPolicy": network_policy},
        },
    }


ALLOW = {"allowedCIDRs": ["10.0.0.0/8"], "allowedPorts": [443], "allowedNamespaces": ["team-*"]}


def netpol(name: str, cidr: str, namespace: str | None = "ml-prod") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": cidr}}], "ports": [{"port": 443}]}],
        },
    }


def check(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = cli.main(["check", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_widening_network_policies_are_denied_and_others_compliant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = write(tmp_path / "policy.yaml", policy(**ALLOW))
    manifests = write(
        tmp_path / "np.yaml", netpol("open", "0.0.0.0/0"), netpol("fine", "10.20.0.0/16")
    )
    code, out, _ = check(capsys, "-p", policies, "-o", "json", manifests)
    assert code == 1
    results = {r["name"]: r for r in json.loads(out)["results"]}
    assert results["fine"]["status"] == "compliant"
    assert results["open"]["status"] == "denied"
    [violation] = results["open"]["violations"]
    assert violation["rule"] == "egress.networkPolicy"
    assert violation["path"] == "spec.egress[0].to[0].ipBlock.cidr"


def test_warn_mode_network_policy_only_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = write(tmp_path / "policy.yaml", policy(mode="Warn", **ALLOW))
    manifests = write(tmp_path / "np.yaml", netpol("open", "::/0"))
    code, out, _ = check(capsys, "-p", policies, manifests)
    assert code == 0 and "egress.networkPolicy" in out


def test_host_network_is_judged_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_host = {**policy(**ALLOW)}
    no_host["spec"]["egress"]["allowHostNetwork"] = False
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml-prod"},
        "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "x"}]},
    }
    code, out, _ = check(
        capsys, "-p", write(tmp_path / "p.yaml", no_host), write(tmp_path / "pod.yaml", pod)
    )
    assert code == 1 and "egress.hostNetwork at spec.hostNetwork" in out


def test_print_egress_policy_for_a_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = write(tmp_path / "policy.yaml", policy(**ALLOW))
    code, out, err = check(capsys, "-p", policies, "--print-egress-policy", "-n", "ml-prod")
    assert (code, err) == (0, "")
    [printed] = list(yaml.safe_load_all(out))
    rules = NetworkPolicyRules(
        allowed_cidrs=("10.0.0.0/8",), allowed_ports=(443,), allowed_namespaces=("team-*",)
    )
    effective = egress.intersect([("prod", rules)], ["ml-prod"])
    assert printed == egress.managed_network_policy("ml-prod", effective)
    assert printed["spec"]["egress"][1] == {
        "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
        "ports": [{"protocol": "TCP", "port": 443}],
    }


def test_print_egress_policy_for_each_namespace_named_with_globs_resolved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = write(tmp_path / "policy.yaml", policy(**ALLOW))
    manifests = write(
        tmp_path / "np.yaml",
        netpol("a", "10.0.0.0/8", "team-a"),
        netpol("b", "10.0.0.0/8", "kube-system"),
    )
    code, out, err = check(capsys, "-p", policies, "--print-egress-policy", manifests)
    assert code == 0
    [printed] = list(yaml.safe_load_all(out))
    assert printed["metadata"]["namespace"] == "team-a"
    assert printed["spec"]["egress"][2]["to"][0]["namespaceSelector"]["matchExpressions"][0][
        "values"
    ] == ["team-a"]
    assert "no policy keeps a NetworkPolicy in namespace kube-system" in err


def test_print_egress_policy_when_nothing_manages_egress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = write(tmp_path / "policy.yaml", policy(manage=False, **ALLOW))
    code, out, err = check(capsys, "-p", policies, "--print-egress-policy", "-n", "ml-prod")
    assert code == 0 and out.strip() in ("", "[]")
    assert "no policy keeps a NetworkPolicy in namespace ml-prod" in err


def test_print_egress_policy_needs_a_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = write(tmp_path / "policy.yaml", policy(**ALLOW))
    code, _, err = check(capsys, "-p", policies, "--print-egress-policy")
    assert code == 2 and "pass --namespace NS" in err


def test_check_still_needs_a_path_to_judge(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(capsys)
    assert code == 2 and "give at least one PATH" in err
