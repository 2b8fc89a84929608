"""Scheduler preload: keep the HTCondor workers, and hold the client's lease.

dask-gateway's own scheduler preload retires workers above the count the
gateway asked for, which is 0 for HTCondor-backed clusters, so every job's
worker would be closed seconds after joining. It picks its victims with
``Scheduler.workers_to_close``, which asks every plugin's
``valid_workers_downscaling``; this plugin withholds the HTCondor workers
there. They leave only when a client retires them (through this plugin's
``htcdaskgateway_workers_to_close``) or removes their job.

It holds the cluster's wanted size, its **target** (``{"kind": "scale",
"n": 3}`` or ``{"kind": "adapt", ...}``), so that the target outlives the
client that set it: every open client of the cluster watches it, and one of
them at a time, the **applier**, compares it with the cluster's jobs and
submits or removes. A client that sets a target becomes the applier; when
the applier goes silent or lets go, the next watching client takes over.
The scheduler itself never talks to HTCondor (it has no credentials there).

It also keeps the cluster's client lease: a client that would shut the
cluster down when it is done renews a lease here. If it dies without
releasing it, the lease lapses and the plugin stops the cluster through the
gateway, so the cluster's workers exit and their jobs leave the queue.

And it stops a cluster left **unattended** (``gateway.htcondor.unattended-
timeout`` seconds; 0: never): no open cluster object has called it, no dask
client is connected and no task has moved for that long. That is the
cluster of a notebook that ended with ``shutdown_on_close=False``.
dask-gateway's own ``idle_timeout`` counts only tasks, so it would also stop
the cluster of an analyst who is reading a plot with the client open.

And it dials every HTCondor worker that joins at the address the worker
gave, as the scheduler will to gather its results (``dial_back``), and
reports a worker it cannot reach to every client (``unreachable``).

Load it in the gateway's ``scheduler_cmd``:
``["dask", "scheduler", "--preload", "htcdaskgateway.scheduler_plugin"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import dask.config
from distributed.diagnostics.plugin import SchedulerPlugin

from . import config as _config  # noqa: F401  (registers gateway.htcondor defaults)
from .dial_back import DialBack
from .naming import is_htcondor_worker
from .targets import (
    DEFAULT_GROUP,
    TargetFormatError,
    check_wire_group,
    check_wire_group_spec,
    check_wire_target,
)

logger = logging.getLogger(__name__)

# How often lapsed leases are looked for, in seconds.
LEASE_CHECK_PERIOD = 1.0


class KeepHTCondorWorkers(SchedulerPlugin):
    name = "htcdaskgateway"

    def __init__(self, unattended_timeout: float | None = None) -> None:
        if unattended_timeout is None:
            unattended_timeout = float(dask.config.get("gateway.htcondor.unattended-timeout") or 0)
        self.unattended_timeout = unattended_timeout
        self._attended_at = time.monotonic()
        self._transitions_seen = -1
        self.scheduler: Any = None
        self.leases: dict[str, float] = {}  # holder token -> monotonic expiry
        # Each worker group's target, and a count of its changes so that
        # appliers notice a new one. The default group's is also "target".
        self.targets: dict[str, dict[str, Any] | None] = {DEFAULT_GROUP: None}
        self.generations: dict[str, int] = {DEFAULT_GROUP: 0}
        # The named groups' descriptions (settings), for every client.
        self.group_specs: dict[str, dict[str, Any]] = {}
        self.deleted_groups: set[str] = set()
        self.applier: str | None = None
        self._applier_expiry = 0.0
        self._closing_on_purpose = False
        self._lease_task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self.dial_back: DialBack | None = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        handlers = {
            "htcdaskgateway_renew": self.renew,
            "htcdaskgateway_set_target": self.set_target,
            "htcdaskgateway_delete_group": self.delete_group,
            "htcdaskgateway_confirm": self.confirm,
            "htcdaskgateway_release": self.release,
            "htcdaskgateway_workers_to_close": self.workers_to_close,
            "htcdaskgateway_adaptive_target": self.adaptive_target,
            "htcdaskgateway_versions": self.versions,
        }
        scheduler.handlers.update({op: self._attending(h) for op, h in handlers.items()})
        self._attended_at = time.monotonic()
        self._lease_task = asyncio.create_task(self._watch_leases())
        self.dial_back = DialBack(scheduler.rpc)

    async def close(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        if self.dial_back is not None:
            await self.dial_back.close()

    def add_worker(self, scheduler: Any, worker: str) -> None:
        ws = scheduler.workers.get(worker)
        if ws is not None and is_htcondor_worker(ws.name) and self.dial_back is not None:
            self.dial_back.joined(worker, str(ws.name))

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        if self.dial_back is not None:
            self.dial_back.left(worker)

    @property
    def unreachable(self) -> dict[str, str]:
        """Worker name -> "address: why the scheduler cannot dial it"."""
        return self.dial_back.unreachable if self.dial_back is not None else {}

    def valid_workers_downscaling(self, scheduler: Any, workers: list[Any]) -> list[Any]:
        if self._closing_on_purpose:
            return workers
        others = [ws for ws in workers if not is_htcondor_worker(ws.name)]
        wanted = gateway_worker_count(scheduler)
        if wanted is None:
            return others
        # dask-gateway's preload asks for len(all workers) - its count, the
        # HTCondor workers included: offer only the gateway's workers above
        # its count (a pod group's), those whose loss costs least first, as
        # the scheduler ranks them.
        excess = sum(1 for ws in scheduler.workers.values() if not is_htcondor_worker(ws.name))
        others.sort(key=lambda ws: (not ws.processing, -ws.nbytes), reverse=True)
        return others[: max(0, excess - wanted)]

    @contextlib.contextmanager
    def _htcondor_workers_closable(self) -> Iterator[None]:
        # For the client's own scale-down decisions only; the scheduler is
        # single-threaded, so dask-gateway's preload never sees this state.
        self._closing_on_purpose = True
        try:
            yield
        finally:
            self._closing_on_purpose = False

    @property
    def target(self) -> dict[str, Any] | None:
        """The default group's target."""
        return self.targets[DEFAULT_GROUP]

    @property
    def generation(self) -> int:
        return self.generations[DEFAULT_GROUP]

    def workers_to_close(self, n: int, names: list[str] | None = None) -> list[str]:
        """Names of the ``n`` workers (among ``names``, if given) whose loss costs least."""
        among = None if names is None else set(names)
        with self._htcondor_workers_closable():
            everyone = len(self.scheduler.workers)
            ranked = self.scheduler.workers_to_close(
                n=n if among is None else everyone, attribute="name"
            )
        chosen = [str(name) for name in ranked if among is None or str(name) in among]
        return chosen[:n]

    def adaptive_target(
        self, target_duration: float | None = None, resources: dict[str, float] | None = None
    ) -> int:
        """Workers wanted: the scheduler's adaptive target, HTCondor workers counted as closable.

        With ``resources`` (what a group's workers offer, ``{"GPU": 1}``),
        the workers that the tasks needing only what they offer fill: a
        GPU group grows with GPU tasks, whatever else is queued.
        """
        if resources:
            return self._restricted_target(resources)
        with self._htcondor_workers_closable():
            whole = int(self.scheduler.adaptive_target(target_duration=target_duration))
        # Without resources: the default group. The scheduler's target counts
        # every worker and task; the workers that offer resources (another
        # group's) and the tasks only they can run are not this group's.
        offering = sum(1 for ws in self.scheduler.workers.values() if ws.resources)
        return max(0, whole - max(offering, self._restricted_target(None)))

    def _restricted_target(self, offered: dict[str, float] | None) -> int:
        """Workers that tasks restricted to ``offered`` fill (``None``: any restriction, 1 each)."""
        scheduler = self.scheduler
        waiting = list(scheduler.unrunnable)
        running = [ts for ws in scheduler.workers.values() for ts in ws.processing]
        share = 0.0
        for ts in {*waiting, *running}:
            need = ts.resource_restrictions or {}
            if need and offered is None:
                share += 1
            elif need and all(name in offered and offered[name] > 0 for name in need):
                # The part of one such worker this task takes.
                share += max(amount / offered[name] for name, amount in need.items())
        return math.ceil(share - 1e-9)

    def versions(self) -> dict[str, Any]:
        """The scheduler's package versions and those each worker sent when it joined.

        Kept by the scheduler since registration, so no worker is asked.
        """
        from distributed.versions import get_versions

        return {
            "scheduler": get_versions()["packages"],
            "workers": {
                str(ws.name): dict((ws.versions or {}).get("packages", {}))
                for ws in self.scheduler.workers.values()
            },
        }

    def renew(
        self, token: str, ttl: float | None = None, apply_ttl: float | None = None
    ) -> dict[str, Any]:
        """Renew (``ttl`` seconds), release (``ttl`` 0) or only read a client lease.

        With ``apply_ttl``, the client offers to apply the target: it becomes
        (or stays) the applier for that long unless another client holds
        that role. Returns the state every client watches (``_state``).
        """
        now = time.monotonic()
        if ttl is not None:
            if ttl > 0:
                self.leases[token] = now + ttl
            else:
                self.leases.pop(token, None)
        if apply_ttl is not None and (self.applier in (None, token) or self._applier_expiry < now):
            self.applier, self._applier_expiry = token, now + apply_ttl
        return self._state()

    def set_target(
        self,
        token: str,
        target: dict[str, Any] | None,
        apply_ttl: float,
        group: str = DEFAULT_GROUP,
        spec: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Make ``target`` the wanted size of ``group`` and ``token``'s client the applier.

        A named group is added with its description (``spec``) and keeps
        it: the same description again is fine, another is refused until
        the group is deleted. Anything malformed is refused here
        (``TargetFormatError``, a ``ValueError``), so what every client
        reads back is well formed.
        """
        group = check_wire_group(group)
        checked = check_wire_target(target)
        if group != DEFAULT_GROUP:
            known = self.group_specs.get(group)
            if spec is not None:
                spec = check_wire_group_spec(spec)
                if known is not None and known != spec and group not in self.deleted_groups:
                    raise TargetFormatError(
                        f"worker group {group!r} exists with other settings; delete it first"
                    )
                self.group_specs[group] = spec
                self.deleted_groups.discard(group)
            elif known is None or group in self.deleted_groups:
                raise TargetFormatError(f"no worker group {group!r}: add it first")
        self.targets[group] = checked
        self.generations[group] = self.generations.get(group, 0) + 1
        self.applier, self._applier_expiry = token, time.monotonic() + apply_ttl
        logger.info("Target of worker group %s set to %s", group, target)
        return self._state()

    def delete_group(self, token: str, group: str, apply_ttl: float) -> dict[str, Any]:
        """Take a named group down to no jobs and out of the listing; its jobs are removed."""
        group = check_wire_group(group)
        if group == DEFAULT_GROUP or group not in self.group_specs:
            raise TargetFormatError(f"no worker group {group!r} to delete")
        self.deleted_groups.add(group)
        self.targets[group] = {"kind": "scale", "n": 0, "cap": 0, "version": 1}
        self.generations[group] = self.generations.get(group, 0) + 1
        self.applier, self._applier_expiry = token, time.monotonic() + apply_ttl
        return self._state()

    def confirm(
        self, token: str, generation: int | None, group: str = DEFAULT_GROUP
    ) -> dict[str, Any]:
        """Whether ``token``'s client is the applier of target ``generation``, now.

        Asked right before a client acts on jobs, so that a client that has
        not yet heard of a newer target (set by the CLI or a second
        notebook a moment ago) does not undo it.
        """
        now = time.monotonic()
        current = self.applier == token and self._applier_expiry >= now
        return {
            **self._state(),
            "confirmed": current and generation == self.generations.get(group),
        }

    def release(self, token: str) -> dict[str, Any]:
        """Stop being the applier (a client closing); the target stays."""
        if self.applier == token:
            self.applier = None
        return self._state()

    def _attending(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        # Every call comes from an open cluster object (or the CLI).
        @functools.wraps(handler)
        def call(*args: Any, **kwargs: Any) -> Any:
            self._attended_at = time.monotonic()
            return handler(*args, **kwargs)

        return call

    def unattended_for(self) -> float:
        """Seconds since a client, a cluster object or a task last showed up."""
        scheduler, now = self.scheduler, time.monotonic()
        # The scheduler's own fire-and-forget client is always there.
        clients = [c for c in scheduler.clients if c != "fire-and-forget"]
        counter = scheduler.transition_counter
        busy = any(ws.processing for ws in scheduler.workers.values()) or scheduler.unrunnable
        if clients or busy or counter != self._transitions_seen:
            self._transitions_seen = counter
            self._attended_at = now
        return now - self._attended_at

    def _state(self) -> dict[str, Any]:
        # "applier" names the client applying the target; every reply
        # carries it, which is how a client tells this plugin is loaded.
        # "controller", its name in 2026.12.0, is kept for those clients.
        state: dict[str, Any] = {
            "applier": self.applier, "controller": self.applier,
            "target": self.target, "generation": self.generation,
        }  # fmt: skip
        if self.group_specs:
            state["groups"] = {
                name: {
                    "spec": spec,
                    "target": self.targets.get(name),
                    "generation": self.generations.get(name, 0),
                    "deleted": name in self.deleted_groups,
                }
                for name, spec in self.group_specs.items()
            }
        if self.unreachable:
            state["unreachable"] = dict(self.unreachable)
        return state

    async def _watch_leases(self) -> None:
        while True:
            due = time.monotonic() + LEASE_CHECK_PERIOD
            await asyncio.sleep(LEASE_CHECK_PERIOD)
            # The event loop was held up (a big graph unpacked, a throttled
            # pod): no client could renew meanwhile, and their renewals may
            # still be queued behind this check. The leases stand still for
            # that long.
            self.extend_leases(time.monotonic() - due)
            reason = self._reason_to_stop()
            if reason is None:
                continue
            logger.warning("%s; shutting the cluster down", reason)
            # In its own task: closing the scheduler closes this plugin,
            # which waits for this loop to end.
            self._shutdown_task = asyncio.create_task(self._shut_down())
            return

    def extend_leases(self, seconds: float) -> None:
        """Push every lease, and the applier role, out by ``seconds`` the scheduler was frozen."""
        if seconds <= LEASE_CHECK_PERIOD:
            return
        self.leases = {token: expiry + seconds for token, expiry in self.leases.items()}
        self._applier_expiry += seconds

    def _reason_to_stop(self) -> str | None:
        now = time.monotonic()
        lapsed = [token for token, expiry in self.leases.items() if expiry < now]
        for token in lapsed:
            del self.leases[token]
        if lapsed and not self.leases:
            return "The client lease of this cluster lapsed"
        unattended = self.unattended_for()
        if self.unattended_timeout > 0 and unattended > self.unattended_timeout:
            return f"The cluster was left unattended for {unattended:.0f} s"
        return None

    async def _shut_down(self) -> None:
        # Through the gateway, so it records a stopped cluster, not a failed one.
        service = self.scheduler.services.get("gateway")
        if service is not None:
            try:
                await service.gateway.shutdown()
                return
            except Exception:
                logger.exception("The gateway did not stop the cluster; closing the scheduler")
        await self.scheduler.close()


def gateway_worker_count(scheduler: Any) -> int | None:
    """The count of its own workers dask-gateway's preload keeps (``None``: no such preload).

    Read from the preload's plugin, the one place its count is public; it
    has no hook to leave other workers out of that count.
    """
    try:
        from dask_gateway.scheduler_preload import GatewayPlugin
    except ImportError:
        return None
    for plugin in getattr(scheduler, "plugins", {}).values():
        if isinstance(plugin, GatewayPlugin):
            return int(plugin.service.count)
    return None


def dask_setup(scheduler: Any) -> None:
    scheduler.add_plugin(KeepHTCondorWorkers())
