"""Models downloaded into a pod, verified there before anything serves them.

A download init container (KServe's `storage-initializer`, which KServe's own pod mutator
injects with args `[<uri>, /mnt/models]`, or one a policy names with its path) fetches the
model into a volume. Enforce policies with `models.verifyLoaded` have mlgate's mutating webhook
insert, right after each download, an init container running `mlgate verify-model` with the
digests of the approvals that count for that URI. It fails, so the pod never starts serving,
when the files differ from every approved digest. Nothing of the workload switches it off: the
policy decides, and the validating webhook refuses a pod whose verifier is missing or altered.

Kubeflow Trainer downloads in a Job of its own instead: the JobSet's `model-initializer`
fetches `STORAGE_URI` into the shared `/workspace/model`, and the `node` Job starts once it has
completed. There the verifier is the last init container of the node pods (INITIALIZERS).

What could change the files of an in-pod download after the verifier ran is refused too: a
download container that keeps running (a native sidecar), any other container mounting the model
volume writable, and a model volume other than an emptyDir (a PVC or hostPath can be written
from elsewhere). Trainer's shared volume is a PVC the trainer itself writes: there the verifier
vouches for the files when the trainer starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlgate.engine.decisions import Finding, Mode, Rule, Violation, attribute
from mlgate.engine.models import counting_approvals, references
from mlgate.engine.policy import CompiledPolicy, Facts
from mlgate.engine.reads import as_list as _list
from mlgate.engine.reads import as_map as _map
from mlgate.engine.scope import governing
from mlgate.engine.workloads import PodView, WorkloadView

VERIFIER = "mlgate-verify-model"
KSERVE_DOWNLOADER = "storage-initializer"
# Fields the apiserver defaults in a container: not compared when checking a verifier.
_DEFAULTED = frozenset({"imagePullPolicy", "terminationMessagePath", "terminationMessagePolicy"})
# Pod Security Standards "restricted", so the verifier never makes a pod inadmissible.
_HARDENED = {
    "seccompProfile": {"type": "RuntimeDefault"},
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


@dataclass(frozen=True, slots=True)
class Initializer:
    """A download that runs in pods of its own (a role of the workload), for consumer roles
    that start once it completed: the verifier runs in each consumer pod."""

    role: str
    container: str
    uri_env: str
    path: str
    consumers: tuple[str, ...]


INITIALIZERS = (
    # Kubeflow Trainer v2 runtimes (JobSet): model-initializer -> /workspace/model -> node.
    Initializer("model-initializer", "model-initializer", "STORAGE_URI", "/workspace/model",
                ("node",)),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Download:
    index: int  # the init container the verifier follows (-1: it goes first)
    container: str  # the downloader, for messages
    uri: str | None  # None: mlgate cannot tell which model it fetches
    path: str
    source: Mapping[str, Any]  # the container whose mounts of `path` the verifier copies
    local: bool = True  # downloaded in this pod (else by an Initializer, before it started)


@dataclass(frozen=True, slots=True)
class PodPlan:
    path: str  # field path of the pod's initContainers
    current: tuple[Mapping[str, Any], ...]
    desired: tuple[dict[str, Any], ...]
    policies: tuple[str, ...]
    exists: bool = True  # whether the pod spec has an initContainers list yet

    @property
    def changed(self) -> bool:
        return len(self.current) != len(self.desired) or not all(
            _same(a, d) for a, d in zip(self.current, self.desired, strict=True)
        )


@dataclass(frozen=True, slots=True)
class Plan:
    pods: tuple[PodPlan, ...]
    findings: tuple[tuple[str, Finding], ...]  # (policy name, finding)


def verifying(
    policies: tuple[CompiledPolicy, ...], view: WorkloadView, facts: Facts
) -> tuple[CompiledPolicy, ...]:
    """The Enforce policies governing `view` that verify downloaded models."""
    governed = governing(policies, view.namespace, facts.namespace_labels, view.kind, view.labels)
    return tuple(
        p
        for p in governed
        if p.mode is Mode.ENFORCE and p.models is not None and p.models.verify_loaded is not None
    )


def _downloads(
    pod: PodView, named: Mapping[str, str], declared: tuple[str, ...]
) -> Iterator[Download]:
    """The downloads of a pod: KServe's args pairs, and the policy-named init containers (which
    fetch what the workload declares)."""
    for i, raw in enumerate(_list(pod.spec.get("initContainers"))):
        name = _map(raw).get("name")
        if name == KSERVE_DOWNLOADER:
            args = [a for a in _list(_map(raw).get("args")) if isinstance(a, str)]
            if len(args) < 2 or len(args) % 2:
                yield Download(i, name, None, "/mnt/models", _map(raw))
                continue
            for uri, path in zip(args[::2], args[1::2], strict=True):
                yield Download(i, name, uri, path, _map(raw))
        elif isinstance(name, str) and name in named:
            targets: tuple[str | None, ...] = declared or (None,)
            for target in targets:
                yield Download(i, name, target, named[name], _map(raw))


def _initialized(view: WorkloadView, pod: PodView) -> Iterator[Download]:
    """Downloads an Initializer role of the workload made before `pod` (a consumer) starts."""
    last = len(_list(pod.spec.get("initContainers"))) - 1
    for init in INITIALIZERS:
        if pod.role not in init.consumers:
            continue
        for other in view.pods:
            if other.role != init.role:
                continue
            for c in other.containers:
                if c.name == init.container:
                    uri = next((e.value for e in c.env if e.name == init.uri_env), None)
                    source = next(
                        (
                            _map(k)
                            for k in _list(pod.spec.get("containers"))
                            if _mounts(_map(k), init.path)
                        ),
                        {},
                    )
                    yield Download(last, init.container, uri, init.path, source, local=False)


def _declared(policy: CompiledPolicy, view: WorkloadView) -> tuple[str, ...]:
    rules = policy.models
    assert rules is not None
    return tuple(
        sorted({ref.value.strip() for ref, _ in references(rules, view) if "://" in ref.value})
    )


def _digests(
    uri: str, policies: Sequence[CompiledPolicy], facts: Facts, namespace: str, now: datetime
) -> tuple[set[str], str | None]:
    """The digests every verifying policy accepts for `uri`, or why there are none."""
    accepted: set[str] | None = None
    for policy in policies:
        assert policy.models is not None
        counting = counting_approvals(uri, facts.approvals, policy.models, namespace, now)
        digests = {a.digest for a in counting if a.digest}
        if not counting:
            return set(), f"no ApprovedModel that {policy.name} accepts approves {uri!r}"
        if not digests:
            names = ", ".join(a.name for a in counting)
            return set(), (
                f"approval {names} of {uri!r} records no digest, so the files cannot be verified "
                "where they are loaded; re-approve it with `mlgate approve-model`"
            )
        accepted = digests if accepted is None else accepted & digests
    if not accepted:
        return set(), f"the verifying policies accept no common digest for {uri!r}"
    return accepted, None


def _mounts(container: Mapping[str, Any], path: str) -> list[Mapping[str, Any]]:
    """The container's volume mounts at, above or below `path`: what holds the model."""
    found = []
    for mount in _list(container.get("volumeMounts")):
        at = str(_map(mount).get("mountPath", "")).rstrip("/")
        if at and (
            path == at or path.startswith(at + "/") or at.startswith(path.rstrip("/") + "/")
        ):
            found.append(_map(mount))
    return found


