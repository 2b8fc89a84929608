"""A dask-gateway cluster whose workers are HTCondor jobs."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import html
import logging
import math
import numbers
import os
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

from dask_gateway import Gateway, GatewayCluster, GatewayClusterError
from dask_gateway.client import ClusterStatus

from .adaptive import HTCondorAdaptive
from .compat import ClosingOnceGateway
from .credentials import check_credentials, staged_credentials
from .errors import HTCondorError, SettingError
from .jobs import EndedJob, JobStatus, WorkerJob, count_by_status, removal_order
from .naming import (
    CLUSTER_ATTRIBUTE,
    LEASE_ATTRIBUTE,
    checked_cluster_name,
    job_id_of_worker,
    worker_name,
)
from .schedd import ScheddClient
from .settings import HTCondorSettings
from .submit import worker_job_description

logger = logging.getLogger(__name__)

# An idle job is matched against the pool's slots to explain why it waits
# once it has been idle this long (seconds); the answer is reused per
# submission for IDLE_REASON_TTL seconds.
IDLE_EXPLAIN_AFTER = 5.0
IDLE_REASON_TTL = 60.0
# Jobs that end on their own without a worker joining are replaced, but
# after this many in a row the cluster stops submitting until the next
# scale() or adapt(): a worker that cannot start would otherwise be
# resubmitted forever. wait_for_workers gives up at the same count.
FAILURES_BEFORE_PAUSE = 3
# Seconds to keep looking for a vanished job in the schedd's history.
HISTORY_WAIT = 60.0


class HTCGatewayCluster(GatewayCluster):
    """A ``GatewayCluster`` that scales by submitting and removing HTCondor jobs.

    The gateway runs only the scheduler; each worker is an HTCondor job that
    receives the cluster's TLS credentials as transferred files and joins
    the scheduler through the gateway's proxy.

    While the cluster object is open it watches its jobs: it replaces lost
    ones while a ``scale(n)`` target or ``adapt()`` holds, keeps a table of
    their states (shown in its repr and widget), and, if it would shut the
    cluster down on close, renews the cluster's client lease.

    Parameters are those of ``dask_gateway.GatewayCluster``, plus
    ``htcondor``: overrides of the ``gateway.htcondor`` config for this
    cluster, as a mapping with the same keys (e.g. ``{"worker": {"cores": 2}}``).
    """

    def __init__(
        self, *args: Any, htcondor: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        # Settings are checked before the gateway is asked for anything.
        self._prepare(htcondor)
        super().__init__(*args, **kwargs)

    @classmethod
    def from_name(  # type: ignore[override]
        cls,
        cluster_name: str,
        shutdown_on_close: bool = False,
        htcondor: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> HTCGatewayCluster:
        """Connect to a running cluster; its jobs are found by their ClassAd.

        ``kwargs`` are those of ``GatewayCluster.from_name`` (address, auth, ...).
        """
        self = object.__new__(cls)
        self._prepare(htcondor)
        self._init_internal(name=cluster_name, shutdown_on_close=shutdown_on_close, **kwargs)
        return self

    async def _start_internal(self) -> HTCGatewayCluster:
        # The base class builds a plain Gateway for its own use; it must
        # close once and explain refusals before the first request.
        if type(self.gateway) is Gateway:
            self.gateway.__class__ = ClosingOnceGateway
        return await super()._start_internal()

    def _prepare(self, htcondor: Mapping[str, Any] | None) -> None:
        self.htcondor_settings = HTCondorSettings.from_config(htcondor)
        self.schedd = ScheddClient(self.htcondor_settings.collector, self.htcondor_settings.schedd)
        self._scale_lock = asyncio.Lock()
        # Identifies this object to the scheduler plugin (lease, control).
        self._token = uuid.uuid4().hex
        self._target: int | None = None
        self._adaptive: HTCondorAdaptive | None = None
        self._watch_task: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._holds_lease = False
        # Why the cluster is known to be gone, once the watcher found out.
        self._stopped_reason: str | None = None
        self._schedd_lease_renewed = -math.inf
        self._job_table: list[WorkerJob] = []
        self._idle_since: dict[str, float] = {}
        self._idle_reasons: dict[str, tuple[float, str]] = {}  # ClusterId -> (when, why)
        self._last_seen: dict[str, float] = {}  # job id -> epoch second last seen queued
        self._removed_here: set[str] = set()
        self._joined_jobs: set[str] = set()  # jobs whose worker has joined the scheduler
        self._failures: list[EndedJob] = []  # newest last
        self._failures_in_a_row = 0

    def __repr__(self) -> str:
        counts = count_by_status(self._job_table)
        return (
            f"HTCGatewayCluster<{self.name}, status={self.status}, jobs: idle {counts['idle']}, "
            f"running {counts['running']}, held {counts['held']}>"
        )

    @property
    def worker_scheduler_address(self) -> str:
        """The address worker jobs dial: the configured one or the gateway's proxy."""
        configured = self.htcondor_settings.scheduler_address
        if configured:
            return configured
        return "tls://" + self.gateway.proxy_address.removeprefix("gateway://")

    @property
    def _job_constraint(self) -> str:
        return f'{CLUSTER_ATTRIBUTE} == "{checked_cluster_name(self.name)}"'

    @property
    def _lease(self) -> int:
        """Seconds of this object's client lease; 0 if it holds none."""
        return self.htcondor_settings.lease if self.shutdown_on_close else 0

    @property
    def user(self) -> str:
        """The gateway user the jobs are marked with."""
        username = getattr(self.gateway.auth, "username", None)
        return str(username or os.environ.get("JUPYTERHUB_USER") or getpass.getuser())

    # -- starting and stopping -------------------------------------------

    async def _start_async(self) -> None:
        await super()._start_async()
        if self.status == "running" and self._watch_task is None:
            try:
                reply = await self._renew_lease()
            except ValueError as exc:  # the scheduler has no such handler
                reply = {"error": str(exc)}
            # Every reply of the plugin names the controlling client; a
            # scheduler without the plugin answers nothing (or an error),
            # and would retire every HTCondor worker seconds after it joins.
            if "controller" not in reply:
                raise GatewayClusterError(
                    f"The scheduler of {self.name} does not load htcdaskgateway.scheduler_plugin; "
                    f"the gateway's scheduler_cmd must preload it (its reply: {reply or 'none'})"
                )
            self._watch_task = asyncio.ensure_future(self._watch())

    async def _stop_internal(self, shutdown: bool | None = None) -> None:
        if shutdown is None:
            shutdown = self.shutdown_on_close
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        if shutdown and self.name is not None:
            try:
                await self.schedd.remove(self._job_constraint, f"cluster {self.name} shut down")
            except HTCondorError:
                # The workers still exit on their own once the scheduler is
                # gone (death timeout); stopping the cluster matters more.
                logger.exception("Could not remove the worker jobs of %s", self.name)
        elif self._holds_lease:
            await self._release_lease()
        await super()._stop_internal(shutdown=shutdown)

    # -- scaling ------------------------------------------------------------

    def scale(self, n: int, **kwargs: Any) -> Any:
        """Scale the cluster to ``n`` worker jobs (idle, running or held) and hold it there.

        Scaling down removes idle jobs first, then retires the workers whose
        loss costs least through the scheduler (their data moves) and only
        then removes their jobs. Jobs that end or are removed behind the
        cluster's back are replaced while this object is open.
        """
        n = _worker_count(n, "scale()")
        return self.gateway.sync(self._scale, n, **kwargs)

    async def _scale(self, n: int) -> None:
        await self._take_control()
        self._failures_in_a_row = 0
        self._adaptive = None
        self._target = n
        async with self._scale_lock:
            await self._reconcile(n)

    def adapt(
        self,
        minimum: int | None = None,
        maximum: int | None = None,
        active: bool = True,
        *,
        interval: str | float = "3s",
        wait_count: int = 3,
        target_duration: str | float = "5s",
        **kwargs: Any,
    ) -> Any:
        """Scale between ``minimum`` and ``maximum`` jobs following the scheduler's load.

        The scheduler's adaptive target is checked every ``interval``; a
        worker is only removed after ``wait_count`` checks in a row found it
        unneeded. ``active=False`` stops adapting and keeps the current jobs.
        Adapting stops when the cluster is closed or shut down, or when
        another client calls ``scale()`` or ``adapt()`` on it.
        """
        adaptive = self.adaptive(
            minimum, maximum, interval=interval, wait_count=wait_count,
            target_duration=target_duration,
        )  # fmt: skip
        return self.gateway.sync(self._adapt, adaptive if active else None, **kwargs)

    def adaptive(
        self,
        minimum: int | None = None,
        maximum: int | None = None,
        *,
        interval: str | float = "3s",
        wait_count: int = 3,
        target_duration: str | float = "5s",
    ) -> HTCondorAdaptive:
        """The adaptive policy ``adapt()`` would follow, checked but not started."""
        low = 0 if minimum is None else _worker_count(minimum, "adapt(minimum=...)")
        high = math.inf if maximum is None else _worker_count(maximum, "adapt(maximum=...)")
        if high < low:
            raise ValueError(f"adapt() needs minimum <= maximum, got {low} > {high}")
        return HTCondorAdaptive(
            self, low, high, wait_count=wait_count, target_duration=target_duration,
            interval=interval,
        )  # fmt: skip

    async def _adapt(self, adaptive: HTCondorAdaptive | None) -> None:
        await self._take_control()
        self._failures_in_a_row = 0
        self._target = None
        self._adaptive = adaptive
        if adaptive is not None:
            async with self._scale_lock:
                await adaptive.adapt()
        self._wake.set()

    async def _take_control(self) -> None:
        if self._stopped_reason is not None:
            raise GatewayClusterError(
                f"Cluster {self.name} was {self._stopped_reason}; it cannot be scaled "
                "(start a new cluster)"
            )
        if self.scheduler_comm is None:
            raise GatewayClusterError(f"Cluster {self.name} is not running; it cannot be scaled")
        await self.scheduler_comm.htcdaskgateway_take_control(token=self._token)

    async def _reconcile(self, n: int, jobs: list[WorkerJob] | None = None) -> None:
        active = await self._active_jobs() if jobs is None else jobs
        if n > len(active):
            if self._failures_in_a_row >= FAILURES_BEFORE_PAUSE:
                return  # reported when the last failure was noticed
            await self._submit_workers(n - len(active))
        elif n < len(active):
            victims = await self._choose_removals(active, len(active) - n)
            await self._remove_jobs(victims, f"scaled down to {n} workers")

    async def _choose_removals(self, active: list[WorkerJob], count: int) -> list[str]:
        # Jobs whose worker has not joined hold no data: they go first.
        joined = await self._joined_workers()
        waiting = [job for job in active if worker_name(job.job_id) not in joined]
        chosen = [job.job_id for job in removal_order(waiting)[:count]]
        if len(chosen) < count:
            active_ids = {job.job_id for job in active}
            names = await self.scheduler_comm.htcdaskgateway_workers_to_close(n=count - len(chosen))
            for name in names:
                job_id = job_id_of_worker(name)
                if job_id in active_ids and job_id not in chosen and len(chosen) < count:
                    chosen.append(job_id)
            for job in removal_order(active):  # should the scheduler name too few
                if len(chosen) < count and job.job_id not in chosen:
                    chosen.append(job.job_id)
        return chosen

    async def _remove_jobs(self, job_ids: list[str], reason: str) -> None:
        """Retire the jobs' workers through the scheduler, then remove the jobs."""
        joined = await self._joined_workers()
        names = [worker_name(job_id) for job_id in job_ids if worker_name(job_id) in joined]
        if names:
            await self.scheduler_comm.retire_workers(names=names, close_workers=True, remove=True)
        self._removed_here.update(job_ids)
        await self.schedd.remove(list(job_ids), reason)

    async def _submit_workers(self, count: int) -> list[str]:
        if self.security is None:
            raise HTCondorError(f"Cluster {self.name} is not running; cannot add workers")
        cert, key = self.security.tls_cert, self.security.tls_key
        check_credentials(cert, key)
        lease = self._lease
        with staged_credentials(cert, key) as files:
            description = worker_job_description(
                self.htcondor_settings, self.name, self.worker_scheduler_address, files,
                user=self.user, lease_expiry=int(time.time()) + lease if lease else None,
            )  # fmt: skip
            job_ids = await self.schedd.submit(description, count)
        logger.info("Submitted %d worker jobs for %s: %s", count, self.name, job_ids)
        # Watched from now on, so a job that fails before the next look is noticed.
        self._last_seen.update(dict.fromkeys(job_ids, time.time()))
        return job_ids

    # -- watching the jobs -------------------------------------------------

    async def _watch(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except OSError:
                if await self._stopped_elsewhere():
                    return
                logger.warning("Cannot reach the scheduler of %s", self.name, exc_info=True)
            except Exception:
                logger.warning("Checking the jobs of %s failed", self.name, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._watch_period())

    def _watch_period(self) -> float:
        periods = [self.htcondor_settings.watch_interval]
        if self._adaptive is not None:
            periods.append(self._adaptive.interval)
        if self._lease:
            periods.append(self._lease / 3)
        return min(periods)

    async def _watch_once(self) -> None:
        reply = await self._renew_lease()
        if reply.get("controller") not in (None, self._token) and (
            self._target is not None or self._adaptive is not None
        ):
            logger.info("%s: another client now sets its size; this one stops holding it", self)
            self._target, self._adaptive = None, None
        # One lock from query to action: a scale() in between would make the
        # job list stale and the jobs it submitted be submitted again.
        async with self._scale_lock:
            await self._joined_workers()  # which jobs' workers joined, before any job ends
            active = await self._active_jobs()
            await self._explain_idle_jobs(active)
            self._refresh_widget()
            await self._renew_schedd_lease(active)
            if self._adaptive is not None:
                await self._adaptive.adapt()
            elif self._target is not None:
                await self._reconcile(self._target, active)

    async def _stopped_elsewhere(self) -> bool:
        # The scheduler is unreachable: if the gateway says the cluster is
        # gone (shut down by another client, its lease lapsed, the gateway's
        # idle timeout), remove what is left of its jobs and stop watching.
        try:
            report = await self.gateway._cluster_report(self.name)
        except ValueError:
            report = None
        if report is not None and report.status in (ClusterStatus.PENDING, ClusterStatus.RUNNING):
            return False
        state = "gone" if report is None else report.status.name
        self._stopped_reason = f"stopped elsewhere: the gateway reports it {state}"
        logger.warning(
            "Cluster %s was %s; removing its remaining jobs", self.name, self._stopped_reason
        )
        self._target, self._adaptive = None, None
        await self.schedd.remove(self._job_constraint, f"cluster {self.name} stopped")
        return True

    async def _renew_lease(self) -> dict[str, Any]:
        lease = self._lease
        ttl = lease if lease else (0 if self._holds_lease else None)
        reply = await self.scheduler_comm.htcdaskgateway_renew(token=self._token, ttl=ttl)
        self._holds_lease = bool(lease)
        return reply or {}

    async def _renew_schedd_lease(self, active: list[WorkerJob]) -> None:
        lease = self._lease
        idle = any(job.status is JobStatus.IDLE for job in active)
        if not lease or not idle or time.monotonic() - self._schedd_lease_renewed < lease / 3:
            return
        expiry = int(time.time()) + lease
        await self.schedd.edit(
            f"{self._job_constraint} && JobStatus == 1", LEASE_ATTRIBUTE, str(expiry)
        )
        self._schedd_lease_renewed = time.monotonic()

    async def _release_lease(self) -> None:
        # Closing without shutting down leaves the cluster to run on: the
        # lease must not lapse behind the client's back.
        try:
            await self.scheduler_comm.htcdaskgateway_renew(token=self._token, ttl=0)
            await self.schedd.edit(self._job_constraint, LEASE_ATTRIBUTE, "undefined")
        except Exception:
            logger.warning("Could not release the client lease of %s", self.name, exc_info=True)
        self._holds_lease = False

    async def _active_jobs(self) -> list[WorkerJob]:
        jobs = [job for job in await self._jobs() if job.status.is_active]
        self._job_table = jobs
        await self._notice_ended_jobs(jobs)
        return jobs

    async def _notice_ended_jobs(self, active: list[WorkerJob]) -> None:
        """Find out how jobs that left the queue unasked ended; count failures."""
        now = time.time()
        queued = {job.job_id for job in active}
        self._last_seen.update(dict.fromkeys(queued, now))
        gone = []
        for job_id in [job_id for job_id in self._last_seen if job_id not in queued]:
            if job_id in self._removed_here:  # this object removed it: nothing to learn
                self._removed_here.discard(job_id)
                del self._last_seen[job_id]
            else:
                gone.append(job_id)
        if not gone:
            return
        # The history scan stops at jobs that left well before these were last seen.
        not_before = int(min(self._last_seen[job_id] for job_id in gone) - HISTORY_WAIT)
        try:
            ended = await self.schedd.ended(gone, not_before)
        except HTCondorError:
            logger.warning("Could not learn how jobs %s of %s ended", gone, self.name)
            ended = []
        for job in ended:
            if self._last_seen.pop(job.job_id, None) is None:
                continue  # another task of this object got there first
            if job.failed(worker_joined=job.job_id in self._joined_jobs):
                self._record_failure(job)
        for job_id in gone:  # never recorded (history off, or another schedd)
            if now - self._last_seen.get(job_id, now) > HISTORY_WAIT:
                self._last_seen.pop(job_id, None)

    def _record_failure(self, job: EndedJob) -> None:
        self._failures = [*self._failures[-(FAILURES_BEFORE_PAUSE * 3) :], job]
        self._failures_in_a_row += 1
        logger.warning("%s: %s", self.name, self._failure_message(job))
        if self._failures_in_a_row == FAILURES_BEFORE_PAUSE and (
            self._target is not None or self._adaptive is not None
        ):
            logger.error(
                "%s: %d worker jobs in a row ended without serving; no more are submitted "
                "until scale() or adapt() is called again",
                self.name,
                self._failures_in_a_row,
            )

    def _failure_message(self, job: EndedJob) -> str:
        joined = job.job_id in self._joined_jobs
        death_timeout = self.htcondor_settings.worker.death_timeout
        if joined:
            why = "its worker had joined and then crashed"
        elif job.run_seconds is not None and job.run_seconds >= 0.8 * death_timeout:
            why = (
                f"its worker could not reach the scheduler at {self.worker_scheduler_address} "
                f"within the death timeout ({death_timeout:g} s): check "
                "gateway.htcondor.scheduler-address and that execute nodes can reach the "
                "gateway's proxy"
            )
        else:
            why = (
                "its worker stopped before joining: check that the worker environment "
                "(gateway.htcondor.worker.executable, image) can run htcdaskgateway-worker "
                "with this cluster's dask version"
            )
        return f"{job.describe()}; {why}"

    async def _jobs(self) -> list[WorkerJob]:
        return await self.schedd.jobs(self._job_constraint)

    def worker_jobs(self) -> Any:
        """The cluster's jobs still in the HTCondor queue."""
        return self.gateway.sync(self._jobs)

    async def _joined_workers(self) -> set[str]:
        # Asked of the scheduler itself: the worker-status subscription that
        # fills scheduler_info is not a reliable count once clients attach.
        identity = await self.scheduler_comm.identity(n_workers=-1)
        names = {str(info.get("name")) for info in identity.get("workers", {}).values()}
        joined_jobs = {job_id_of_worker(name) for name in names} - {None}
        if joined_jobs - self._joined_jobs:
            self._failures_in_a_row = 0  # a worker joined: the jobs can work
            self._joined_jobs |= joined_jobs  # type: ignore[arg-type]
        return names

    # -- visibility ------------------------------------------------------------

    async def _explain_idle_jobs(self, active: list[WorkerJob]) -> None:
        now = time.monotonic()
        idle = [job for job in active if job.status is JobStatus.IDLE]
        self._idle_since = {job.job_id: self._idle_since.get(job.job_id, now) for job in idle}
        for job in idle:
            submission = job.job_id.split(".")[0]
            known = self._idle_reasons.get(submission)
            if now - self._idle_since[job.job_id] < IDLE_EXPLAIN_AFTER:
                continue
            if known is None or now - known[0] > IDLE_REASON_TTL:
                reason = await self.schedd.explain_idle(job.job_id)
                if reason:
                    self._idle_reasons[submission] = (now, reason)

    def _jobs_state(self, jobs: list[WorkerJob]) -> str:
        counts = count_by_status(jobs)
        idle_reasons = sorted({self._reason(j) for j in jobs if j.status is JobStatus.IDLE} - {""})
        why = f" ({'; '.join(idle_reasons)})" if idle_reasons else ""
        return (
            f"jobs idle {counts['idle']}{why}, running {counts['running']}, held {counts['held']}"
        )

    def _reason(self, job: WorkerJob) -> str:
        if job.status is JobStatus.HELD:
            return job.hold_reason or ""
        if job.status is JobStatus.IDLE:
            known = self._idle_reasons.get(job.job_id.split(".")[0])
            return known[1] if known else (job.last_rejection or "")
        return ""

    def job_table(self) -> list[dict[str, str]]:
        """The cluster's jobs as last seen: id, state and why it is idle or held."""
        return [
            {"job": job.job_id, "status": job.status.name.lower(), "reason": self._reason(job)}
            for job in self._job_table
        ]

    def _job_table_html(self) -> str:
        counts = count_by_status(self._job_table)
        rows = "".join(
            f"<tr><td>{row['job']}</td><td>{row['status']}</td>"
            f"<td>{html.escape(row['reason'])}</td></tr>"
            for row in self.job_table()
            if row["status"] != "running"
        )
        failing = ""
        if self._failures_in_a_row:
            failing = (
                f"<p><b>{self._failures_in_a_row} job(s) in a row ended without serving:</b> "
                f"{html.escape(self._failure_message(self._failures[-1]))}</p>"
            )
        return (
            f"<p><b>HTCondor jobs:</b> idle {counts['idle']}, running {counts['running']}, "
            f"held {counts['held']}</p>"
            + (
                f"<table><tr><th>job</th><th>state</th><th>reason</th></tr>{rows}</table>"
                if rows
                else ""
            )
            + failing
        )

    def _widget_status(self) -> str:
        return (super()._widget_status() or "") + self._job_table_html()

    def _repr_html_(self) -> str:
        return super()._repr_html_() + self._job_table_html()

    def _refresh_widget(self) -> None:
        widget = getattr(self, "_status_widget", None)
        if widget is not None:
            widget.value = self._widget_status()

    def wait_for_workers(self, n: int, timeout: float | None = None) -> Any:
        """Wait until ``n`` workers have joined, showing the jobs' progress.

        Stops early with an ``HTCondorError`` carrying the hold reason when
        one of the cluster's jobs is held (it would never start), or how the
        jobs ended when they keep ending without their worker joining (as
        many as ``n``, at most 3 in a row), and with a ``TimeoutError``
        describing the jobs, and why idle ones wait, after ``timeout``
        seconds. While the schedd cannot be reached it keeps waiting (a
        restarting schedd comes back) and shows why.
        """
        n = _worker_count(n, "wait_for_workers()")
        return self.gateway.sync(self._wait_for_workers, n, timeout)

    async def _wait_for_workers(self, n: int, timeout: float | None) -> None:
        if self.scheduler_comm is None:
            raise GatewayClusterError(f"Cluster {self.name} is not running; no workers can join")
        deadline = None if timeout is None else time.monotonic() + timeout
        progress = _Progress(f"{self.name}: waiting for {n} workers")
        try:
            while True:
                joined = len(await self._joined_workers())
                try:
                    jobs = await self._active_jobs()
                    await self._explain_idle_jobs(jobs)
                except HTCondorError as exc:
                    # The schedd may come back before the timeout (a restart):
                    # keep waiting, and say why nothing moves.
                    jobs, state = [], f"HTCondor unavailable: {exc}"
                else:
                    state = self._jobs_state(jobs)
                failures = self._failures_in_a_row
                if failures:
                    state += f"; {failures} ended without serving ({self._failures[-1].describe()})"
                progress.show(f"{joined}/{n} workers; {state}")
                if joined >= n:
                    return
                held = [job for job in jobs if job.is_stuck]
                if held:
                    raise HTCondorError(
                        f"{len(held)} worker job(s) of {self.name} are held and will not start; "
                        f"job {held[0].job_id}: {held[0].hold_reason}"
                    )
                if failures and failures >= min(n, FAILURES_BEFORE_PAUSE):
                    raise HTCondorError(
                        f"{failures} worker job(s) of {self.name} in a row ended without "
                        f"serving; {self._failure_message(self._failures[-1])}"
                    )
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{joined} of {n} workers joined {self.name} in {timeout} s; {state}"
                    )
                await asyncio.sleep(1)
        finally:
            progress.done()


class _Progress:
    """One status line, rewritten in place on a terminal, on stderr."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.last = ""
        self.interactive = sys.stderr.isatty()

    def show(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.interactive:
            sys.stderr.write(f"\r{self.prefix}: {text}\x1b[K")
        else:
            sys.stderr.write(f"{self.prefix}: {text}\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.interactive and self.last:
            sys.stderr.write("\n")


def _worker_count(n: object, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise SettingError(
            f"{what} takes a whole number of workers, got {n!r} ({type(n).__name__})"
        )
    if n < 0:
        raise SettingError(f"{what} takes a number of workers >= 0, got {n}")
    return int(n)
