"""What an open cluster object keeps doing in the background: three loops.

- The **lease loop** (light): every few seconds one call to the scheduler
  plugin renews this client's lease, offers to apply the target and reads
  the target back. It waits for nothing else: no schedd call, no lock. If
  the scheduler cannot be reached, it asks the gateway whether the cluster
  still exists, and keeps trying while it does.
- The **job loop** (heavy): every ``watch-interval`` (or the adaptive
  interval) it has the reconciler look at the jobs and, if this client is
  the applier, act, and asks why jobs wait.
- The **schedd lease loop**: every lease / 3 seconds one edit renews the
  idle jobs' lease at the schedd, whatever the job loop is doing.

Every failure is logged and retried on the next round: no loop ends before
the cluster object closes or the cluster is found gone. While
``wait_for_workers()`` follows the job loop (``hurried``), it looks every
``HURRIED_PERIOD``, or pauses half a look between looks that take longer,
and the waiter reads what it saw. So a client has at most two calls per cluster
in a schedd's queue (a look's and a renewal's), a slow schedd is asked
less often rather than more, and a renewal never waits behind a waiter's
polls (a client waiting on five clusters let the jobs' lease lapse that
way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .clocks import SYSTEM_CLOCK
from .errors import HTCondorError
from .jobs import JobStatus
from .naming import LEASE_ATTRIBUTE
from .reconciler import GroupReconciler, Reconciler
from .scheduler_link import CALL_TIMEOUT, SchedulerLink
from .targets import DEFAULT_GROUP
from .versions import VersionCheck

logger = logging.getLogger(__name__)

# Seconds between the job loop's looks while a wait_for_workers() follows them.
HURRIED_PERIOD = 1.0
# A cluster whose scheduler is silent is taken for stopped only once the
# gateway has reported it not running this many times in a row, over at
# least this many seconds (GoneEvidence).
GONE_ANSWERS = 3
GONE_AFTER = 30.0


class GoneEvidence:
    """The gateway's answers that a cluster is not running, while its scheduler is silent.

    One answer proves nothing: a proxy that is restarting, or has just
    turned ready, answers "404 page not found" for every route it has not
    loaded, and a gateway that restarts may not know a cluster for a
    moment. Only ``GONE_ANSWERS`` such answers in a row, over at least
    ``GONE_AFTER`` seconds, make the cluster gone; any sign of life (the
    scheduler answering, the gateway reporting it running) starts over.
    """

    def __init__(self, clock: Any = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self.first: float | None = None
        self.answers = 0

    def clear(self) -> None:
        self.first, self.answers = None, 0

    def add(self) -> bool:
        """One more answer that the cluster is not running; True once that is proven."""
        now = self._clock.monotonic()
        if self.first is None:
            self.first = now
        self.answers += 1
        return self.answers >= GONE_ANSWERS and now - self.first >= GONE_AFTER


def unreachable_workers_message(cluster: str, unreachable: dict[str, str]) -> str:
    """What to tell the analyst of workers that joined but cannot be dialled back."""
    name, reason = next(iter(sorted(unreachable.items())))
    return (
        f"The scheduler of {cluster} cannot reach {len(unreachable)} of its workers at the "
        f"address they gave it ({name} at {reason}); results on them cannot be gathered and "
        "computations hang. Set gateway.htcondor.worker.host (or worker.contact-address, "
        "behind NAT) to an address of the execute nodes that the scheduler can reach."
    )


class Watcher:
    """Keeps one cluster object's leases, target and job table current.

    ``lease`` is this client's lease at the scheduler (0: it holds none);
    ``job_lease`` how far ahead it pushes the idle jobs' lease at the
    schedd (0: they have none). ``gateway_state()`` says what the gateway
    reports of the cluster (None: running or starting), and
    ``remove_jobs(reason)`` removes what is left of a cluster found gone.
    """

    def __init__(
        self,
        name: str,
        token: str,
        link: SchedulerLink,
        reconciler: Reconciler,
        lease: int,
        watch_interval: float,
        gateway_state: Callable[[], Awaitable[str | None]],
        remove_jobs: Callable[[str], Awaitable[None]],
        on_change: Callable[[], None] = lambda: None,
        job_lease: int | None = None,
        clock: Any = SYSTEM_CLOCK,
        make_group: Callable[[str, Any], GroupReconciler | None] | None = None,
    ) -> None:
        self.name = name
        self.token = token
        self.link = link
        self.reconciler = reconciler  # the default group's
        # Every worker group's reconciler; make_group(name, its settings on
        # the wire) builds one for a group first seen in a reply (added by
        # this client or another), None if it cannot be used here.
        self.groups: dict[str, GroupReconciler] = {DEFAULT_GROUP: reconciler}
        self.deleted_groups: set[str] = set()  # their jobs go; they are not listed
        self._make_group = make_group
        self.lease = lease  # seconds; 0: this client holds no lease
        self.job_lease = lease if job_lease is None else job_lease
        self.watch_interval = watch_interval
        self._gateway_state = gateway_state
        self._remove_jobs = remove_jobs
        self._on_change = on_change
        self._clock = clock
        self.period = min(lease / 3 if lease else math.inf, watch_interval)
        # How long the applier role outlives a silent client.
        self.apply_ttl = 3 * self.period + CALL_TIMEOUT
        self.is_applier = False
        self.holds_lease = False
        self.stopped_reason: str | None = None
        self.versions = VersionCheck(link.versions)
        self.gone = GoneEvidence(clock)
        # When the cluster last showed it lives (its scheduler answered, or
        # the gateway reported it running), on the injected monotonic clock.
        self.alive_at = clock.monotonic()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # The job loop's rounds, for waiters: how many began and ended, how
        # the last ended (None: it saw the jobs), and since when the
        # scheduler has not answered (None: it answered last time).
        self._rounds_begun = self._rounds_ended = 0
        self._round_ended = asyncio.Condition()
        self.round_error: Exception | None = None
        self.scheduler_silent_since: float | None = None
        self._hurried = 0
        # Workers the scheduler could not dial back (name -> address: why).
        self.unreachable: dict[str, str] = {}

    def start(self) -> None:
        self._tasks = [
            asyncio.ensure_future(self._lease_loop()),
            asyncio.ensure_future(self._job_loop()),
            asyncio.ensure_future(self._schedd_lease_loop()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # Cancelled again until it ends: Python 3.11's wait_for (the
            # scheduler and schedd calls) can swallow a cancellation that
            # arrives as its call completes, and the loop would go on.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def wake(self) -> None:
        self._wake.set()

    async def renew(self) -> dict[str, Any]:
        """One lease renewal; raises if the scheduler does not answer in time."""
        ttl = self.lease if self.lease else (0 if self.holds_lease else None)
        reply = await self.link.renew(self.token, ttl=ttl, apply_ttl=self.apply_ttl)
        self.lives()
        self.holds_lease = bool(self.lease)
        self.follow(reply)
        return reply

    def scheduler_silence(self) -> float | None:
        """Seconds the scheduler has not answered the job loop (None: it answered last time).

        Apart from ``alive_at``: a gateway that reports the cluster running
        keeps it alive, but says nothing of a scheduler too busy to answer.
        """
        if self.scheduler_silent_since is None:
            return None
        return self._clock.monotonic() - self.scheduler_silent_since

    def lives(self) -> None:
        """The cluster showed it lives: no evidence of its end stands."""
        self.alive_at = self._clock.monotonic()
        self.gone.clear()

    def follow(self, reply: dict[str, Any]) -> None:
        """Take the scheduler's view: the target, who applies it, which workers it cannot reach."""
        # "controller": the applier's name in the plugin of 2026.12.0.
        self.is_applier = reply.get("applier", reply.get("controller")) == self.token
        unreachable = dict(reply.get("unreachable") or {})
        if set(unreachable) - set(self.unreachable):
            logger.warning("%s", unreachable_workers_message(self.name, unreachable))
        self.unreachable = unreachable
        self._follow_group(self.reconciler, reply.get("target"), reply.get("generation"))
        for name, group in (reply.get("groups") or {}).items():
            if group.get("deleted"):
                self.deleted_groups.add(name)
            else:
                self.deleted_groups.discard(name)
            reconciler = self.groups.get(name)
            if reconciler is None and self._make_group is not None:
                reconciler = self._make_group(name, group.get("spec"))
                if reconciler is not None:
                    self.groups[name] = reconciler
            if reconciler is not None:
                self._follow_group(reconciler, group.get("target"), group.get("generation"))

    def _follow_group(self, reconciler: GroupReconciler, target: Any, generation: Any) -> None:
        if generation != reconciler.generation:
            reconciler.want_wire(target, generation)
            self._wake.set()

    async def release(self, detached_lease: int = 0) -> None:
        """Give up the lease and the applier role (closing without shutting down).

        The cluster runs on after this client. If this client held its
        lease, the queued jobs' lease becomes ``detached_lease`` (0: none):
        they stay that long, renewed by any client that opens the cluster,
        and leave the queue, credentials and all, if none does.
        """
        for attempt in (1, 2):
            try:
                await self.link.renew(self.token, ttl=0 if self.holds_lease else None)
                await self.link.release(self.token)
                break
            except Exception:
                # Nothing to release at a cluster stopped elsewhere (another
                # process shut it down): only a running one's lease matters.
                state = "unknown"
                with contextlib.suppress(Exception):
                    state = await asyncio.wait_for(self._gateway_state(), CALL_TIMEOUT) or "RUNNING"
                if state not in ("RUNNING", "unknown"):
                    logger.debug("%s is %s: no client lease to release", self.name, state)
                    break
                # A pooled connection the scheduler closed meanwhile (the CLI
                # right after a scale(): "broken pipe") fails once; a new one
                # then works, and the next client need not wait for the role.
                if attempt == 2:
                    logger.warning("Could not release the client lease of %s", self.name,
                                   exc_info=True)  # fmt: skip
        held, self.holds_lease, self.is_applier = self.holds_lease, False, False
        if not (held and self.lease):
            return
        tracker = self.reconciler.tracker
        try:
            constraint = (await tracker.selector()).every_job_constraint(
                JobStatus.IDLE, JobStatus.HELD
            )
            if detached_lease:
                await tracker.schedd.renew_lease(constraint, detached_lease)
            else:
                await tracker.schedd.edit(constraint, LEASE_ATTRIBUTE, "undefined")
        except HTCondorError:
            logger.warning("Could not hand the jobs' lease of %s on", self.name)

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
            await self._clock.sleep(self.period)

    async def _gone(self) -> bool:
        """Ask the gateway whether the cluster still runs; True once it is proven gone."""
        try:
            state = await self._gateway_state()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the gateway may be restarting too: ask again later
            logger.warning("Cannot ask the gateway about %s either: %r", self.name, exc)
            return False
        if state is None:
            self.lives()
            return False
        if not self.gone.add():
            logger.warning("The gateway reports %s %s (%d time(s) in %.0f s); not yet taken "
                           "as stopped", self.name, state, self.gone.answers,
                           self._clock.monotonic() - (self.gone.first or 0))  # fmt: skip
            return False
        reason = f"stopped elsewhere: the gateway reports it {state}"
        self.stopped_reason = reason
        for reconciler in self.groups.values():
            reconciler.want(None, None)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        logger.warning("Cluster %s was %s; removing its remaining jobs", self.name, reason)
        await self._attempt("Removing the remaining jobs of", lambda: self._remove_jobs(reason))
        return True

    async def _job_loop(self) -> None:
        while True:
            self._wake.clear()
            self._rounds_begun += 1
            began = self._clock.monotonic()
            self.round_error = await self._attempt("Watching the jobs of", self._look)
            self._rounds_ended += 1
            async with self._round_ended:
                self._round_ended.notify_all()
            self._on_change()
            period = self._job_period(self._clock.monotonic() - began)
            await self._sleep_unless_woken(period)

    async def _sleep_unless_woken(self, seconds: float) -> None:
        # Not wait_for(): in Python 3.11 it swallows a cancellation that
        # arrives as the wake-up does, and stop() then waits forever for
        # a job loop that goes on (seen: a close() right after a scale()).
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({woken}, timeout=seconds)
        finally:
            woken.cancel()

    async def _look(self) -> None:
        try:
            for reconciler in list(self.groups.values()):
                await reconciler.step(act=self.is_applier)
        except TimeoutError:
            if self.scheduler_silent_since is None:
                self.scheduler_silent_since = self._clock.monotonic()
            raise
        self.scheduler_silent_since = None
        self.lives()
        for reconciler in list(self.groups.values()):
            await reconciler.after_look()
        await self.versions.check(sum(r.joined_count for r in self.groups.values()))

    async def _attempt(self, what: str, action: Callable[[], Awaitable[None]]) -> Exception | None:
        try:
            await action()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("%s %s failed; retrying: %r", what, self.name, exc)
            return exc
        return None

    def _job_period(self, last_round: float) -> float:
        if self._hurried:
            # A look every HURRIED_PERIOD from start to start; once looks
            # take longer (a busy schedd), a pause of half a look between
            # them, so a slow schedd is asked less often.
            return max(HURRIED_PERIOD - last_round, last_round / 2)
        intervals = [r.adaptive.interval for r in self.groups.values() if r.adaptive is not None]
        return min(intervals) if intervals and self.is_applier else self.watch_interval

    @contextlib.asynccontextmanager
    async def hurried(self) -> AsyncIterator[None]:
        """Look every ``HURRIED_PERIOD`` while inside (a waiter follows the jobs)."""
        self._hurried += 1
        self._wake.set()
        try:
            yield
        finally:
            self._hurried -= 1

    async def fresh_look(self, timeout: float | None = None) -> None:
        """Return once a look that began after this call has ended, or after ``timeout`` s."""
        wanted = self._rounds_begun + 1
        async with self._round_ended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._round_ended.wait_for(lambda: self._rounds_ended >= wanted), timeout
                )

    async def next_look(self, timeout: float) -> None:
        """Return when the current look ends, or after ``timeout`` seconds."""
        async with self._round_ended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._round_ended.wait(), timeout)

    async def _schedd_lease_loop(self) -> None:
        # Idle and held jobs are removed by the schedd once their lease
        # attribute is past (submit.py); push it out while this client lives.
        # The credentials job is always idle, so there is always one to renew.
        # On its own schedule, not the job loop's: a slow look must not hold
        # it up, and a look that failed must not skip it. It follows this
        # client's own liveness, not the scheduler's latency: a scheduler
        # that answers slowly (a big graph being unpacked) or a proxy that
        # restarts must not cost the cluster its queued jobs. Only once the
        # cluster has shown no sign of life for a whole job lease (its
        # scheduler silent, its gateway silent or reporting it gone: the
        # gateway uninstalled) does it stop, so the jobs lapse.
        if not self.job_lease:
            return
        due = self._clock.monotonic()
        while True:
            if self._clock.monotonic() - self.alive_at < self.job_lease:
                await self._attempt("Renewing the jobs' lease of", self._renew_schedd_lease)
            # At a fixed rate: a renewal that waited in the queue does not
            # push the next one back.
            due = max(due + self.job_lease / 3, self._clock.monotonic())
            await self._clock.sleep(due - self._clock.monotonic())

    async def _renew_schedd_lease(self) -> None:
        tracker = self.reconciler.tracker
        selector = await tracker.selector()
        await tracker.schedd.renew_lease(
            selector.every_job_constraint(JobStatus.IDLE, JobStatus.HELD), self.job_lease
        )
