"""End-to-end fixtures: one real control plane (etcd + kube-apiserver on loopback) per session.

Every test under tests/e2e is marked ``e2e``. Tests isolate themselves with the ``namespace``
fixture. ``USE_EXISTING_CLUSTER=true`` runs them against the current kubeconfig instead.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.devcluster import (
    ASSETS_ENV,
    USE_EXISTING_CLUSTER_ENV,
    Cluster,
    LocalControlPlane,
    from_env,
    use_existing_cluster,
)

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[1]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Cluster]:
    """The session's cluster: a `LocalControlPlane` from $KUBEBUILDER_ASSETS, or the current
    kubeconfig's cluster with USE_EXISTING_CLUSTER=true."""
    if not use_existing_cluster() and not os.environ.get(ASSETS_ENV):
        pytest.fail(
            f"e2e tests need a control plane: {ASSETS_ENV} is not set. Run `make e2e` (or "
            f"`make controlplane-assets` and export {ASSETS_ENV}=$(hack/controlplane-assets.sh "
            f"--print-dir)), or set {USE_EXISTING_CLUSTER_ENV}=true to use the current kubeconfig.",
            pytrace=False,
        )
    cluster = from_env()
    with cluster:
        yield cluster
    if isinstance(cluster, LocalControlPlane):
        # stop() already raises if a process survived SIGKILL; make the guarantee explicit.
        assert not cluster.running(), f"control plane processes still running: {cluster.pids}"
        for pid in cluster.pids:
            assert not Path(f"/proc/{pid}").exists(), f"process {pid} survived teardown"
        assert not cluster.workdir.exists(), f"{cluster.workdir} not removed"


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].strip("-")


@pytest.fixture
def namespace(control_plane: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test (label ``mlgate.io/e2e=true``), deleted afterwards.

    It gets a ``default`` ServiceAccount right away: the local control plane has no
    controller-manager to create it, and the ServiceAccount admission plugin needs it for Pods.
    Without a controller-manager a deleted namespace stays Terminating; that is harmless.
    """
    name = f"e2e-{_slug(request.node.name, 40)}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        check=True,
        input=f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {name}
  labels: {{mlgate.io/e2e: "true"}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: default, namespace: {name}}}
""",
    )
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


# What `edit` grants on a real cluster. The local control plane has no controller-manager, so
# the aggregated `edit` role stays empty there; binding its parts gives the same rights.
EDIT_ROLES = ("edit", "system:aggregate-to-edit", "system:aggregate-to-view")
Tenant = Callable[..., Path]


@pytest.fixture
def tenant(control_plane: Cluster) -> Tenant:
    """``tenant(namespace, user="tenant", rules=())``: the kubeconfig of a non-admin user with
    the ``edit`` role in ``namespace`` (group ``e2e-tenants``), plus ``rules`` (RBAC
    PolicyRules) as a Role there. The bindings live in the namespace and go with it.

    Use it as ``control_plane.kubectl(..., kubeconfig=tenant(namespace))``.
    """

    def bind(namespace: str, user: str = "tenant", rules: Sequence[dict[str, Any]] = ()) -> Path:
        subject = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
        docs: list[dict[str, Any]] = [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"{user}-{_slug(role, 40)}", "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [subject],
            }
            for role in EDIT_ROLES
        ]
        if rules:
            name = f"{user}-extra"
            meta = {"name": name, "namespace": namespace}
            docs.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": meta,
                    "rules": list(rules),
                }
            )
            docs.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": meta,
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": name,
                    },
                    "subjects": [subject],
                }
            )
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=True)
        return control_plane.user_kubeconfig(user, ["e2e-tenants"])

    return bind
