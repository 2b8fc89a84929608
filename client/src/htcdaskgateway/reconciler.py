"""The one place a cluster's jobs are made to match its wanted size.

The wanted size, the **target**, is held by the scheduler plugin (so it
outlives the client that set it) and read by every client that watches the
cluster; the client currently applying it runs ``Reconciler.step()``,
which compares the target with the jobs it sees and acts: submits,
retires and removes. ``scale()``, ``adapt()``, the CLI, ``connect()`` and
the gateway's calls by name all set targets; none acts on jobs itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from .adaptive import HTCondorAdaptive
from .errors import HTCondorError
from .jobs import JobId, JobTracker, WorkerJob, removal_order
from .scheduler_link import SchedulerLink
from .targets import (
    DEFAULT_GROUP,
    AdaptTarget,
    ScaleTarget,
    Target,
    TargetFormatError,
    target_from_wire,
)

logger = logging.getLogger(__name__)

# Seconds to wait after the first failed submission; doubled after each
# further failure in a row, up to BACKOFF_MAX.
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 300.0


class GroupReconciler(Protocol):
    """What the watcher needs of each group's reconciler: ``Reconciler``, ``pods.PodGroup``."""

    group: str
    target: Target | None
    generation: int | None
    adaptive: Any
    connected: set[Any]  # the group's workers in the scheduler, as of the last look

    def want(self, target: Target | None, generation: int | None) -> None: ...

    def want_wire(self, wire: object, generation: int | None) -> None: ...

    async def step(self, act: bool = True, raise_errors: bool = False) -> Any: ...

    async def after_look(self) -> None: ...

    @property
    def joined_count(self) -> int: ...


class Workers(Protocol):
    """What a reconciler starts and stops: one group's workers (``workers.GroupWorkers``)."""

    async def start(self, count: int) -> list[JobId]: ...

    async def stop(self, job_ids: list[JobId], reason: str) -> None: ...


