"""Typed, validated view of the ``gateway.htcondor`` config.

Values come, in increasing priority, from the shipped YAML defaults, the
user's dask config files, ``DASK_GATEWAY__HTCONDOR__*`` environment
variables and the ``htcondor=`` mapping passed to ``HTCGateway``. Everything
is checked here, before any job is submitted, and an error names the
setting at fault.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.config
from dask.utils import parse_bytes

from .config import defaults as shipped_defaults  # importing registers them
from .errors import SettingError
from .targets import GROUP_NAME

PREFIX = "gateway.htcondor"
# Smallest values accepted, in seconds. The client lease is renewed every
# lease / 3 s, each renewal a scheduler call that may take up to 10 s
# (scheduler_link.CALL_TIMEOUT), and the plugin checks leases every second:
# a lease of a second or two lapses at the first slow call. The floor is
# what the e2e tests use for speed; a production lease should stay well
# above 3 x CALL_TIMEOUT, as the default 60 does.
MIN_LEASE = 3
# A look at the jobs every watch-interval, each a query to the schedd: less
# than a second apart is load on the schedd, not faster scaling.
MIN_WATCH_INTERVAL = 1.0
# A time limit under a second fails ordinary calls (a query, a submit) to a
# busy schedd, and every look with them.
MIN_SCHEDD_TIMEOUT = 1.0
UNIVERSES = ("vanilla", "container", "docker")
# Sections whose keys are the user's own names (submit commands, ClassAd
# attributes, dask config keys), kept exactly as written.
_OPEN_MAPPINGS = ("extra-directives", "attributes", "dask-config", "resources", "worker-groups")
# A dask worker resource's name, as `dask worker --resources` takes it.
_RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class WorkerSettings:
    executable: str
    cores: int
    memory: int
    disk: int
    nthreads: int
    host: str | None
    contact_address: str | None
    death_timeout: float
    kill_timeout: int
    lifetime: int | None
    universe: str
    image: str | None
    extra_args: tuple[str, ...]
    dask_config: tuple[tuple[str, str], ...]  # dotted dask config key, value
    gpus: int = 0
    require_gpus: str | None = None
    resources: tuple[tuple[str, float], ...] = ()  # beside GPU
    keep_claim_idle: int = 0  # seconds

    @property
    def dask_resources(self) -> tuple[tuple[str, float], ...]:
        """What the worker offers dask: its resources, and its GPUs as GPU."""
        return (*self.resources, *((("GPU", float(self.gpus)),) if self.gpus else ()))


@dataclass(frozen=True)
class SubmitSettings:
    batch_name: str
    requirements: str | None
    attributes: tuple[tuple[str, str], ...]
    extra_directives: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class HTCondorSettings:
    collector: str | None
    schedd: tuple[str, ...] | None  # names; None: every schedd the collector lists
    schedd_constraint: str | None
    scheduler_address: str | None
    lease: int
    detached_lease: int  # seconds; 0: the jobs of a cluster nobody watches never lapse
    watch_interval: float
    schedd_timeout: float
    max_jobs: int
    max_keep_claim_idle: int
    gateway_id: str | None
    api_ca: str | None  # PEM
    worker: WorkerSettings
    submit: SubmitSettings
    # Named worker groups of the config: name -> their overrides of this
    # section (checked: each makes valid settings).
    worker_groups: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    # The section these were read from, for a group's settings on top.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def for_group(self, name: str, overrides: Mapping[str, Any] | None) -> HTCondorSettings:
        """These settings with worker group ``name``'s overrides on top.

        A group has its own shape (``worker.*``, ``submit.*``) and
        ``max-jobs``; everything else is the cluster's.
        """
        overrides = _hyphenate(dict(overrides or {}))
        where = f"{PREFIX}.worker-groups.{checked_group_name(name)}"
        if not isinstance(overrides, Mapping):
            raise SettingError(f"{where} must be a mapping, got {overrides!r}")
        for key in overrides:
            if key not in GROUP_KEYS:
                raise SettingError(
                    f"{where}.{key} cannot differ between worker groups; a group sets only "
                    + ", ".join(GROUP_KEYS)
                )
        _check_known_keys(overrides, _defaults(), where)
        base = {k: v for k, v in self.raw.items() if k != "worker-groups"}
        return HTCondorSettings._parse(dask.config.merge(base, overrides))

    @classmethod
    def from_config(cls, overrides: Mapping[str, Any] | None = None) -> HTCondorSettings:
        """Read ``gateway.htcondor`` from dask config, with ``overrides`` on top."""
        # Environment variables give keys with underscores (SCHEDD_CONSTRAINT).
        config = _hyphenate(dask.config.get(PREFIX))
        if overrides:
            _check_known_keys(overrides, config, PREFIX)
            config = dask.config.merge(config, _hyphenate(overrides))
        settings = cls._parse(config)
        for name, group in settings.worker_groups:
            settings.for_group(name, group)  # an operator's preset is checked now, not at scale()
        return settings

    @classmethod
    def _parse(cls, raw: Mapping[str, Any]) -> HTCondorSettings:
        raw = _hyphenate(raw)
        _check_known_keys(raw, _defaults(), PREFIX)
        worker = raw["worker"]
        submit = raw["submit"]
        cores = _positive_int(worker["cores"], "worker.cores")
        nthreads = worker["nthreads"]
        lifetime = worker["lifetime"]
        return cls(
            collector=_optional_str(raw["collector"], "collector"),
            schedd=_schedd_names(raw["schedd"]),
            schedd_constraint=_optional_str(raw["schedd-constraint"], "schedd-constraint"),
            scheduler_address=_scheduler_address(raw["scheduler-address"]),
            lease=0 if raw["lease"] in (0, None) else _lease(raw["lease"]),
            detached_lease=_lease(raw["detached-lease"], "detached-lease"),
            watch_interval=_at_least(raw["watch-interval"], "watch-interval", MIN_WATCH_INTERVAL),
            schedd_timeout=_at_least(raw["schedd-timeout"], "schedd-timeout", MIN_SCHEDD_TIMEOUT),
            max_jobs=_positive_int(raw["max-jobs"], "max-jobs"),
            max_keep_claim_idle=_non_negative_int(
                raw["max-keep-claim-idle"], "max-keep-claim-idle"
            ),
            gateway_id=_optional_str(raw["gateway-id"], "gateway-id"),
            api_ca=_pem_certificates(raw["api-ca"], "api-ca"),
            worker=WorkerSettings(
                executable=_required_str(worker["executable"], "worker.executable"),
                cores=cores,
                memory=_byte_size(worker["memory"], "worker.memory"),
                disk=_byte_size(worker["disk"], "worker.disk"),
                nthreads=cores if nthreads is None else _positive_int(nthreads, "worker.nthreads"),
                host=_optional_str(worker["host"], "worker.host"),
                contact_address=_contact_address(worker["contact-address"]),
                death_timeout=_positive_number(worker["death-timeout"], "worker.death-timeout"),
                kill_timeout=_positive_int(worker["kill-timeout"], "worker.kill-timeout"),
                lifetime=None if lifetime is None else _positive_int(lifetime, "worker.lifetime"),
                universe=_choice(worker["universe"], "worker.universe", UNIVERSES),
                image=_optional_str(worker["image"], "worker.image"),
                extra_args=_str_list(worker["extra-args"], "worker.extra-args"),
                dask_config=_dask_config(worker["dask-config"]),
                gpus=_non_negative_int(worker["gpus"], "worker.gpus"),
                require_gpus=_optional_str(worker["require-gpus"], "worker.require-gpus"),
                resources=_resources(worker["resources"]),
                keep_claim_idle=_non_negative_int(
                    worker["keep-claim-idle"], "worker.keep-claim-idle"
                ),
            ),
            submit=SubmitSettings(
                batch_name=_batch_name(submit["batch-name"]),
                requirements=_optional_str(submit["requirements"], "submit.requirements"),
                attributes=_attributes(submit["attributes"]),
                extra_directives=_directives(submit["extra-directives"]),
            ),
            worker_groups=_worker_groups(raw.get("worker-groups") or {}),
            raw=raw,
        )

    def __post_init__(self) -> None:
        if self.worker.universe != "vanilla" and self.worker.image is None:
            raise _fail("worker.image", f"an image for the {self.worker.universe} universe", None)
        if self.worker.keep_claim_idle > self.max_keep_claim_idle:
            raise SettingError(
                f"{PREFIX}.worker.keep-claim-idle is {self.worker.keep_claim_idle} s; the "
                f"gateway's operator allows at most {self.max_keep_claim_idle} s "
                f"({PREFIX}.max-keep-claim-idle)"
            )


def _defaults() -> Mapping[str, Any]:
    return shipped_defaults["gateway"]["htcondor"]


def _hyphenate(value: Any) -> Any:
    # Keyword arguments are written with underscores (death_timeout), config
    # keys with hyphens (death-timeout); dask treats both as the same key.
    if isinstance(value, Mapping):
        return {
            str(k).replace("_", "-"): v
            if str(k).replace("_", "-") in _OPEN_MAPPINGS
            else _hyphenate(v)
            for k, v in value.items()
        }
    return value


def _check_known_keys(given: Mapping[str, Any], known: Mapping[str, Any], where: str) -> None:
    for key, value in given.items():
        name = str(key).replace("_", "-")
        if name not in known:
            choices = ", ".join(sorted(known))
            raise SettingError(f"Unknown setting {where}.{name}; known keys there: {choices}")
        if isinstance(known[name], Mapping) and name not in _OPEN_MAPPINGS:
            if not isinstance(value, Mapping):
                raise SettingError(f"{where}.{name} must be a mapping, got {value!r}")
            _check_known_keys(value, known[name], f"{where}.{name}")


# What a worker group may set differently from its cluster.
GROUP_KEYS = ("worker", "submit", "max-jobs")


def checked_group_name(name: object) -> str:
    if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
        raise SettingError(
            f"Not a worker group name: {name!r} (lowercase letters, digits and '-', "
            "at most 32, starting and ending with a letter or digit)"
        )
    return name


def _worker_groups(value: object) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    if not isinstance(value, Mapping):
        raise _fail("worker-groups", "a mapping of group names to settings", value)
    return tuple((checked_group_name(name), dict(groups)) for name, groups in value.items())


def _non_negative_int(value: object, setting: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise _fail(setting, "a whole number >= 0", value)
    return int(value)


def _resources(value: object) -> tuple[tuple[str, float], ...]:
    setting = "worker.resources"
    if not isinstance(value, Mapping):
        raise _fail(setting, 'a mapping of resource names to amounts ({"FPGA": 1})', value)
    found = []
    for name, amount in value.items():
        if not isinstance(name, str) or not _RESOURCE_NAME.fullmatch(name) or name == "GPU":
            raise _fail(setting, "resource names of letters, digits and _ (GPU: worker.gpus)", name)
        found.append((name, _positive_number(amount, f"{setting}.{name}")))
    return tuple(found)


def _fail(setting: str, expected: str, value: object) -> SettingError:
    return SettingError(f"{PREFIX}.{setting} must be {expected}, got {value!r}")


def _positive_int(value: object, setting: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise _fail(setting, "a positive integer", value)
    return int(value)


def _positive_number(value: object, setting: str) -> float:
    # NaN compares false with everything, so "<= 0" alone lets it through.
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise _fail(setting, "a positive number of seconds", value)
    return float(value)


def _at_least(value: object, setting: str, minimum: float) -> float:
    seconds = _positive_number(value, setting)
    if seconds < minimum:
        raise _fail(setting, f"a number of seconds >= {minimum:g}", value)
    return seconds


def _lease(value: object, setting: str = "lease") -> int:
    if value in (0, None):
        return 0
    seconds = _positive_int(value, setting)
    if seconds < MIN_LEASE:
        raise _fail(setting, f"0 (no lease) or a whole number of seconds >= {MIN_LEASE}", value)
    return seconds


def _byte_size(value: object, setting: str) -> int:
    try:
        size = parse_bytes(value)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError):
        raise _fail(setting, 'a byte size such as "4 GiB" or "500 MB"', value) from None
    if size <= 0:
        raise _fail(setting, "a positive byte size", value)
    return size


def _schedd_names(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise _fail("schedd", "a schedd name, a list of names, or null", value)
    checked = tuple(_required_str(name, "schedd") for name in names)
    if any('"' in name or "\\" in name for name in checked):
        raise _fail("schedd", "schedd names (no quotes or backslashes)", value)
    return checked


def _optional_str(value: object, setting: str) -> str | None:
    if value is None:
        return None
    return _required_str(value, setting)


def _required_str(value: object, setting: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(setting, "a non-empty string", value)
    return value


def _pem_certificates(value: object, setting: str) -> str | None:
    """PEM text, given inline or as a file's path; None stays None."""
    text = _optional_str(value, setting)
    if text is None:
        return None
    if not text.lstrip().startswith("-----BEGIN"):
        try:
            text = Path(text).expanduser().read_text()
        except OSError as exc:
            raise _fail(setting, "PEM certificates or the path of a file with them", value) from exc
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise _fail(setting, "PEM certificates (-----BEGIN CERTIFICATE-----)", value)
    return text


