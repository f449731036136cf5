"""Validate mlgate resources and compile them into the engine's immutable policy data.

Compilation happens once per change of a resource; the engine's hot path only reads the result.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mlgate.api import models as api
from mlgate.engine import policy as engine
from mlgate.engine.decisions import Mode
from mlgate.engine.dra import device_resource
from mlgate.engine.references import compile_pattern


class InvalidResource(ValueError):
    """A document that is not a valid mlgate resource; the message names the field."""


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<document>"


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field: `spec.gpu.maxPerPod: must be >= 0`."""
    return "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors())


def parse_resource(doc: Mapping[str, Any]) -> api.Resource:
    """Raises InvalidResource, also for documents too deeply nested to validate."""
    kind = doc.get("kind")
    model = api.MLGATE_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(api.MLGATE_KINDS)
        raise InvalidResource(f"kind: {kind!r} is not an mlgate.io kind (expected one of {known})")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise InvalidResource(describe_validation_error(exc)) from None
    except RecursionError:
        raise InvalidResource("<document>: nested too deeply") from None


def key_id(pem: str) -> str:
    # Imported for the few policies with keys: `mlgate check` starts faster without it.
    from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
        Encoding,
        PublicFormat,
        load_pem_public_key,
    )

    der = load_pem_public_key(pem.encode()).public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def name_globs(globs: list[str]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(fnmatch.translate(g)) for g in globs)


def gpu_resources(resources: list[str], device_classes: list[str]) -> tuple[re.Pattern[str], ...]:
    """What a policy counts as GPUs: extended resources, and DRA devices of the given classes
    (as the `<class>.deviceclass.resource.k8s.io/devices` names the engine counts them under)."""
    return name_globs([*resources, *(device_resource(c) for c in device_classes)])


def _selector(sel: api.LabelSelector | None) -> engine.LabelSelector | None:
    if sel is None:
        return None
    return engine.LabelSelector(
        match_labels=dict(sel.match_labels),
        match_expressions=tuple(
            (e.key, e.operator.value, frozenset(e.values)) for e in sel.match_expressions
        ),
    )


def _match(match: api.Match, own_namespace: str | None) -> engine.Match:
    return engine.Match(
        namespaces=name_globs(match.namespaces),
        exclude_namespaces=name_globs(match.exclude_namespaces),
        namespace_selector=_selector(match.namespace_selector),
        kinds=frozenset(match.kinds),
        selector=_selector(match.selector),
        own_namespace=own_namespace,
    )


def _key(key: api.PublicKey) -> engine.KeyRef:
    if key.public_key is not None:
        return engine.KeyRef(id=key_id(key.public_key), pem=key.public_key)
    assert key.secret_ref is not None  # guaranteed by PublicKey's validator
    ref = key.secret_ref
    return engine.KeyRef(
        id=f"secret:{ref.namespace}/{ref.name}/{ref.key}",
        secret=(ref.namespace, ref.name, ref.key),
    )


def _images(images: api.Images | None) -> engine.ImageRules | None:
    if images is None:
        return None
    allowed = images.allowed_registries
    return engine.ImageRules(
        allowed_registries=None if allowed is None else tuple(map(compile_pattern, allowed)),
        require_digest=images.require_digest,
        disallow_tags=frozenset(t.lower() for t in images.disallow_tags),
        signatures=None
        if images.signatures is None
        else tuple(
            engine.SignatureRule(
                images=tuple(map(compile_pattern, entry.images)),
                keys=tuple(map(_key, entry.keys)),
            )
            for entry in images.signatures
        ),
        mutate_digest=images.mutate_digest,
    )


def _models(models: api.Models | None) -> engine.ModelRules | None:
    if models is None:
        return None
    return engine.ModelRules(
        require_approved=models.require_approved,
        require_reference=models.require_reference,
        require_immutable=models.require_immutable,
        require_digest=models.require_digest,
        require_scan=models.require_scan,
        require_signature=_signature_requirement(models.require_signature),
        verify_loaded=(
            tuple((d.init_container, d.path) for d in models.verify_loaded.downloaders)
            if models.verify_loaded is not None
            else None
        ),
        annotations=tuple(models.sources.annotations),
        env=tuple(models.sources.env),
        allow_indirect_references=models.allow_indirect_references,
        allowed_endpoints=frozenset(e.strip().rstrip("/") for e in models.allowed_endpoints),
    )


def _signature_requirement(
    wanted: api.ModelSignatureRequirement | None,
) -> engine.SignatureRequirement | None:
    if wanted is None:
        return None
    return engine.SignatureRequirement(
        key_ids=frozenset(key_id(k.public_key) for k in wanted.keys if k.public_key),
        identities=tuple((i.identity, i.issuer) for i in wanted.identities),
    )


def _signer(spec: api.ApprovedModelSpec) -> tuple[engine.Signer | None, str | None]:
    """The approval's signer, and why a recorded one does not count. A key signature counts only
    if its stored bundle verifies with its stored key over the approval's digest."""
    signature = spec.signature
    if signature is None:
        return None, None
    if signature.method is not api.SignerMethod.KEY:
        method = signature.method.value
        return engine.Signer(method, identity=signature.signer, issuer=signature.issuer), None
    if signature.bundle is None or signature.public_key is None:
        return None, "a key signature needs its bundle and publicKey (mlgate approve-model)"
    if key_id(signature.public_key) != signature.signer:
        return None, "publicKey is not the key named as signer"
    # Only key-signed approvals need cryptography: imported here, not at start-up.
    from mlgate.provenance.dsse import InvalidBundle, signed_subject  # noqa: PLC0415

    try:
        subject = signed_subject(signature.bundle, signature.public_key)
    except InvalidBundle as exc:
        return None, str(exc)
    if subject != spec.digest:
        return None, f"the bundle signs {subject}, not the approval's digest {spec.digest}"
    return engine.Signer("key", key_id=signature.signer), None


