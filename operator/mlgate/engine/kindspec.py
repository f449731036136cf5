"""Declarative workload kinds: where a kind keeps its pods, how many each yields, its models.

A kind is described as data (a `Layout`), not code, so that the built-in table and the
`WorkloadKind` resources a platform team writes are read by the same interpreter:

- field paths name places in an object, with wildcards over list items (`spec.tasks[*].template`)
  and mapping keys (`spec.pytorchReplicaSpecs.*.template`); keys that are not plain are quoted,
  `metadata.annotations["autoscaling.knative.dev/max-scale"]`;
- a `Location` says what is found there (a PodTemplateSpec, a pod spec, or a Kubernetes object of
  another kind embedded whole), which further fields are containers, and how many pods it yields:
  a product of `Count`s. A wildcard in a count's path takes the item or key the location's path
  matched at the same position, so `spec.tasks[*].replicas` is the replicas of that very task.

This module resolves paths and counts; `workloads` turns what it finds into views. It also
finds whether an object of a kind nobody described would run containers (`may_run`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from enum import StrEnum
from typing import Any, cast

import yaml

from mlgate.engine.memo import text_cache
from mlgate.engine.reads import is_map, mappings_under

# KubeRay's CRD defaults maxReplicas to MaxInt32, so an autoscaled group without an explicit
# ceiling is unbounded in the cluster; every "no limit" is counted as this many pods.
UNBOUNDED = 2**31 - 1


class InvalidPath(ValueError):
    """A field path that does not parse; the message says where."""


class Wildcard(StrEnum):
    ITEM = "[*]"  # every item of a list
    KEY = "*"  # every entry of a mapping


Segment = str | Wildcard
Bound = str | int  # what a wildcard matched: a mapping key or a list index


# ---------------------------------------------------------------------------------------------
# Paths

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Keys are remembered up to this length (Kubernetes names and field names are far shorter);
# a longer one, which only an odd or hostile object has, is matched every time.
_MAX_CACHED_KEY = 256
_TOKEN = re.compile(
    r'\.?(?P<key>[A-Za-z0-9_-]+)|\.(?P<any_key>\*)|(?P<any_item>\[\*\])|\[(?P<quoted>"(?:[^"\\]|\\.)*")\]'
)


def field(path: str, key: str) -> str:
    """The path of `key` under `path`: dotted when plain, bracket-quoted otherwise.

    Quoting keeps paths unambiguous (`metadata.annotations["mlgate.io/model"]`) and stops a
    crafted key (a role named `Worker.template`, a newline) from forging or garbling a path
    shown to users.
    """
    if _plain(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


@text_cache(maxsize=4096, max_length=_MAX_CACHED_KEY)
def _plain(key: str) -> bool:
    # The same few keys (spec, template, containers) are placed on every admission.
    return _PLAIN_KEY.fullmatch(key) is not None


@dataclass(frozen=True, slots=True)
class FieldPath:
    text: str
    segments: tuple[Segment, ...]

    @property
    def wildcards(self) -> int:
        return sum(isinstance(s, Wildcard) for s in self.segments)

    def __str__(self) -> str:
        return self.text


def parse_path(text: str) -> FieldPath:
    """`spec.tasks[*].template`, `spec.replicaSpecs.*.template`, `metadata.annotations["a/b"]`.

    The empty path is the object (or, relative to a location, the location) itself.
    """
    segments: list[Segment] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if (
            m is None
            or (pos == 0 and text.startswith("."))
            or (pos > 0 and m.group("key") and text[pos] != ".")
        ):
            raise InvalidPath(f"{text!r}: cannot read the path at character {pos + 1}")
        if m.group("key"):
            segments.append(m.group("key"))
        elif m.group("any_key"):
            segments.append(Wildcard.KEY)
        elif m.group("any_item"):
            segments.append(Wildcard.ITEM)
        else:
            segments.append(str(json.loads(m.group("quoted"))))
        pos = m.end()
    return FieldPath(text, tuple(segments))


@dataclass(frozen=True, slots=True)
class Found:
    """A value at a path: the concrete path text and what each wildcard matched."""

    path: str
    value: Any
    bound: tuple[Bound, ...]


def resolve(
    node: Any, path: FieldPath, base: str = "", bound: Sequence[Bound] = ()
) -> Iterator[Found]:
    """Every value `path` reaches from `node`. Wildcards take the values in `bound` first (in
    order), then range over whatever is there. Absent fields and wrong types yield nothing."""
    yield from _walk(node, path.segments, base, tuple(bound), ())


def _walk(
    node: Any,
    rest: tuple[Segment, ...],
    text: str,
    given: tuple[Bound, ...],
    bound: tuple[Bound, ...],
) -> Iterator[Found]:
    # Plain keys are followed in a loop, not a generator each: most paths have no wildcard.
    while rest and not isinstance(rest[0], Wildcard):
        head = rest[0]
        if not is_map(node) or head not in node:
            return
        node, text, rest = node[head], field(text, head), rest[1:]
    if not rest:
        yield Found(text, node, bound)
        return
    wildcard, tail = cast(Wildcard, rest[0]), rest[1:]  # the loop stops only at a wildcard
    choice = given[0] if given else None
    for step, item in _steps(node, wildcard, choice):
        step_text = f"{text}[{step}]" if isinstance(step, int) else field(text, step)
        yield from _walk(item, tail, step_text, given[1:], (*bound, step))


def _steps(node: Any, head: Wildcard, choice: Bound | None) -> Iterator[tuple[Bound, Any]]:
    """The items (index, value) or entries (key, value) a wildcard ranges over; only `choice`
    when it is bound."""
    if head is Wildcard.ITEM and isinstance(node, list | tuple):
        for i, item in enumerate(node):
            if choice is None or choice == i:
                yield i, item
    elif head is Wildcard.KEY and is_map(node):
        for key, item in node.items():
            name = str(key)  # YAML may key an entry by a number; the apiserver stringifies it
            if choice is None or choice == name:
                yield name, item


def first(node: Any, path: FieldPath, bound: Sequence[Bound] = ()) -> Any:
    """The first value at `path` (wildcards bound as in `resolve`), or None."""
    for found in _walk(node, path.segments, "", tuple(bound), ()):
        return found.value
    return None


# ---------------------------------------------------------------------------------------------
# Numbers


def amount(value: Any) -> int | None:
    """A replica-like number, or None when the field is absent.

    The apiserver rejects `replicas: "100"` for built-in kinds, but a CRD without a validating
    schema lets it through and its operator may still parse it, so an attacker could hope the
    string dodges the per-workload GPU limit. Numeric strings and floats therefore count as the
    number they spell (rounded up); anything else present but unreadable (negative, boolean, NaN,
    a list) counts as 1, so garbage never crashes and never zeroes a count.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = _number(value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return value if value >= 0 else 1
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return math.ceil(value)
    return 1


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def enabled(value: Any) -> bool:
    """A boolean switch read conservatively: only an explicit false-ish value turns it off."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0")
    return value is not None and value is not False and value != 0


# ---------------------------------------------------------------------------------------------
# The description


class Shape(StrEnum):
    POD_TEMPLATE = "PodTemplate"  # metadata (annotations) and spec, a pod spec
    POD_SPEC = "PodSpec"  # a pod spec, or any object whose containers are listed
    OBJECT = "Object"  # a whole Kubernetes object of another kind, judged by its own layout


@dataclass(frozen=True, slots=True)
class Count:
    """One factor of a location's pod count: the largest number found at `paths`, else
    `default` (None: unbounded).

    `ceiling` is an autoscaler's upper bound (the largest of its paths): while it applies (always,
    or while `autoscaled` is switched on) the factor is at least the ceiling, and unbounded when
    no ceiling is set; with `zero_unset` a ceiling of 0 means unset (Knative's max-scale,
    KServe's maxReplicas).
    `less_one_with`: one pod fewer (of at least one) when that field is set, as when a
    LeaderWorkerSet's leader template takes one pod of each group. `unbounded_unless`: no limit
    unless that field holds one of `bounded_by` (a CronJob whose runs may overlap).
    """

    paths: tuple[FieldPath, ...] = ()
    default: int | None = 1
    ceiling: tuple[FieldPath, ...] = ()
    autoscaled: FieldPath | None = None
    zero_unset: bool = False
    less_one_with: FieldPath | None = None
    unbounded_unless: FieldPath | None = None
    bounded_by: tuple[str, ...] = ()

    def value(self, obj: Mapping[str, Any], bound: Sequence[Bound]) -> int:
        found = _amounts(obj, self.paths, bound)
        base = max(found) if found else (UNBOUNDED if self.default is None else self.default)
        if self.ceiling and (
            self.autoscaled is None or enabled(first(obj, self.autoscaled, bound))
        ):
            tops = [t for t in _amounts(obj, self.ceiling, bound) if t or not self.zero_unset]
            base = max(max(found, default=0), max(tops, default=UNBOUNDED))
        if self.less_one_with is not None and first(obj, self.less_one_with, bound) is not None:
            base = max(1, base) - 1
        unless = self.unbounded_unless
        if unless is not None and first(obj, unless, bound) not in self.bounded_by:
            return UNBOUNDED
        return base


def _amounts(
    obj: Mapping[str, Any], paths: Sequence[FieldPath], bound: Sequence[Bound]
) -> list[int]:
    return [a for p in paths if (a := amount(first(obj, p, bound))) is not None]


class ContainerRole(StrEnum):
    APP = "container"
    INIT = "initContainer"
    SIDECAR = "sidecar"


@dataclass(frozen=True, slots=True)
class ContainerField:
    """A container-shaped field, relative to its location's pod spec (empty: the spec itself).

    Operators name the same things differently: `resources` is where its Kubernetes resource
    requirements are (TrainJob's `resourcesPerNode`); `image_default` an absolute path whose
    image it runs when it names none (Spark's `spec.image`); `gpus` a relative path to a plain
    accelerator count, of the resource named at `gpu_resource` (else `gpu_resource_default`);
    without one, `gpus_per_instance` gives the count for the instance type at the absolute path
    `instance_type` (Kaito requests every GPU of the node type it provisions).
    """

    path: FieldPath
    role: ContainerRole = ContainerRole.APP
    name: str = ""
    resources: str = "resources"
    image_default: FieldPath | None = None
    gpus: FieldPath | None = None
    gpu_resource: FieldPath | None = None
    gpu_resource_default: str = "nvidia.com/gpu"
    instance_type: FieldPath | None = None
    gpus_per_instance: Mapping[str, int] = dataclass_field(default_factory=dict)

    def gpu_request(
        self, obj: Mapping[str, Any], node: Mapping[str, Any], bound: Sequence[Bound]
    ) -> tuple[str, Any] | None:
        """(resource name, count) this container asks for outside a `resources` mapping."""
        count = first(node, self.gpus) if self.gpus is not None else None
        if count is None and self.instance_type is not None:
            count = self.gpus_per_instance.get(str(first(obj, self.instance_type, bound)))
        if count is None:
            return None
        name = first(node, self.gpu_resource) if self.gpu_resource is not None else None
        return (name if isinstance(name, str) and name else self.gpu_resource_default), count


@dataclass(frozen=True, slots=True)
class Location:
    shape: Shape
    path: FieldPath
    replicas: tuple[Count, ...] = ()  # a product; empty: one pod
    role: str = ""  # empty: the key a mapping wildcard matched, if any
    role_path: FieldPath | None = None  # e.g. spec.tasks[*].name
    containers: tuple[ContainerField, ...] = ()  # besides containers/initContainers/...
    annotations: FieldPath | None = None  # the pod's annotations, where not in a PodTemplate
    # Pod spec patches given as text (Argo's podSpecPatch), merged into the pod as its operator
    # merges them: containers by name, other fields replaced.
    patches: tuple[FieldPath, ...] = ()
    exclude: tuple[str, ...] = ()  # mapping keys a wildcard skips (another location has them)


@dataclass(frozen=True, slots=True)
class ModelField:
    path: FieldPath
    prefix: str = ""  # put before a value that is not a URI, e.g. hf:// for a Hugging Face id


@dataclass(frozen=True, slots=True)
class Layout:
    locations: tuple[Location, ...] = ()
    models: tuple[ModelField, ...] = ()


# ---------------------------------------------------------------------------------------------
# The interpreter


@dataclass(frozen=True, slots=True)
class Placed:
    """A location's match in one object: where, what, how many pods, in which role."""

    location: Location
    path: str
    node: Any
    count: int
    role: str
    bound: tuple[Bound, ...]


def _role(location: Location, obj: Mapping[str, Any], bound: tuple[Bound, ...]) -> str:
    if location.role_path is not None:
        name = first(obj, location.role_path, bound)
        if isinstance(name, str) and name:
            return name
    if location.role:
        return location.role
    keys = [b for b in bound if isinstance(b, str)]
    return keys[-1] if keys else ""


def place(obj: Mapping[str, Any], layout: Layout) -> Iterator[Placed]:
    for location in layout.locations:
        for found in resolve(obj, location.path):
            if location.exclude and any(
                b in location.exclude for b in found.bound if isinstance(b, str)
            ):
                continue
            count = math.prod(c.value(obj, found.bound) for c in location.replicas)
            yield Placed(
                location,
                found.path,
                found.value,
                min(count, UNBOUNDED),
                _role(location, obj, found.bound),
                found.bound,
            )


def models(obj: Mapping[str, Any], layout: Layout) -> Iterator[tuple[str, str]]:
    """(reference, path) for every string at the layout's model fields."""
    for model in layout.models:
        for found in resolve(obj, model.path):
            values = found.value if isinstance(found.value, list) else [found.value]
            for i, value in enumerate(values):
                if isinstance(value, str) and value:
                    path = f"{found.path}[{i}]" if isinstance(found.value, list) else found.path
                    yield (value if "://" in value else model.prefix + value), path


def pod_patch(text: Any) -> Mapping[str, Any] | None:
    """A pod spec patch written as JSON or YAML text; None when it is not a readable mapping
    (a parameterised patch, `{{inputs.parameters.patch}}`, is unreadable until it runs)."""
    if not isinstance(text, str):
        return None
    if not text.strip():
        return {}
    try:
        patch = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return patch if is_map(patch) else None


def image_text(value: Any) -> str | None:
    """An image given as a string, or as a mapping of its parts ({registry, name|repository,
    tag, digest}) as some operators spell it."""
    if isinstance(value, str):
        return value
    if not is_map(value):
        return None
    parts = {k: v for k, v in value.items() if isinstance(v, str) and v}
    repository = parts.get("repository") or parts.get("name")
    if repository is None:
        return None
    text = f"{parts['registry'].rstrip('/')}/{repository}" if "registry" in parts else repository
    if "tag" in parts:
        text += f":{parts['tag']}"
    if "digest" in parts:
        text += f"@{parts['digest']}"
    return text


# ---------------------------------------------------------------------------------------------
# Unknown kinds

_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
# Kinds that hold pod specs or image names without running them.
INERT_KINDS = frozenset(
    {
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "PodTemplate"),
        ("apps", "ControllerRevision"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
    }
)
# Not what the object asks to run: the apiserver's and controllers' bookkeeping.
_NOT_DESIRED = frozenset({"metadata", "status"})


def _names_image(key: Any, value: Any) -> bool:
    """`image: ...` (a string, or a mapping of its parts) or `<something>Image: "..."`."""
    if key == "image":
        return image_text(value) is not None
    return isinstance(key, str) and key.endswith("Image") and isinstance(value, str)


def may_run(obj: Any) -> bool:
    """Whether an object of a kind mlgate cannot judge would run containers (inert kinds, which
    only hold pod specs or image names, never do)."""
    if not is_map(obj):
        return False
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    group = api_version.rpartition("/")[0] if isinstance(api_version, str) else ""
    inert = isinstance(kind, str) and (group, kind) in INERT_KINDS
    return not inert and runs_containers(obj)


def runs_containers(obj: Any) -> bool:
    """Whether an object would run something: anywhere outside metadata and status, a container
    list, or an image (Argo's `container`, Tekton's `steps`, Kaito's top-level `inference`,
    images spelled as {registry, name}).

    The walk (reads.mappings_under) has no depth limit an attacker could nest below and
    cannot loop on a recursive YAML alias.
    """
    if not is_map(obj):
        return False
    return any(
        any(_names_image(k, v) for k, v in item.items())
        or any(isinstance(item.get(key), list) for key in _CONTAINER_LISTS)
        for item in mappings_under([v for k, v in obj.items() if k not in _NOT_DESIRED])
    )
