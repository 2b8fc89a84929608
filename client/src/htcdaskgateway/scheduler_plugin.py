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

Load it in the gateway's ``scheduler_cmd``:
``["dask", "scheduler", "--preload", "htcdaskgateway.scheduler_plugin"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from .naming import is_htcondor_worker

logger = logging.getLogger(__name__)

# How often lapsed leases are looked for, in seconds.
LEASE_CHECK_PERIOD = 1.0


class KeepHTCondorWorkers(SchedulerPlugin):
    name = "htcdaskgateway"

    def __init__(self) -> None:
        self.scheduler: Any = None
        self.leases: dict[str, float] = {}  # holder token -> monotonic expiry
        self.target: dict[str, Any] | None = None
        self.generation = 0  # counts target changes, so appliers notice a new one
        self.applier: str | None = None
        self._applier_expiry = 0.0
        self._closing_on_purpose = False
        self._lease_task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        scheduler.handlers.update(
            {
                "htcdaskgateway_renew": self.renew,
                "htcdaskgateway_set_target": self.set_target,
                "htcdaskgateway_release": self.release,
                "htcdaskgateway_workers_to_close": self.workers_to_close,
                "htcdaskgateway_adaptive_target": self.adaptive_target,
                "htcdaskgateway_versions": self.versions,
            }
        )
        self._lease_task = asyncio.create_task(self._watch_leases())

    async def close(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task

    def valid_workers_downscaling(self, scheduler: Any, workers: list[Any]) -> list[Any]:
        if self._closing_on_purpose:
            return workers
        return [ws for ws in workers if not is_htcondor_worker(ws.name)]

    @contextlib.contextmanager
    def _htcondor_workers_closable(self) -> Iterator[None]:
        # For the client's own scale-down decisions only; the scheduler is
        # single-threaded, so dask-gateway's preload never sees this state.
        self._closing_on_purpose = True
        try:
            yield
        finally:
            self._closing_on_purpose = False

    def workers_to_close(self, n: int) -> list[str]:
        """Names of the ``n`` workers whose loss costs least (data, tasks)."""
        with self._htcondor_workers_closable():
            names = self.scheduler.workers_to_close(n=n, attribute="name")
        return [str(name) for name in names]

    def adaptive_target(self, target_duration: float | None = None) -> int:
        """The scheduler's adaptive target, counting HTCondor workers as closable."""
        with self._htcondor_workers_closable():
            return int(self.scheduler.adaptive_target(target_duration=target_duration))

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
        self, token: str, target: dict[str, Any] | None, apply_ttl: float
    ) -> dict[str, Any]:
        """Make ``target`` the cluster's wanted size and ``token``'s client its applier."""
        self.target = target
        self.generation += 1
        self.applier, self._applier_expiry = token, time.monotonic() + apply_ttl
        logger.info("Cluster target set to %s", target)
        return self._state()

    def release(self, token: str) -> dict[str, Any]:
        """Stop being the applier (a client closing); the target stays."""
        if self.applier == token:
            self.applier = None
        return self._state()

    def _state(self) -> dict[str, Any]:
        # "controller" names the applier; every reply carries it, which is
        # how a client tells this plugin is loaded.
        return {"controller": self.applier, "target": self.target, "generation": self.generation}

    async def _watch_leases(self) -> None:
        while True:
            await asyncio.sleep(LEASE_CHECK_PERIOD)
            now = time.monotonic()
            lapsed = [token for token, expiry in self.leases.items() if expiry < now]
            if not lapsed:
                continue
            for token in lapsed:
                del self.leases[token]
            if self.leases:
                continue
            logger.warning("The client lease of this cluster lapsed; shutting the cluster down")
            # In its own task: closing the scheduler closes this plugin,
            # which waits for this loop to end.
            self._shutdown_task = asyncio.create_task(self._shut_down())
            return

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


def dask_setup(scheduler: Any) -> None:
    scheduler.add_plugin(KeepHTCondorWorkers())
