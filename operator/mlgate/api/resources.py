"""One mlgate document, validated and compiled: what the webhook checks on apply
(`policies.mlgate.io`) and what the operator puts in force.

It sits apart from api.compile because WorkloadKinds (api.workloadkind) build on that module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlgate.api import models as api
from mlgate.api.compile import InvalidResource, compile_approval, compile_policy, parse_resource
from mlgate.api.workloadkind import compile_workload_kind
from mlgate.engine.policy import Approval, CompiledPolicy
from mlgate.engine.workloads import KindSpec

Compiled = CompiledPolicy | Approval | KindSpec


def compile_resource(doc: Mapping[str, Any]) -> Compiled:
    """Raises InvalidResource naming the field, whatever went wrong: one bad object must never
    take the operator's handlers or the webhook down."""
    resource = parse_resource(doc)
    try:
        if isinstance(resource, api.ClusterMLPolicy | api.MLPolicy):
            return compile_policy(resource)
        if isinstance(resource, api.WorkloadKind):
            return compile_workload_kind(resource)
        assert isinstance(resource, api.ApprovedModel)  # the last of api.MLGATE_KINDS
        return compile_approval(resource)
    except InvalidResource:
        raise
    except Exception as exc:  # reported to the user; the policy fails closed
        raise InvalidResource(f"cannot compile: {type(exc).__name__}: {exc}") from None