def verifier(
    name: str, image: str, digests: set[str], path: str, downloader: Mapping[str, Any]
) -> dict[str, Any]:
    """The verifier init container: the downloader's mounts of the model, read-only."""
    mounts = [
        {k: v for k, v in {**m, "readOnly": True}.items() if k != "mountPropagation"}
        for m in _mounts(downloader, path)
    ]
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": ["mlgate"],
        "args": ["verify-model", *(f"--digest={d}" for d in sorted(digests)), path],
        "volumeMounts": mounts,
        "securityContext": dict(_HARDENED),
        "imagePullPolicy": "IfNotPresent",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources = downloader.get("resources")
    if isinstance(resources, Mapping) and resources:
        container["resources"] = dict(resources)  # it fits whatever quota the download fits
    return container


def _same(actual: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Equal but for what the apiserver defaults (and the verifier's resources, which only
    size it): a reinvocation then finds nothing to change."""

    def strip(c: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in c.items() if k not in _DEFAULTED and k != "resources"}

    return strip(actual) == strip(desired)


def _is_verifier(container: Any) -> bool:
    return str(_map(container).get("name", "")).startswith(VERIFIER)


def _writers(pod: PodView, download: Download) -> Iterator[tuple[str, str]]:
    """(field path, problem) for what could change the model after it is verified."""
    base = f"{pod.path}.initContainers[{download.index}]"
    if download.source.get("restartPolicy") == "Always":
        yield base, f"{download.container} keeps running after the download (restartPolicy: Always)"
    volumes = {m.get("name") for m in _mounts(download.source, download.path)}
    for i, volume in enumerate(_list(pod.spec.get("volumes"))):
        v = _map(volume)
        if v.get("name") in volumes and "emptyDir" not in v:
            yield f"{pod.path}.volumes[{i}]", f"model volume {v.get('name')} is not an emptyDir"
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for i, other in enumerate(_list(pod.spec.get(key))):
            if (key == "initContainers" and i == download.index) or _is_verifier(other):
                continue
            for j, mount in enumerate(_list(_map(other).get("volumeMounts"))):
                m = _map(mount)
                if m.get("name") in volumes and m.get("readOnly") is not True:
                    yield (
                        f"{pod.path}.{key}[{i}].volumeMounts[{j}]",
                        f"{_map(other).get('name')} mounts model volume {m.get('name')} writable",
                    )


def _accepted(
    download: Download,
    policies: tuple[CompiledPolicy, ...],
    facts: Facts,
    namespace: str,
    image: str | None,
) -> tuple[set[str], str | None]:
    """The digests the verifier of `download` accepts, or why it cannot be verified."""
    if download.uri is None:
        return set(), (
            f"{download.container} downloads a model mlgate cannot name, so it cannot be "
            "verified; declare its URI (annotation mlgate.io/model-uri)"
        )
    digests, problem = _digests(download.uri, policies, facts, namespace, facts.now)
    if problem is None and image is None:
        problem = (
            "mlgate runs without a verifier image (mlgate run --verifier-image), so downloaded "
            "models cannot be verified"
        )
    return digests, problem


def _pod_plan(
    pod: PodView,
    view: WorkloadView,
    policies: tuple[CompiledPolicy, ...],
    facts: Facts,
    image: str | None,
) -> tuple[PodPlan | None, list[tuple[str, Finding]]]:
    named = {
        container: path
        for p in policies
        if p.models is not None and p.models.verify_loaded is not None
        for container, path in p.models.verify_loaded
    }
    declared = tuple(sorted({u for p in policies for u in _declared(p, view)}))
    downloads = [*_downloads(pod, named, declared), *_initialized(view, pod)]
    if not downloads:
        return None, []
    current = tuple(_map(c) for c in _list(pod.spec.get("initContainers")))
    names = tuple(p.name for p in policies)
    findings: list[Finding] = []
    inserts: dict[int, list[dict[str, Any]]] = {}
    for n, download in enumerate(downloads):
        at = f"{pod.path}.initContainers[{download.index}]" if download.local else pod.path
        if download.local:
            findings.extend(
                Finding(Rule.MODELS_VERIFIER, path, f"{problem}: the model could change after "
                        "mlgate verifies it; mount it read-only everywhere but in the download")
                for path, problem in _writers(pod, download)
            )  # fmt: skip
        digests, problem = _accepted(download, policies, facts, view.namespace, image)
        if problem is not None or image is None:
            findings.append(Finding(Rule.MODELS_VERIFIER, at, problem or ""))
            continue
        name = VERIFIER if n == 0 else f"{VERIFIER}-{n + 1}"
        inserts.setdefault(download.index, []).append(
            verifier(name, image, digests, download.path, download.source)
        )
    attributed = [(p, f) for p in names for f in findings]
    if findings:
        return None, attributed
    desired: list[dict[str, Any]] = list(inserts.get(-1, []))
    for i, container in enumerate(current):
        if not _is_verifier(container):
            desired.append(dict(container))
        desired.extend(inserts.get(i, []))
    exists = isinstance(pod.spec.get("initContainers"), list)
    return PodPlan(f"{pod.path}.initContainers", current, tuple(desired), names, exists), []


_WATCHED = ("initContainers", "containers", "ephemeralContainers", "volumes")


def _kept(pod: PodView, before: WorkloadView | None) -> bool:
    """Whether an UPDATE leaves what the verification depends on as it was: judged then."""
    old = next((p for p in before.pods if p.path == pod.path), None) if before else None
    return old is not None and all(old.spec.get(k) == pod.spec.get(k) for k in _WATCHED)


def plan(
    policies: tuple[CompiledPolicy, ...],
    view: WorkloadView,
    facts: Facts,
    image: str | None,
    before: WorkloadView | None = None,
) -> Plan:
    """Which pods of `view` need a verifier (and their initContainers with it), and the problems
    that make verification impossible. Pods an UPDATE keeps (`before`) are left alone."""
    owners = verifying(policies, view, facts)
    if not owners:
        return Plan((), ())
    pods: list[PodPlan] = []
    findings: list[tuple[str, Finding]] = []
    for pod in view.pods:
        if _kept(pod, before):
            continue
        pod_plan, problems = _pod_plan(pod, view, owners, facts, image)
        findings.extend(problems)
        if pod_plan is not None and pod_plan.changed:
            pods.append(pod_plan)
    return Plan(tuple(pods), tuple(findings))


def unverified(
    policies: tuple[CompiledPolicy, ...],
    view: WorkloadView,
    facts: Facts,
    image: str | None,
    before: WorkloadView | None = None,
) -> list[Violation]:
    """At validation, after the mutating webhook: downloads that are not (or cannot be)
    verified."""
    result = plan(policies, view, facts, image, before)
    violations = [v for name, f in result.findings for v in attribute(name, Mode.ENFORCE, [f])]
    for pod in result.pods:
        finding = Finding(
            Rule.MODELS_VERIFIER,
            pod.path,
            "the downloaded model is not verified: mlgate's mutating webhook inserts "
            f"{VERIFIER} after the download (routed within seconds of a verifying policy "
            "coming into force: retry); check that its MutatingWebhookConfiguration is "
            f"installed, and do not add, change or move containers named {VERIFIER}*",
        )
        violations.extend(
            v for name in pod.policies for v in attribute(name, Mode.ENFORCE, [finding])
        )
    return violations
