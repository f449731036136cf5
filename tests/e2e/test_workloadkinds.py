"""A WorkloadKind teaches mlgate a kind through the real apiserver: routed, then judged."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlgate.devcluster import Cluster
from mlgate.devrun import MlgateProcess
from mlgate.webhook.config import EXTENSIONS_WEBHOOK
from tests.e2e.test_admission import BAD, GOOD, apply, policy_doc, running_mlgate, wait_policy

REPO = Path(__file__).resolve().parents[2]
CONFIG = "mlgate-kinds-e2e"

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}

WIDGET_KIND = {
    "apiVersion": "mlgate.io/v1alpha1",
    "kind": "WorkloadKind",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "kind": "Widget",
        "plural": "widgets",
        "versions": ["v1"],
        "pods": [
            {
                "path": "spec.fleet[*].podTemplate",
                "replicas": [{"paths": ["spec.fleet[*].count"]}],
                "rolePath": "spec.fleet[*].name",
            }
        ],
    },
}


def widget(name: str, image: str) -> dict[str, Any]:
    template = {"spec": {"containers": [{"name": "main", "image": image}]}}
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"fleet": [{"name": "a", "count": 2, "podTemplate": template}]},
    }


@pytest.fixture(scope="module")
def mlgate(
    control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlgateProcess]:
    yield from running_mlgate(
        control_plane, tmp_path_factory, CONFIG, "--audit-interval", "1", crds=[WIDGET_CRD]
    )
    control_plane.kubectl("delete", "workloadkind", "--all", "--ignore-not-found")


def extension_rules(cp: Cluster) -> list[dict[str, Any]]:
    out = cp.kubectl("get", "validatingwebhookconfiguration", CONFIG, "-o", "json", check=True)
    (hook,) = [h for h in json.loads(out.stdout)["webhooks"] if h["name"] == EXTENSIONS_WEBHOOK]
    rules: list[dict[str, Any]] = hook.get("rules") or []
    return rules


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_workload_kind_is_routed_and_judged(
    control_plane: Cluster, mlgate: MlgateProcess, namespace: str
) -> None:
    cp = control_plane
    name = f"images-{namespace}"
    images = {"allowedRegistries": ["registry.example.com/ml/*"]}
    assert apply(cp, policy_doc(name, namespace, images=images)).returncode == 0
    wait_policy(cp, name)
    assert extension_rules(cp) == []
    # Not routed yet: admitted unjudged, as any kind the webhook is not asked about.
    assert apply(cp, widget("early", BAD), args=("-n", namespace)).returncode == 0

    assert apply(cp, WIDGET_KIND).returncode == 0
    eventually(lambda: bool(extension_rules(cp)), "the Widget rule", timeout=30)
    assert extension_rules(cp) == [
        {
            "apiGroups": ["example.com"],
            "apiVersions": ["v1"],
            "resources": ["widgets"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    status = cp.kubectl("get", "workloadkind", "widgets.example.com", "-o", "json", check=True)
    (ready,) = [
        c for c in json.loads(status.stdout)["status"]["conditions"] if c["type"] == "Ready"
    ]
    assert ready["status"] == "True"

    denied = apply(cp, widget("bad", BAD), args=("-n", namespace))
    assert denied.returncode != 0
    assert f'admission webhook "{EXTENSIONS_WEBHOOK}" denied the request' in denied.stderr
    assert "spec.fleet[0].podTemplate.spec.containers[0].image" in denied.stderr
    assert apply(cp, widget("good", GOOD), args=("-n", namespace)).returncode == 0

    # The background audit judges the one admitted before its kind was routed.
    def audited() -> bool:
        out = cp.kubectl("get", "clustermlpolicy", name, "-o", "jsonpath={.status.violations}")
        return out.stdout.strip() == "1"

    eventually(audited, "the audit to count the early Widget")

    # Forgetting the kind takes its rule away again.
    cp.kubectl("delete", "workloadkind", "widgets.example.com", check=True)
    eventually(lambda: extension_rules(cp) == [], "the Widget rule to go")


def test_an_invalid_workload_kind_is_refused_and_not_routed(
    control_plane: Cluster, mlgate: MlgateProcess
) -> None:
    """WorkloadKinds are compiled at admission like policies (policies.mlgate.io): an invalid
    one is refused naming the field, and nothing is routed for it. One that got in while mlgate
    was down keeps its last good version (tests/unit/test_last_good.py)."""
    bad = {
        **WIDGET_KIND,
        "metadata": {"name": "broken"},
        "spec": {**WIDGET_KIND["spec"], "pods": [{"path": "spec..template"}]},
    }
    out = apply(control_plane, bad)
    assert out.returncode != 0
    assert 'admission webhook "policies.mlgate.io" denied the request' in out.stderr
    assert "spec.pods[0].path" in out.stderr, out.stderr
    assert extension_rules(control_plane) == []
