"""GPUBudget: mlgate's durable record of a namespace's GPU reservations, and its visible status.

One object per namespace, named after it, in mlgate's own namespace (tenants cannot edit it
there, and the webhook never judges that namespace). The webhook writes `spec.reservations`
with a resourceVersion precondition, so replicas racing for the last GPUs of a quota cannot
both win; the leader reconciles reservations with the live objects and writes `status`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from mlgate.api.models import Spec

GPU_BUDGET_KIND = "GPUBudget"
GPU_BUDGET_PLURAL = "gpubudgets"


class GpuOwner(Spec):
    group: Annotated[str, Field(max_length=253)] = Field("", description='"" for the core group.')
    kind: Annotated[str, Field(min_length=1, max_length=63)]
    name: Annotated[str, Field(min_length=1, max_length=253)]


class GpuReservation(GpuOwner):
    resources: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Extended resources reserved for the object."
    )
    updated: datetime = Field(description="When an admission last raised the reservation.")
    within: list[GpuOwner] = Field(
        [],
        description="For a pod admitted inside its owner's reservation: its controlling owners, "
        "nearest first. It then counts as one of that owner's pods, not as a charge of its own.",
    )


class GpuBudgetSpec(Spec):
    namespace: Annotated[str, Field(min_length=1, max_length=63)] = Field(
        description="The namespace whose GPUs this budget records."
    )
    reservations: list[GpuReservation] = []


class GpuResourceUse(Spec):
    used: int = Field(0, description="Requested by the namespace's live pods.")
    reserved: int = Field(0, description="Reserved by admitted workloads.")
    charged: int = Field(0, description="What the quota sees: per charge, max(reserved, used).")


class GpuBudgetStatus(Spec):
    used: int | None = None
    reserved: int | None = None
    charged: int | None = None
    quota: int | None = Field(None, description="The smallest namespaceQuota in force here.")
    resources: dict[str, GpuResourceUse] = {}
    observed_time: datetime | None = None
