"""Devices requested through Dynamic Resource Allocation, counted like Kubernetes' quota does.

A pod names ResourceClaims in `spec.resourceClaims`: `resourceClaimTemplateName` (the claim is
created per pod, so its devices count per pod) or `resourceClaimName` (one claim shared by every
pod that names it, so it counts once). A claim's devices are counted per device class exactly as
Kubernetes' ResourceClaim quota evaluator does: an `ExactCount` request charges its `count`
(default 1); `All` charges every device the class could match, unbounded unless a ceiling is
given; `firstAvailable` charges, per device class, the largest of its alternatives; admin access
is not exempt; unknown allocation modes charge nothing. Requests are read in the v1 shape
(`exactly`) and the v1beta1 shape (fields on the request itself).

Devices are reported as the extended-resource-like name Kubernetes' quota uses,
`<class>.deviceclass.resource.k8s.io/devices`, so a policy's `gpu.deviceClasses` are simply more
resources to count.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlgate.engine.kindspec import UNBOUNDED
from mlgate.engine.reads import is_map

DRA_GROUP = "resource.k8s.io"
DEVICE_SUFFIX = ".deviceclass.resource.k8s.io/devices"
TEMPLATE = "ResourceClaimTemplate"
CLAIM = "ResourceClaim"
# The ceiling Kubernetes' quota evaluator charges for allocationMode All (AllocationResultsMaxSize).
KUBERNETES_ALL_CEILING = 32


def device_resource(device_class: str) -> str:
    return f"{device_class}{DEVICE_SUFFIX}"


def device_class_of(resource: str) -> str | None:
    return resource.removesuffix(DEVICE_SUFFIX) if resource.endswith(DEVICE_SUFFIX) else None


def _count(request: Mapping[str, Any], all_devices: int) -> int:
    mode = request.get("allocationMode") or "ExactCount"
    if mode == "ExactCount":
        count = request.get("count", 1)
        return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0
    return all_devices if mode == "All" else 0


def _add(into: dict[str, int], resource: str, n: int) -> None:
    into[resource] = min(UNBOUNDED, into.get(resource, 0) + n)


def claim_devices(spec: Any, all_devices: int = UNBOUNDED) -> dict[str, int]:
    """Devices a ResourceClaim spec (or a template's `spec.spec`) charges, per device class."""
    devices = spec.get("devices") if is_map(spec) else None
    requests = devices.get("requests") if is_map(devices) else None
    total: dict[str, int] = {}
    for request in requests if isinstance(requests, list) else []:
        if not is_map(request):
            continue
        alternatives = request.get("firstAvailable")
        if isinstance(alternatives, list) and alternatives:
            largest: dict[str, int] = {}
            for sub in alternatives:
                if is_map(sub) and isinstance(sub.get("deviceClassName"), str):
                    resource = device_resource(sub["deviceClassName"])
                    largest[resource] = max(largest.get(resource, 0), _count(sub, all_devices))
            for resource, n in largest.items():
                _add(total, resource, n)
            continue
        exact = request.get("exactly")
        exact = exact if is_map(exact) else request  # v1 or v1beta1 shape
        if isinstance(exact.get("deviceClassName"), str):
            _add(total, device_resource(exact["deviceClassName"]), _count(exact, all_devices))
    return total


@dataclass(frozen=True, slots=True)
class ClaimRef:
    kind: str  # ResourceClaimTemplate (one claim per pod) or ResourceClaim (shared)
    name: str
    path: str


def pod_claims(spec: Mapping[str, Any], path: str) -> Iterator[ClaimRef]:
    refs = spec.get("resourceClaims")
    for i, ref in enumerate(refs if isinstance(refs, list) else []):
        if not is_map(ref):
            continue
        at = f"{path}.resourceClaims[{i}]"
        if isinstance(ref.get("resourceClaimTemplateName"), str):
            yield ClaimRef(TEMPLATE, ref["resourceClaimTemplateName"], at)
        elif isinstance(ref.get("resourceClaimName"), str):
            yield ClaimRef(CLAIM, ref["resourceClaimName"], at)


def claim_spec(kind: str, obj: Mapping[str, Any]) -> Any:
    """The claim spec inside a ResourceClaim or a ResourceClaimTemplate object."""
    spec = obj.get("spec")
    if kind == TEMPLATE and is_map(spec):
        return spec.get("spec")
    return spec


# (kind, name) -> the claim spec of a ResourceClaim or ResourceClaimTemplate in the namespace
Claims = Mapping[tuple[str, str], Any]


# A CEL selector that pins the product, and nothing else: `device.attributes["<driver>"].
# productName == "X"` or `... in ["X", "Y"]`. Anything looser (`|| true`) pins nothing.
_ATTRIBUTE = r'device\.attributes\["[a-z0-9.-]+"\]\.productName'
_PRODUCT_EQ = re.compile(rf'\s*{_ATTRIBUTE}\s*==\s*"([^"\\]+)"\s*')
_PRODUCT_IN = re.compile(rf'\s*{_ATTRIBUTE}\s+in\s+\[((?:\s*"[^"\\]+"\s*,?)+)\]\s*')


def _pinned(selectors: Any) -> frozenset[str] | None:
    """Products a request's selectors restrict it to (they are AND-ed); None: not restricted."""
    pinned: frozenset[str] | None = None
    for selector in selectors if isinstance(selectors, list) else []:
        cel = selector.get("cel") if is_map(selector) else None
        expression = cel.get("expression") if is_map(cel) else None
        if not isinstance(expression, str):
            continue
        if match := _PRODUCT_EQ.fullmatch(expression):
            products = frozenset({match.group(1)})
        elif match := _PRODUCT_IN.fullmatch(expression):
            products = frozenset(re.findall(r'"([^"\\]+)"', match.group(1)))
        else:
            continue
        pinned = products if pinned is None else pinned & products
    return pinned


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """One way a claim asks for devices (a request, or one `firstAvailable` alternative)."""

    ref: ClaimRef
    name: str
    resource: str  # device_resource(class)
    products: frozenset[str] | None  # pinned by CEL selectors; None: any product of the class


def _requests(ref: ClaimRef, spec: Any) -> Iterator[DeviceRequest]:
    devices = spec.get("devices") if is_map(spec) else None
    requests = devices.get("requests") if is_map(devices) else None
    for request in requests if isinstance(requests, list) else []:
        if not is_map(request):
            continue
        name = str(request.get("name") or "")
        alternatives = request.get("firstAvailable")
        if isinstance(alternatives, list) and alternatives:
            options = [a for a in alternatives if is_map(a)]
        else:
            exact = request.get("exactly")
            options = [exact if is_map(exact) else request]
        for option in options:
            if isinstance(option.get("deviceClassName"), str):
                resource = device_resource(option["deviceClassName"])
                yield DeviceRequest(ref, name, resource, _pinned(option.get("selectors")))


@dataclass(frozen=True, slots=True)
class PodDevices:
    per_pod: dict[str, int]  # from templates: every pod gets its own claim
    shared: dict[str, dict[str, int]]  # ResourceClaim name -> devices, counted once
    missing: tuple[ClaimRef, ...]  # claims whose devices cannot be known
    requests: tuple[DeviceRequest, ...] = ()


def pod_devices(spec: Mapping[str, Any], path: str, claims: Claims | None) -> PodDevices:
    if not spec.get("resourceClaims"):
        return PodDevices({}, {}, ())  # most pods: nothing to look up
    per_pod: dict[str, int] = {}
    shared: dict[str, dict[str, int]] = {}
    missing: list[ClaimRef] = []
    requests: list[DeviceRequest] = []
    for ref in pod_claims(spec, path):
        found = None if claims is None else claims.get((ref.kind, ref.name))
        if found is None:
            missing.append(ref)
            continue
        requests.extend(_requests(ref, found))
        devices = claim_devices(found)
        if ref.kind == CLAIM:
            shared[ref.name] = devices
        else:
            for resource, n in devices.items():
                _add(per_pod, resource, n)
    return PodDevices(per_pod, shared, tuple(missing), tuple(requests))
