"""A cluster's wanted size, its **target**, and its wire form.

The scheduler plugin stores targets and every client of the cluster reads
them, so the form is versioned and checked on both sides: the plugin
refuses a malformed one when it is set, and a client that cannot read one
(a newer client wrote it) leaves the jobs alone instead of failing its
renewals. Imported by the scheduler plugin: nothing here needs more than
the standard library.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

# Seconds between adapt()'s looks, at least: each is a schedd query, and a
# target with interval 0 would poll the schedd in a tight loop.
MIN_ADAPT_INTERVAL = 1.0
# The wire form's version; the scheduler plugin refuses others, and a client
# that reads a target it does not know leaves the jobs as they are.
TARGET_VERSION = 1
# The group of a scale()/adapt() without worker_group: the cluster's own workers.
DEFAULT_GROUP = "default"
# Worker group names: in ClassAd strings, dask resource tags and pod names.
GROUP_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")
# Largest group description the plugin keeps (JSON bytes): the settings a
# group overrides, nothing near this.
GROUP_SPEC_LIMIT = 16384


class TargetFormatError(ValueError):
    """A target in a form this client cannot read (a newer client, a bad writer)."""


@dataclass(frozen=True)
class ScaleTarget:
    """Hold the cluster at ``n`` worker jobs (idle, running or held).

    ``cap`` is the setter's ``max-jobs``: carried with the target, so that a
    client with a lower cap of its own applies it unchanged.
    """

    n: int
    cap: int
    kind: str = "scale"


@dataclass(frozen=True)
class AdaptTarget:
    """Follow the scheduler's load between ``minimum`` and ``maximum`` jobs."""

    minimum: int
    maximum: int
    interval: float
    wait_count: int
    target_duration: float
    kind: str = "adapt"


Target = ScaleTarget | AdaptTarget
# Fields of each kind on the wire, with the types they must have.
_WIRE_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "scale": {"n": (int,), "cap": (int,)},
    "adapt": {
        "minimum": (int,), "maximum": (int,), "interval": (int, float),
        "wait_count": (int,), "target_duration": (int, float),
    },
}  # fmt: skip


def target_to_wire(target: Target | None) -> dict[str, Any] | None:
    return None if target is None else {**asdict(target), "version": TARGET_VERSION}


def check_wire_target(wire: object) -> dict[str, Any] | None:
    """``wire`` if it is a well-formed target (or None); raises ``TargetFormatError``.

    Used where targets are stored (the scheduler plugin) and where they are
    read, so neither a newer client nor any holder of the cluster's TLS key
    can make the appliers stop.
    """
    if wire is None:
        return None
    if not isinstance(wire, dict):
        raise TargetFormatError(f"a target is a mapping, got {wire!r}")
    if "version" not in wire and wire.get("kind") == "scale" and "cap" not in wire:
        # The form of htcdaskgateway 2026.12.0 and before (no version, no
        # cap): a client of that release still scales a newer scheduler.
        wire = {**wire, "cap": wire.get("n"), "version": TARGET_VERSION}
    elif "version" not in wire and wire.get("kind") == "adapt":
        wire = {**wire, "version": TARGET_VERSION}
    if wire.get("version") != TARGET_VERSION:
        raise TargetFormatError(
            f"target version {wire.get('version')!r}; this htcdaskgateway reads {TARGET_VERSION}"
        )
    fields = _WIRE_FIELDS.get(wire.get("kind"))  # type: ignore[arg-type]
    if fields is None:
        raise TargetFormatError(f"unknown target kind {wire.get('kind')!r}")
    given = set(wire) - {"kind", "version"}
    if given != set(fields):
        raise TargetFormatError(f"a {wire['kind']} target has the fields {sorted(fields)}, "
                                f"got {sorted(given)}")  # fmt: skip
    for name, types in fields.items():
        value = wire[name]
        if isinstance(value, bool) or not isinstance(value, types) or value < 0:
            raise TargetFormatError(f"target field {name} must be a number >= 0, got {value!r}")
    if wire["kind"] == "scale" and not 0 <= wire["n"] <= wire["cap"]:
        raise TargetFormatError(f"a scale target needs 0 <= n <= cap, got {wire}")
    if wire["kind"] == "adapt" and (
        wire["minimum"] > wire["maximum"]
        or wire["wait_count"] < 1
        or wire["interval"] < MIN_ADAPT_INTERVAL
        or wire["target_duration"] <= 0
    ):
        raise TargetFormatError(f"an adapt target needs minimum <= maximum, wait_count >= 1, "
                                f"interval >= {MIN_ADAPT_INTERVAL:g} s and target_duration > 0, "
                                f"got {wire}")  # fmt: skip
    return wire


def target_from_wire(wire: object) -> Target | None:
    """The target a wire form holds; raises ``TargetFormatError`` if it is not one."""
    checked = check_wire_target(wire)
    if checked is None:
        return None
    fields = {k: v for k, v in checked.items() if k not in ("kind", "version")}
    return ScaleTarget(**fields) if checked["kind"] == "scale" else AdaptTarget(**fields)


def check_wire_group(name: object) -> str:
    """A worker group's name as the plugin stores it; raises ``TargetFormatError``."""
    if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
        raise TargetFormatError(
            f"not a worker group name: {name!r} (lowercase letters, digits and '-', at most 32)"
        )
    return name


def check_wire_group_spec(spec: object) -> dict[str, Any]:
    """A worker group's description, ``{"version": 1, "htcondor": {...}}``, as stored.

    The plugin checks only its form; each client checks the settings it
    holds (``HTCondorSettings.for_group``) before it submits anything.
    """
    if not isinstance(spec, dict) or spec.get("version") != TARGET_VERSION:
        raise TargetFormatError(
            f"a worker group is {{'version': 1, 'htcondor': {{...}}}}, got {spec!r}"
        )
    if spec.get("kind") == "pods":  # the gateway's own workers: nothing more to say
        if set(spec) != {"version", "kind"}:
            raise TargetFormatError(
                f"a pod worker group has the fields kind and version, got {sorted(spec)}"
            )
        return spec
    if set(spec) != {"version", "htcondor"} or not isinstance(spec["htcondor"], dict):
        raise TargetFormatError(
            f"a worker group has the fields htcondor and version, got {sorted(spec)}"
        )
    try:
        size = len(json.dumps(spec))
    except (TypeError, ValueError) as exc:
        raise TargetFormatError(f"a worker group's settings must be plain data: {exc}") from None
    if size > GROUP_SPEC_LIMIT:
        raise TargetFormatError(
            f"a worker group's settings take {size} bytes, at most {GROUP_SPEC_LIMIT}"
        )
    return spec
