"""AdmissionReview (admission.k8s.io/v1) in and out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REVIEW_API_VERSION = "admission.k8s.io/v1"
# The apiserver shows at most this much of a denial; longer messages are cut with a pointer.
MAX_MESSAGE = 4000
MAX_WARNING = 240


class MalformedReview(ValueError):
    """The body is not an AdmissionReview this webhook can answer."""


@dataclass(frozen=True, slots=True)
class Request:
    uid: str
    operation: str
    group: str
    version: str
    kind: str
    resource: str
    resource_group: str
    resource_version: str
    sub_resource: str
    name: str
    namespace: str
    username: str
    groups: tuple[str, ...]
    obj: Mapping[str, Any] | None
    old_obj: Mapping[str, Any] | None
    dry_run: bool


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedReview(f"{what} must be an object")
    return value


def _optional_object(value: Any, what: str) -> Mapping[str, Any] | None:
    return None if value is None else _mapping(value, what)


def parse_review(body: Any) -> Request:
    review = _mapping(body, "the body")
    if review.get("apiVersion") != REVIEW_API_VERSION or review.get("kind") != "AdmissionReview":
        raise MalformedReview(
            f"expected apiVersion {REVIEW_API_VERSION} kind AdmissionReview, got "
            f"{review.get('apiVersion')!r} {review.get('kind')!r}"
        )
    req = _mapping(review.get("request"), "request")
    uid = req.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("request.uid is missing")
    operation = req.get("operation")
    if operation not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        raise MalformedReview(f"request.operation {operation!r} is not an admission operation")
    kind = _mapping(req.get("kind"), "request.kind")
    resource = _mapping(req.get("resource"), "request.resource")
    user_info = req.get("userInfo")
    user: Mapping[str, Any] = user_info if isinstance(user_info, Mapping) else {}
    listed = user.get("groups")
    groups: list[Any] = listed if isinstance(listed, list) else []
    return Request(
        uid=uid,
        operation=operation,
        group=str(kind.get("group") or ""),
        version=str(kind.get("version") or ""),
        kind=str(kind.get("kind") or ""),
        resource=str(resource.get("resource") or ""),
        resource_group=str(resource.get("group") or ""),
        resource_version=str(resource.get("version") or ""),
        sub_resource=str(req.get("subResource") or ""),
        name=str(req.get("name") or ""),
        namespace=str(req.get("namespace") or ""),
        username=str(user.get("username") or ""),
        groups=tuple(str(g) for g in groups),
        obj=_optional_object(req.get("object"), "request.object"),
        old_obj=_optional_object(req.get("oldObject"), "request.oldObject"),
        dry_run=req.get("dryRun") is True,
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 24] + " ... (message truncated)"


def response(
    uid: str,
    allowed: bool,
    message: str = "",
    *,
    warnings: tuple[str, ...] = (),
    code: int = 403,
    reason: str = "Forbidden",
    patch: str | None = None,  # base64 of a JSONPatch, from the mutating webhook
) -> dict[str, Any]:
    answer: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if allowed and patch is not None:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = patch
    if not allowed:
        answer["status"] = {
            "code": code,
            "reason": reason,
            "message": _clip(message, MAX_MESSAGE),
        }
    if warnings:
        answer["warnings"] = [_clip(w, MAX_WARNING) for w in warnings]
    return {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": answer}