def _egress(egress: api.Egress | None) -> engine.EgressRules | None:
    if egress is None:
        return None
    np = egress.network_policy
    return engine.EgressRules(
        allow_host_network=egress.allow_host_network,
        allow_host_pid=egress.allow_host_pid,
        allow_host_ipc=egress.allow_host_ipc,
        allow_privileged=egress.allow_privileged,
        allow_network_capabilities=egress.allow_network_capabilities,
        allow_secondary_networks=egress.allow_secondary_networks,
        network_policy=None
        if np is None
        else engine.NetworkPolicyRules(
            manage=np.manage,
            allow_dns=np.allow_dns,
            allowed_cidrs=tuple(np.allowed_cidrs),
            allowed_ports=tuple(np.allowed_ports),
            allowed_namespaces=tuple(np.allowed_namespaces),
        ),
    )


def _gpu(gpu: api.Gpu | None) -> engine.GpuRules | None:
    if gpu is None:
        return None
    return engine.GpuRules(
        resources=gpu_resources(gpu.resources, gpu.device_classes),
        max_per_pod=gpu.max_per_pod,
        max_per_workload=gpu.max_per_workload,
        namespace_quota=gpu.namespace_quota,
        allowed_products=frozenset(gpu.allowed_products),
    )


def _guardrail(rules: api.RequireGuardrail | None) -> engine.GuardrailRules | None:
    if rules is None:
        return None
    return engine.GuardrailRules(
        accept=frozenset(k.value for k in rules.accept),
        contracts=tuple(
            engine.GuardrailContract(
                c.api_version, c.kind, c.resource, c.target_field, _selector(c.selector)
            )
            for c in rules.contracts
        ),
        detector_selector=_selector(rules.detector_selector),
        guardrail_models=name_globs(rules.guardrail_models),
    )


def _llm(llm: api.Llm | None) -> engine.LlmRules | None:
    if llm is None:
        return None
    return engine.LlmRules(
        servers=tuple((s.name, tuple(s.images), tuple(s.commands)) for s in llm.servers),
        require_guardrail=_guardrail(llm.require_guardrail),
        no_direct_exposure=llm.no_direct_exposure,
        require_rate_limit=llm.require_rate_limit,
    )


def policy_name(resource: api.ClusterMLPolicy | api.MLPolicy) -> str:
    meta = resource.metadata
    return (
        meta.name if isinstance(resource, api.ClusterMLPolicy) else f"{meta.namespace}/{meta.name}"
    )


def compile_policy(resource: api.ClusterMLPolicy | api.MLPolicy) -> engine.CompiledPolicy:
    spec = resource.spec
    own_namespace = None
    if isinstance(resource, api.MLPolicy):
        if not resource.metadata.namespace:
            raise InvalidResource("metadata.namespace: an MLPolicy must have a namespace")
        own_namespace = resource.metadata.namespace
    return engine.CompiledPolicy(
        name=policy_name(resource),
        mode=spec.mode,
        match=_match(spec.match, own_namespace),
        images=_images(spec.images),
        models=_models(spec.models),
        egress=_egress(spec.egress),
        gpu=_gpu(spec.gpu),
        unknown_kinds=spec.unknown_kinds,
        llm=_llm(spec.llm),
    )


def compile_approval(resource: api.ApprovedModel) -> engine.Approval:
    spec = resource.spec
    signer, problem = _signer(spec)
    return engine.Approval(
        name=resource.metadata.name,
        model=spec.model,
        version=spec.version,
        uris=frozenset(u.rstrip("/") for u in spec.uris),
        digest=spec.digest,
        scan_result=spec.scan.result.value if spec.scan else None,
        signer=signer,
        signature_problem=problem,
        expires=spec.expires,
        revoked=spec.revoked,
        namespaces=name_globs(spec.namespaces),
    )


def failed_policy(doc: Mapping[str, Any], reason: str) -> engine.CompiledPolicy | None:
    """What stands in for a policy of which no version compiles: it denies what it governs.

    Its scope is its own `spec.match` when that part compiles. When the match itself is
    invalid mlgate cannot tell what the policy meant to govern, so it fails closed: an
    MLPolicy governs its whole namespace, a ClusterMLPolicy every namespace mlgate judges.
    None for documents that are not policies (an ApprovedModel that does not compile
    approves nothing, which is already closed).
    """
    kind = doc.get("kind")
    if kind not in ("ClusterMLPolicy", "MLPolicy"):
        return None
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    own = namespace if kind == "MLPolicy" else None
    spec = doc.get("spec")
    try:
        match = _match(api.Match.model_validate((spec or {}).get("match") or {}), own)
    except (ValidationError, AttributeError, ValueError):
        match = engine.Match(own_namespace=own)
    return engine.CompiledPolicy(
        name=name if own is None else f"{own}/{name}",
        mode=Mode.ENFORCE,
        match=match,
        invalid=reason,
    )