def _str_list(value: object, setting: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _fail(setting, "a list of strings", value)
    return tuple(value)


def _scheduler_address(value: object) -> str | None:
    address = _optional_str(value, "scheduler-address")
    if address is not None and not address.startswith("tls://"):
        raise _fail("scheduler-address", 'a "tls://host:port" address', value)
    return address


def _batch_name(value: object) -> str:
    template = _required_str(value, "submit.batch-name")
    try:
        template.format(cluster_name="x")
    except (KeyError, IndexError, ValueError):
        raise _fail(
            "submit.batch-name", 'a name with no fields but "{cluster_name}"', value
        ) from None
    return template


# What keeps a worker job owned, leased and secret, and keeps the credentials
# job from running: set by the client, not the user's to change. HTCondor
# applies ``MY.x`` / ``+x`` directives and submit.attributes last, over the
# submit commands, so both the commands and the ClassAd attributes they set
# are refused, whatever the case. submit.requirements adds requirements
# (ANDed); a Requirements attribute would replace the client's, including
# the credentials job's "never run". KillSig stays open: kill-timeout bounds
# a catchable kill_sig. keep_claim_idle is worker.keep-claim-idle, which the
# operator caps.
PROTECTED_COMMANDS = frozenset(
    {
        "periodic_remove", "getenv", "environment", "env", "arguments", "args",
        "transfer_input_files", "executable", "transfer_executable", "leave_in_queue",
        "initialdir", "iwd", "keep_claim_idle",
    }
)  # fmt: skip
PROTECTED_ATTRIBUTES = frozenset(
    {
        "periodicremove", "requirements", "transferinput", "transferexecutable", "cmd",
        "environment", "env", "args", "arguments", "iwd", "getenv", "leavejobinqueue",
        "user", "owner", "keepclaimidle",
    }
)  # fmt: skip
# Every attribute of this package's own (naming.py: cluster, user, gateway, lease, role).
PROTECTED_ATTRIBUTE_PREFIX = "htcdaskgateway"
_ATTRIBUTE_PREFIXES = ("+", "my.")


def _attribute_name(directive: str) -> str | None:
    """The ClassAd attribute a ``MY.x`` / ``+x`` directive sets, lowercased; None for a command."""
    name = directive.strip().lower()
    for prefix in _ATTRIBUTE_PREFIXES:
        if name.startswith(prefix):
            return name.removeprefix(prefix).strip()
    return None


def _protected_attribute(name: str) -> bool:
    name = name.strip().lower()
    return name in PROTECTED_ATTRIBUTES or name.startswith(PROTECTED_ATTRIBUTE_PREFIX)


def _protected(directive: str) -> bool:
    attribute = _attribute_name(directive)
    if attribute is not None:
        return _protected_attribute(attribute)
    return directive.strip().lower() in PROTECTED_COMMANDS


def _refusal(setting: str, name: str) -> SettingError:
    if (_attribute_name(name) or name.strip().lower()) == "requirements":
        why = (
            "it would replace the jobs' own requirements (the credentials job's keep it from "
            f"ever running); add yours with {PREFIX}.submit.requirements, ANDed with them"
        )
    else:
        why = (
            "htcdaskgateway sets it to keep the jobs owned, leased and free of secrets "
            "(worker settings cover the executable, its arguments and environment)"
        )
    return SettingError(f"{PREFIX}.{setting}.{name} may not be set: {why}")


def _directives(value: object) -> tuple[tuple[str, str], ...]:
    setting = "submit.extra-directives"
    if not isinstance(value, Mapping):
        raise _fail(setting, "a mapping of submit commands to values", value)
    items = []
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str | int | float | bool):
            raise _fail(setting, "a mapping of strings to strings", value)
        if _protected(key):
            raise _refusal(setting, key)
        items.append((key, str(item)))
    return tuple(items)


