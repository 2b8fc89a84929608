"""What an open cluster object keeps doing in the background: two loops.

- The **lease loop** (light): every few seconds one call to the scheduler
  plugin renews this client's lease, offers to apply the target and reads
  the target back. It waits for nothing else: no schedd call, no lock. If
  the scheduler cannot be reached, it asks the gateway whether the cluster
  still exists, and keeps trying while it does.
- The **job loop** (heavy): every ``watch-interval`` (or the adaptive
  interval) it has the reconciler look at the jobs and, if this client is
  the applier, act; it renews the idle jobs' lease at the schedd and asks
  why jobs wait. Every failure is logged and retried on the next round:
  neither loop ends before the cluster object closes or the cluster is
  found gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .jobs import JobStatus
from .reconciler import Reconciler, target_from_wire
from .scheduler_link import CALL_TIMEOUT, SchedulerLink
from .versions import VersionCheck

logger = logging.getLogger(__name__)


class Watcher:
    """Keeps one cluster object's lease, target and job table current."""

    def __init__(
        self,
        name: str,
        token: str,
        link: SchedulerLink,
        reconciler: Reconciler,
        lease: int,
        watch_interval: float,
        cluster_gone: Callable[[], Awaitable[str | None]],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self.token = token
        self.link = link
        self.reconciler = reconciler
        self.lease = lease  # seconds; 0: this client holds no lease
        self.watch_interval = watch_interval
        self._cluster_gone = cluster_gone  # why the cluster is gone, or None
        self._on_change = on_change
        self.period = min(lease / 3 if lease else math.inf, watch_interval)
        # How long the applier role outlives a silent client.
        self.apply_ttl = 3 * self.period + CALL_TIMEOUT
        self.is_applier = False
        self.holds_lease = False
        self.stopped_reason: str | None = None
        self._schedd_lease_renewed = -math.inf
        self.versions = VersionCheck(link.versions)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.ensure_future(self._lease_loop()),
            asyncio.ensure_future(self._job_loop()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def wake(self) -> None:
        self._wake.set()

    async def renew(self) -> dict[str, Any]:
        """One lease renewal; raises if the scheduler does not answer in time."""
        ttl = self.lease if self.lease else (0 if self.holds_lease else None)
        reply = await self.link.renew(self.token, ttl=ttl, apply_ttl=self.apply_ttl)
        self.holds_lease = bool(self.lease)
        self.follow(reply)
        return reply

    def follow(self, reply: dict[str, Any]) -> None:
        """Take the scheduler's view: the target, and who applies it."""
        self.is_applier = reply.get("controller") == self.token
        generation = reply.get("generation")
        if generation != self.reconciler.generation:
            self.reconciler.want(target_from_wire(reply.get("target")), generation)
            self._wake.set()

    async def release(self) -> None:
        """Give up the lease and the applier role (closing without shutting down)."""
        try:
            await self.link.renew(self.token, ttl=0 if self.holds_lease else None)
            await self.link.release(self.token)
        except Exception:
            logger.warning("Could not release the client lease of %s", self.name, exc_info=True)
        self.holds_lease = self.is_applier = False

    async def _lease_loop(self) -> None:
        while True:
            try:
                await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Cannot reach the scheduler of %s: %r", self.name, exc)
                if await self._gone():
                    return
            await asyncio.sleep(self.period)

    async def _gone(self) -> bool:
        try:
            reason = await self._cluster_gone()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the gateway may be restarting too: ask again later
            logger.warning("Cannot ask the gateway about %s either: %r", self.name, exc)
            return False
        if reason is None:
            return False
        self.stopped_reason = reason
        self.reconciler.want(None, None)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        return True

    async def _job_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.reconciler.step(act=self.is_applier)
                await self._renew_schedd_lease()
                await self.reconciler.tracker.explain_idle()
                await self.versions.check(len(self.reconciler.tracker.joined))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Watching the jobs of %s failed; retrying: %r", self.name, exc)
            self._on_change()
            adaptive = self.reconciler.adaptive
            period = adaptive.interval if adaptive and self.is_applier else self.watch_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), period)

    async def _renew_schedd_lease(self) -> None:
        # Idle and held jobs are removed by the schedd once their lease
        # attribute is past (submit.py); push it out while this client lives.
        # The credentials job is always idle, so there is always one to renew.
        due = time.monotonic() - self._schedd_lease_renewed >= self.lease / 3
        if not self.lease or not due:
            return
        tracker = self.reconciler.tracker
        selector = await tracker.selector()
        await tracker.schedd.renew_lease(
            selector.every_job_constraint(JobStatus.IDLE, JobStatus.HELD), self.lease
        )
        self._schedd_lease_renewed = time.monotonic()