class Reconciler:
    """Compares a cluster's target with its jobs and acts; one per cluster object.

    ``workers`` starts (queues) and stops (removes) its group's worker
    jobs; the tracker records what is seen and done. Only one
    step runs at a time; ``step()`` is called by the watcher and by
    ``scale()``/``adapt()`` directly, so a new target takes effect at once.

    With a ``token`` (the client's, as the scheduler plugin knows it), every
    act is first confirmed at the plugin: this client must still be the
    applier and its target the current one. Another client may have set a
    new target a moment ago, which this one would otherwise undo until its
    next renewal.
    """

    def __init__(
        self,
        tracker: JobTracker,
        scheduler: SchedulerLink,
        workers: Workers,
        token: str | None = None,
        clock: Any = time,
        group: str = DEFAULT_GROUP,
        resources: dict[str, float] | None = None,
    ) -> None:
        self.group = group
        # What the group's workers offer dask (GPU...): its adapt() follows
        # the tasks that need them.
        self.resources = dict(resources or {})
        self.tracker = tracker
        self.scheduler = scheduler
        self.workers = workers
        self.token = token
        self._clock = clock
        self.target: Target | None = None
        # A target this client cannot read (TargetFormatError's text): it
        # leaves the jobs alone rather than apply a guess.
        self.unreadable: str | None = None
        self.generation: int | None = None
        self.adaptive: HTCondorAdaptive | None = None
        self.lock = asyncio.Lock()
        self.connected: set[JobId] = set()  # jobs whose workers are in the scheduler, last look
        self.submit_failures = 0
        self.submit_error: str | None = None
        self.retry_at = 0.0  # monotonic; no submission before

    def want(self, target: Target | None, generation: int | None) -> None:
        """Take the target the scheduler holds; a new one starts afresh."""
        if generation == self.generation and target == self.target:
            return
        self.target, self.generation, self.unreadable = target, generation, None
        self.tracker.reset_failures()
        self.submit_failures, self.submit_error, self.retry_at = 0, None, 0.0
        self.adaptive = None
        if isinstance(target, AdaptTarget):
            self.adaptive = HTCondorAdaptive(self, target)

    async def after_look(self) -> None:
        """Between looks: why idle jobs wait (rate-limited by the tracker)."""
        await self.tracker.explain_idle()

    @property
    def joined_count(self) -> int:
        """Jobs whose worker has joined since this object watches them."""
        return len(self.tracker.joined)

    @property
    def retry_in(self) -> float:
        """Seconds until submitting is tried again after failures; 0 if not waiting."""
        return max(0.0, self.retry_at - self._clock.monotonic())

    async def step(self, act: bool = True, raise_errors: bool = False) -> list[WorkerJob]:
        """Look at the jobs and, if ``act``, bring them to the target. Returns the active jobs."""
        async with self.lock:
            await self.observe()
            if act:
                await self._act(raise_errors)
            return self.tracker.table

    async def observe(self) -> set[JobId]:
        """Refresh the job table; returns the jobs whose workers have joined."""
        # Workers first: a job that ends after joining must not count as a failure.
        joined = await self.scheduler.joined_jobs()
        self.tracker.saw_workers(joined)
        table = await self.tracker.refresh()
        # This group's: the scheduler lists every group's workers.
        mine = {job.job_id for job in table} | self.tracker.awaited
        self.connected = {job_id for job_id in joined if job_id in mine}
        return self.connected

    def want_wire(self, wire: object, generation: int | None) -> None:
        """Take the target in the plugin's wire form; one this client cannot read stops acting."""
        try:
            target = target_from_wire(wire)
        except TargetFormatError as exc:
            if generation != self.generation or self.unreadable is None:
                logger.warning("The cluster's target cannot be read (%s); its jobs are left "
                               "as they are until a readable target is set", exc)  # fmt: skip
            self.want(None, generation)
            self.unreadable = str(exc)
            return
        self.want(target, generation)

    async def confirmed(self) -> bool:
        """Whether this client may act now: still the applier, of the current target."""
        if self.token is None:
            return True
        state = await self.scheduler.confirm(self.token, self.generation, self.group)
        if state.get("confirmed"):
            return True
        if self.group == DEFAULT_GROUP:
            self.want_wire(state.get("target"), state.get("generation"))
        else:
            mine = state.get("groups", {}).get(self.group, {})
            self.want_wire(mine.get("target"), mine.get("generation"))
        return False

    async def jobs_to_close(self, n: int, among: set[JobId]) -> list[JobId]:
        """The ``n`` jobs of this group whose workers' loss costs least, best first."""
        if self.group == DEFAULT_GROUP and not self.resources:
            return await self.scheduler.jobs_to_close(n)
        return await self.scheduler.jobs_to_close(n, sorted(among, key=lambda j: j.sort_key))

    async def _act(self, raise_errors: bool) -> None:
        if self.unreadable is not None or not await self.confirmed():
            return
        lost = [job.job_id for job in self.tracker.table if job.credentials_lost]
        if lost and self.target is not None:
            # Never started, so nothing is lost with them; the submission
            # that replaces them makes a new credentials job (credentials_job.py).
            await self.remove(lost, "its credentials job left the queue before it started")
        if self.adaptive is not None:
            await self.adaptive.adapt()
        elif isinstance(self.target, ScaleTarget):
            await self.scale_to(self.target.n, raise_errors)

    async def scale_to(self, n: int, raise_errors: bool = False) -> None:
        """Submit or remove jobs so that ``n`` are active (at most the target's cap)."""
        if isinstance(self.target, ScaleTarget):
            n = min(n, self.target.cap)
        active = self.tracker.table
        if n > len(active):
            await self._submit_more(n - len(active), raise_errors)
        elif n < len(active):
            victims = await self._choose_removals(active, len(active) - n)
            await self.remove(victims, f"scaled down to {n} workers")

    async def _submit_more(self, count: int, raise_errors: bool) -> None:
        if self.tracker.paused:
            return  # the view says why; a new target resumes
        if self.retry_in > 0 and not raise_errors:
            return
        try:
            job_ids = await self.workers.start(count)
        except HTCondorError as exc:
            self.submit_failures += 1
            delay = min(BACKOFF_FIRST * 2 ** (self.submit_failures - 1), BACKOFF_MAX)
            self.retry_at = self._clock.monotonic() + delay
            self.submit_error = str(exc)
            logger.warning("Submitting %d worker jobs failed (%s); next try in %.0f s",
                           count, exc, delay)  # fmt: skip
            if raise_errors:
                raise
            return
        self.submit_failures, self.submit_error, self.retry_at = 0, None, 0.0
        self.tracker.started(job_ids)

    async def _choose_removals(self, active: list[WorkerJob], count: int) -> list[JobId]:
        # Jobs whose worker has not joined hold no data: they go first.
        joined = self.tracker.joined
        waiting = [job for job in active if job.job_id not in joined]
        chosen = [job.job_id for job in removal_order(waiting)[:count]]
        if len(chosen) < count:
            active_ids = {job.job_id for job in active}
            joined_here = {job.job_id for job in active if job.job_id in joined}
            for job_id in await self.jobs_to_close(count - len(chosen), joined_here):
                if job_id in active_ids and job_id not in chosen and len(chosen) < count:
                    chosen.append(job_id)
            for job in removal_order(active):  # should the scheduler name too few
                if len(chosen) < count and job.job_id not in chosen:
                    chosen.append(job.job_id)
        return chosen

    async def remove(self, job_ids: list[JobId], reason: str) -> None:
        """Retire the jobs' workers through the scheduler, then remove the jobs."""
        joined = [job_id for job_id in job_ids if job_id in self.tracker.joined]
        if joined:
            await self.scheduler.retire(joined)
        self.tracker.stopping(job_ids)
        await self.workers.stop(list(job_ids), reason)
        self.tracker.stopped(job_ids)