_DASK_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+")


def _dask_config(value: object) -> tuple[tuple[str, str], ...]:
    setting = "worker.dask-config"
    if not isinstance(value, Mapping):
        raise _fail(setting, 'a mapping of dask config keys to values ("a.b.c": 1)', value)
    items = []
    for key, item in value.items():
        if item is None:
            continue  # a shipped default taken back: dask's own applies
        if not isinstance(key, str) or not _DASK_KEY.fullmatch(key):
            raise _fail(setting, 'dotted dask config keys ("distributed.admin.tick.interval")', key)
        if not isinstance(item, str | int | float | bool):
            raise _fail(f"{setting}.{key}", "a string, number or boolean", item)
        items.append((key, str(item)))
    return tuple(items)


def _contact_address(value: object) -> str | None:
    address = _optional_str(value, "worker.contact-address")
    if address is not None and "://" not in address:
        raise _fail("worker.contact-address", 'an address such as "tcp://host:port"', value)
    return address


def _choice(value: object, setting: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(setting, "one of " + ", ".join(choices), value)
    return str(value)


_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _attributes(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise _fail("submit.attributes", "a mapping of ClassAd attribute names to values", value)
    items = []
    for name, item in value.items():
        if not isinstance(name, str) or not _ATTRIBUTE_NAME.fullmatch(name):
            raise _fail("submit.attributes", "ClassAd attribute names (letters, digits, _)", name)
        if _protected_attribute(name):
            raise _refusal("submit.attributes", name)
        if isinstance(item, bool):
            item = "true" if item else "false"
        if not isinstance(item, str | int | float):
            raise _fail(f"submit.attributes.{name}", "a ClassAd value", item)
        items.append((name, str(item)))
    return tuple(items)
