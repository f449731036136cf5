"""Egress side doors: pod settings that leave the pod's network namespace, and so every
NetworkPolicy, or add a network no NetworkPolicy governs.

One table: each side door, the rule that reports it, and the policy field (`spec.egress.allow...`)
that permits it. Every entry is denied by default under an egress policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from mlgate.engine.decisions import Finding, Rule
from mlgate.engine.kindspec import field
from mlgate.engine.policy import EgressRules
from mlgate.engine.reads import is_map
from mlgate.engine.workloads import ContainerKind, PodView, WorkloadView, metadata_path

# Capabilities that reconfigure or bypass the pod's network namespace (NET_ADMIN: routes,
# interfaces, iptables; NET_RAW: raw packets; SYS_ADMIN: setns into other namespaces, mounts).
NETWORK_CAPABILITIES = frozenset({"NET_ADMIN", "NET_RAW", "SYS_ADMIN", "ALL"})
# Multus: extra interfaces on networks NetworkPolicies do not cover, or a replaced default one.
SECONDARY_NETWORK_ANNOTATIONS = ("k8s.v1.cni.cncf.io/networks", "v1.multus-cni.io/default-network")

Found = Iterator[tuple[str, str]]  # (field path, what was found)


def _host_flag(key: str) -> Callable[[PodView], Found]:
    def find(pod: PodView) -> Found:
        if pod.spec.get(key) is True:
            yield f"{pod.path}.{key}", f"{key}: true"

    return find


def _containers(pod: PodView) -> Iterator[tuple[str, Mapping[str, object]]]:
    """(path, securityContext) of each container that sets one: most set none, and their
    paths are then never built."""
    for c in pod.containers:
        if c.security_context and c.kind is not ContainerKind.IMAGE_VOLUME:
            yield f"{c.path}.securityContext", c.security_context


def _privileged(pod: PodView) -> Found:
    pod_windows = pod.spec.get("securityContext")
    if is_map(pod_windows) and _host_process(pod_windows):
        yield f"{pod.path}.securityContext.windowsOptions.hostProcess", "a Windows HostProcess pod"
    for path, context in _containers(pod):
        if context.get("privileged") is True:
            yield f"{path}.privileged", "privileged: true"
        if _host_process(context):
            yield f"{path}.windowsOptions.hostProcess", "a Windows HostProcess container"


def _host_process(context: Mapping[str, object]) -> bool:
    windows = context.get("windowsOptions")
    return is_map(windows) and windows.get("hostProcess") is True


def _capability(name: object) -> str:
    # Container runtimes accept `net_admin` and `CAP_NET_ADMIN` for NET_ADMIN.
    text = str(name).strip().upper()
    return text.removeprefix("CAP_")


def _capabilities(pod: PodView) -> Found:
    for path, context in _containers(pod):
        capabilities = context.get("capabilities")
        added = capabilities.get("add") if is_map(capabilities) else None
        for i, name in enumerate(added if isinstance(added, list) else ()):
            if _capability(name) in NETWORK_CAPABILITIES:
                yield f"{path}.capabilities.add[{i}]", f"capability {name}"


def _secondary_networks(pod: PodView) -> Found:
    for key in SECONDARY_NETWORK_ANNOTATIONS:
        if pod.annotations.get(key, "").strip():
            yield field(f"{metadata_path(pod)}.annotations", key), f"annotation {key}"


@dataclass(frozen=True, slots=True)
class SideDoor:
    rule: Rule
    setting: str  # the policy field that allows it, under spec.egress
    allowed: Callable[[EgressRules], bool]
    find: Callable[[PodView], Found]
    why: str


SIDE_DOORS: tuple[SideDoor, ...] = (
    SideDoor(
        Rule.EGRESS_HOST_NETWORK, "allowHostNetwork", lambda r: r.allow_host_network,
        _host_flag("hostNetwork"),
        "puts the pod on the node's network, outside every NetworkPolicy",
    ),
    SideDoor(
        Rule.EGRESS_HOST_PID, "allowHostPID", lambda r: r.allow_host_pid, _host_flag("hostPID"),
        "shares the node's processes, whose network namespaces the pod can then enter",
    ),
    SideDoor(
        Rule.EGRESS_HOST_IPC, "allowHostIPC", lambda r: r.allow_host_ipc, _host_flag("hostIPC"),
        "shares the node's IPC namespace, a channel to host processes no NetworkPolicy sees",
    ),
    SideDoor(
        Rule.EGRESS_PRIVILEGED, "allowPrivileged", lambda r: r.allow_privileged, _privileged,
        "gives the container the node's devices and namespaces, outside every NetworkPolicy",
    ),
    SideDoor(
        Rule.EGRESS_CAPABILITIES, "allowNetworkCapabilities",
        lambda r: r.allow_network_capabilities, _capabilities,
        "lets the container reconfigure or leave the pod's network namespace",
    ),
    SideDoor(
        Rule.EGRESS_SECONDARY_NETWORK, "allowSecondaryNetworks",
        lambda r: r.allow_secondary_networks, _secondary_networks,
        "attaches the pod to a network (Multus) that NetworkPolicies do not govern",
    ),
)  # fmt: skip


def check(rules: EgressRules, view: WorkloadView) -> list[Finding]:
    """Every side door of every pod the policy does not explicitly allow."""
    return [
        Finding(
            door.rule,
            path,
            f"{what} {door.why}; remove it (or a policy may set egress.{door.setting}: true)",
        )
        for door in SIDE_DOORS
        if not door.allowed(rules)
        for pod in view.pods
        for path, what in door.find(pod)
    ]
