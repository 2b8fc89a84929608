"""A dask-gateway cluster whose workers are HTCondor jobs.

This module wires the parts together and keeps dask-gateway's public API:

- ``reconciler``: the target, compared with the jobs, acted on;
- ``jobs``: job identity, the one constraint builder, the job table;
- ``watch``: the lease loop and the job loop of an open cluster object;
- ``scheduler_link`` / ``schedd``: the two outside systems, with time limits;
- ``view``: repr, widget, job table, progress line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import numbers
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

from dask.utils import parse_timedelta
from dask_gateway import GatewayCluster, GatewayClusterError
from dask_gateway.client import ClusterStatus

from . import view
from .compat import ClosingOnceGateway, trust_api_ca
from .credentials_job import CredentialsJob
from .errors import HTCondorError, SettingError
from .jobs import FAILURES_BEFORE_PAUSE, JobId, JobSelector, JobTracker, WorkerJob, select_jobs
from .naming import checked_cluster_name
from .reconciler import Reconciler
from .schedd import ScheddMember
from .schedd_pool import ScheddPool
from .scheduler_link import SchedulerLink
from .settings import HTCondorSettings
from .submit import credentials_job_description, worker_job_description
from .targets import MIN_ADAPT_INTERVAL, AdaptTarget, ScaleTarget, Target, target_to_wire
from .watch import Watcher, unreachable_workers_message

# Seconds wait_for_workers() waits on a scheduler that does not answer
# before it reports the cluster lost.
SCHEDULER_SILENCE_LIMIT = 60.0
# Seconds between wait_for_workers()'s progress lines when no look ends sooner.
PROGRESS_PERIOD = 1.0

logger = logging.getLogger(__name__)


class HTCGatewayCluster(GatewayCluster):
    """A ``GatewayCluster`` that scales by submitting and removing HTCondor jobs.

    The gateway runs only the scheduler; each worker is an HTCondor job that
    receives the cluster's TLS credentials as transferred files and joins
    the scheduler through the gateway's proxy.

    The cluster's wanted size (a ``scale(n)`` or ``adapt()`` target) is kept
    by its scheduler. While this object is open it watches the cluster's
    jobs: it keeps their table (shown in its repr and widget), applies the
    target when it is the client doing so (replacing lost jobs), and, if it
    would shut the cluster down on close, renews the cluster's client lease.

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
        checked_cluster_name(cluster_name)
        self = object.__new__(cls)
        self._prepare(htcondor)
        self._init_internal(name=cluster_name, shutdown_on_close=shutdown_on_close, **kwargs)
        return self

    def _init_internal(
        self,
        address: str | None = None,
        proxy_address: str | None = None,
        public_address: str | None = None,
        auth: Any = None,
        cluster_options: Any = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        shutdown_on_close: bool | None = None,
        asynchronous: bool = False,
        loop: Any = None,
        name: str | None = None,
    ) -> None:
        # GatewayCluster's own _init_internal builds a plain Gateway, and
        # dask-gateway has no hook to choose its class. This cluster's
        # gateway must close once and explain refusals (ClosingOnceGateway)
        # and trust the API's CA before its first request, so the state
        # GatewayCluster keeps is set here, with that gateway.
        self.status = "starting" if name is not None else "created"
        self.shutdown_on_close = shutdown_on_close
        self._instances.add(self)
        self.gateway = ClosingOnceGateway(
            address=address, proxy_address=proxy_address, public_address=public_address,
            auth=auth, asynchronous=asynchronous, loop=loop,
        )  # fmt: skip
        if self.htcondor_settings.api_ca:
            trust_api_ca(self.gateway, self.htcondor_settings.api_ca)
        self.scheduler_info: dict[str, Any] = {}
        self.scheduler_comm = None
        self._watch_worker_status_task = None
        self._clients = weakref.WeakSet()
        self._cluster_options = cluster_options
        self._cluster_kwargs = dict(cluster_kwargs or {})
        self._start_task = None
        self._stop_task = None
        self.name = name
        self.scheduler_address = None
        self.dashboard_link = None
        self.security = None
        if not self.asynchronous:
            self.gateway.sync(self._start_internal)

    def _prepare(self, htcondor: Mapping[str, Any] | None) -> None:
        settings = HTCondorSettings.from_config(htcondor)
        self.htcondor_settings = settings
        self.schedd = ScheddPool(
            settings.collector, settings.schedd, settings.schedd_constraint,
            settings.schedd_timeout,
        )  # fmt: skip
        # Identifies this object to the scheduler plugin (lease, applier).
        self._token = uuid.uuid4().hex
        self._watcher: Watcher | None = None
        self._reconciler: Reconciler | None = None
        # The credentials job on each schedd this cluster submits to.
        self._credentials: dict[str | None, CredentialsJob] = {}
        self._preparing: asyncio.Future[None] | None = None

    # -- what the parts need of the cluster ----------------------------------

    @property
    def worker_scheduler_address(self) -> str:
        """The address worker jobs dial: the configured one or the gateway's proxy."""
        configured = self.htcondor_settings.scheduler_address
        if configured:
            return configured
        return "tls://" + self.gateway.proxy_address.removeprefix("gateway://")

    @property
    def gateway_id(self) -> str:
        """The name this cluster's jobs carry for their gateway (``gateway-id``)."""
        return gateway_id(self.htcondor_settings, self.gateway.address)

    @property
    def _lease(self) -> int:
        """Seconds of this object's client lease; 0 if it holds none."""
        return self.htcondor_settings.lease if self.shutdown_on_close else 0

    @property
    def _job_lease(self) -> int:
        """Seconds the idle jobs' lease at the schedd runs ahead; 0: they have none.

        This object's client lease while it holds one; otherwise (a cluster
        that outlives its clients) ``detached-lease``, so that the queued
        jobs and the credentials in the spool of a cluster nobody watches
        leave the queue in bounded time.
        """
        return self._lease or self.htcondor_settings.detached_lease

    @property
    def user(self) -> str:
        """The gateway user the jobs are marked with."""
        return self.gateway.user

    @property
    def _tracker(self) -> JobTracker | None:
        return None if self._reconciler is None else self._reconciler.tracker

    async def _selector(self) -> JobSelector:
        """This cluster's jobs, of this user (as the schedd knows them) and gateway."""
        return await select_jobs(self.schedd, self.gateway_id, self.name, self.user)

    def _credentials_job_description(self, files: Any) -> dict[str, str]:
        return credentials_job_description(
            self.htcondor_settings, self.name, files,
            user=self.user, gateway_id=self.gateway_id, lease=self._job_lease or None,
        )  # fmt: skip

    def _credentials_on(self, schedd: ScheddMember) -> CredentialsJob:
        credentials = self._credentials.get(schedd.name)
        if credentials is None:
            credentials = CredentialsJob(schedd, self._selector, self._credentials_job_description)
            self._credentials[schedd.name] = credentials
        if self.security is not None:
            credentials.tls = (self.security.tls_cert, self.security.tls_key)
        return credentials

    async def _prepare_credentials(self) -> None:
        # Spooled on the schedd the first scale() most likely picks, while
        # the caller gets to it (the files are in place ~10 ms later).
        with contextlib.suppress(HTCondorError):
            self._credentials_on((await self.schedd.submit_order())[0]).prepare()

    async def _submit_workers(self, count: int) -> list[JobId]:
        if self.security is None:
            raise HTCondorError(f"Cluster {self.name} is not running; cannot add workers")

        async def describe(schedd: ScheddMember) -> dict[str, str]:
            return worker_job_description(
                self.htcondor_settings, self.name, self.worker_scheduler_address,
                await self._credentials_on(schedd).directory(),
                user=self.user, gateway_id=self.gateway_id, lease=self._job_lease or None,
                schedd=schedd.name,
            )  # fmt: skip

        job_ids = await self.schedd.submit(describe, count)
        logger.info("Submitted %d worker jobs for %s: %s", count, self.name, job_ids)
        return job_ids

    async def _settle_credentials(self) -> None:
        """Let credentials jobs on their way be queued, so that removals find them."""
        if self._preparing is not None:
            with contextlib.suppress(HTCondorError):
                await self._preparing
        for credentials in self._credentials.values():
            await credentials.settle()

    async def _gateway_state(self) -> str | None:
        # The scheduler is unreachable: does the gateway still run the cluster?
        # (Shut down by another client, its lease lapsed, the gateway's idle
        # timeout, its pod deleted.) The watcher decides when the answers
        # prove it gone (GoneEvidence).
        try:
            report = await self.gateway._cluster_report(self.name)
        except ValueError:  # 404: the gateway, or a proxy not yet routing to it
            return "gone"
        if report.status in (ClusterStatus.PENDING, ClusterStatus.RUNNING):
            return None
        return report.status.name

    async def _remove_remaining_jobs(self, reason: str) -> None:
        try:
            await self._remove_all_jobs(f"cluster {self.name} {reason}")
        except HTCondorError:
            # Gone all the same; its workers exit without their scheduler and
            # the jobs' lease removes those that never started.
            logger.exception("Could not remove the remaining jobs of %s", self.name)

    async def _remove_all_jobs(self, reason: str) -> None:
        """Remove the cluster's worker jobs and its credentials job."""
        if self.name is None:
            return
        await self._settle_credentials()
        await self.schedd.remove((await self._selector()).every_job_constraint(), reason)

    # -- starting and stopping -------------------------------------------

    async def _start_async(self) -> None:
        new = self.status == "created"
        await super()._start_async()
        if self.status != "running" or self._watcher is not None:
            return
        if new and self.security is not None:
            self._preparing = asyncio.ensure_future(self._prepare_credentials())
        settings = self.htcondor_settings
        link = SchedulerLink(self.scheduler_comm)
        tracker = JobTracker(self.schedd, self.gateway_id, self.name, user=self.user)
        self._reconciler = Reconciler(tracker, link, self._submit_workers, self._token)
        watcher = Watcher(
            self.name, self._token, link, self._reconciler, self._lease,
            settings.watch_interval, self._gateway_state, self._remove_remaining_jobs,
            self._refresh_widget, job_lease=self._job_lease,
        )  # fmt: skip
        try:
            reply = await watcher.renew()
        except (ValueError, TypeError) as exc:  # the scheduler has no such handler
            reply = {"error": str(exc)}
        # Every reply of the plugin names the applier; a scheduler without
        # the plugin answers nothing (or an error), and would retire every
        # HTCondor worker seconds after it joins.
        if "controller" not in reply:
            raise GatewayClusterError(
                f"The scheduler of {self.name} does not load htcdaskgateway.scheduler_plugin; "
                f"the gateway's scheduler_cmd must preload it (its reply: {reply or 'none'})"
            )
        self._watcher = watcher
        watcher.start()

    async def _stop_internal(self, shutdown: bool | None = None) -> None:
        if shutdown is None:
            shutdown = self.shutdown_on_close
        if shutdown and self.name is not None:
            await self._close_others_here("shut down by another object of this process")
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.stop()
        if shutdown and self.name is not None:
            try:
                await self._remove_all_jobs(f"cluster {self.name} shut down")
            except HTCondorError:
                # The workers still exit on their own once the scheduler is
                # gone (death timeout); stopping the cluster matters more.
                logger.exception("Could not remove the worker jobs of %s", self.name)
        elif watcher is not None and watcher.stopped_reason is None:
            await self._settle_credentials()
            await watcher.release(self.htcondor_settings.detached_lease)
        await super()._stop_internal(shutdown=shutdown)

    async def _close_others_here(self, reason: str) -> None:
        """Close this process's other open objects of this cluster: it is going away.

        Their watchers would otherwise find its scheduler gone (warnings),
        and their close() at exit would try to release a lease at it.
        """
        here = asyncio.get_running_loop()
        for other in list(self._instances):
            if (
                other is self
                or not isinstance(other, HTCGatewayCluster)
                or other.name != self.name
                or other.gateway.address != self.gateway.address
                or other.status == "closed"
            ):
                continue
            if other._watcher is not None and other._watcher.stopped_reason is None:
                other._watcher.stopped_reason = reason
            # Each synchronous object runs on its gateway's event loop.
            there = other.gateway.loop.asyncio_loop
            stop = other._stop_internal(shutdown=False)
            if there is here:
                await stop
            else:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(stop, there))

    # -- scaling ------------------------------------------------------------

    def scale(self, n: int, **kwargs: Any) -> Any:
        """Scale the cluster to ``n`` worker jobs (idle, running or held) and hold it there.

        The target is kept by the cluster's scheduler: whichever client has
        the cluster open keeps it, replacing jobs that end or are removed
        behind its back. Scaling down removes idle jobs first, then retires
        the workers whose loss costs least through the scheduler (their
        data moves) and only then removes their jobs.
        """
        return self.gateway.sync(self._set_target, self.scale_target(n, "scale()"), **kwargs)

    def scale_target(self, n: object, what: str) -> ScaleTarget:
        """The target ``scale(n)`` sets, checked against ``max-jobs``, which it carries."""
        return ScaleTarget(self._job_count(n, what), cap=self.htcondor_settings.max_jobs)

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
        unneeded. No ``maximum``: ``gateway.htcondor.max-jobs``.
        ``active=False`` stops adapting and keeps the current jobs. The
        policy is kept by the scheduler and applied by an open client of the
        cluster, until another ``scale()`` or ``adapt()`` replaces it.
        """
        target = self.adaptive(
            minimum, maximum, interval=interval, wait_count=wait_count,
            target_duration=target_duration,
        )  # fmt: skip
        return self.gateway.sync(self._set_target, target if active else None, **kwargs)

    def adaptive(
        self,
        minimum: int | None = None,
        maximum: int | None = None,
        *,
        interval: str | float = "3s",
        wait_count: int = 3,
        target_duration: str | float = "5s",
    ) -> AdaptTarget:
        """The adaptive policy ``adapt()`` would set, checked but not set."""
        max_jobs = self.htcondor_settings.max_jobs
        low = 0 if minimum is None else self._job_count(minimum, "adapt(minimum=...)")
        high = max_jobs if maximum is None else self._job_count(maximum, "adapt(maximum=...)")
        if high < low:
            raise SettingError(f"adapt() needs minimum <= maximum, got {low} > {high}")
        if isinstance(wait_count, bool) or not isinstance(wait_count, int) or wait_count < 1:
            raise SettingError(
                f"adapt(wait_count=...) takes a whole number >= 1, got {wait_count!r}"
            )
        every = _seconds(interval, "adapt(interval=...)")
        if every < MIN_ADAPT_INTERVAL:
            # Each interval is a look at the scheduler and the schedd.
            raise SettingError(
                f"adapt(interval=...) takes at least {MIN_ADAPT_INTERVAL:g} s, got {interval!r}"
            )
        duration = _seconds(target_duration, "adapt(target_duration=...)")
        if duration <= 0:
            # The scheduler divides its load by it.
            raise SettingError(
                f"adapt(target_duration=...) takes more than 0 s, got {target_duration!r}"
            )
        return AdaptTarget(
            minimum=low, maximum=high, interval=every, wait_count=wait_count,
            target_duration=duration,
        )  # fmt: skip

    def _job_count(self, n: object, what: str) -> int:
        n = _worker_count(n, what)
        max_jobs = self.htcondor_settings.max_jobs
        if n > max_jobs:
            raise SettingError(
                f"{what} asks for {n} worker jobs; gateway.htcondor.max-jobs allows {max_jobs} "
                "per cluster (raise it in your dask config if the pool can take more)"
            )
        return n

    async def _set_target(self, target: Target | None) -> None:
        if self._watcher is not None and self._watcher.stopped_reason is not None:
            raise GatewayClusterError(
                f"Cluster {self.name} was {self._watcher.stopped_reason}; it cannot be scaled "
                "(start a new cluster)"
            )
        if self._watcher is None or self._reconciler is None:
            raise GatewayClusterError(f"Cluster {self.name} is not running; it cannot be scaled")
        watcher = self._watcher
        reply = await watcher.link.set_target(
            self._token, target_to_wire(target), watcher.apply_ttl
        )
        watcher.follow(reply)
        if target is not None:
            await self._reconciler.step(raise_errors=True)
        watcher.wake()

    # -- looking at the jobs -------------------------------------------------

    def worker_jobs(self) -> Any:
        """The cluster's jobs still in the HTCondor queue."""
        return self.gateway.sync(self._worker_jobs)

    async def _worker_jobs(self) -> list[WorkerJob]:
        if self._tracker is None:
            raise GatewayClusterError(f"Cluster {self.name} is not running")
        return await self._tracker.refresh()

    def job_table(self) -> list[dict[str, str]]:
        """The cluster's jobs as last seen: id, state and why it is idle or held."""
        return [] if self._tracker is None else view.job_rows(self._tracker)

    def _failure_message(self) -> str | None:
        tracker = self._tracker
        if tracker is None or not tracker.failures_in_a_row or not tracker.failures:
            return None
        last = tracker.failures[-1]
        return view.failure_message(
            last, last.job_id in tracker.joined, self.worker_scheduler_address,
            self.htcondor_settings.worker.death_timeout,
        )  # fmt: skip

    def __repr__(self) -> str:
        if self._tracker is None:
            return f"HTCGatewayCluster<{self.name}, status={self.status}>"
        return view.short_repr(self.name, self.status, self._tracker)

    def _jobs_html(self) -> str:
        if self._reconciler is None:
            return ""
        return view.jobs_html(self._reconciler.tracker, self._reconciler, self._failure_message())

    def _widget_status(self) -> str:
        return (super()._widget_status() or "") + self._jobs_html()

    def _repr_html_(self) -> str:
        return super()._repr_html_() + self._jobs_html()

    def _ipython_display_(self, **kwargs: Any) -> None:
        # dask-gateway shows only the widget when ipywidgets is installed;
        # a notebook saved, rendered or viewed without the widget manager
        # (nbconvert, GitHub, a kernel restarted) then shows "VBox(...)".
        # The same bundle also carries the HTML, job table included.
        widget = self._widget()
        if widget is None:
            super()._ipython_display_(**kwargs)
            return
        from IPython.display import display

        bundle = dict(widget._repr_mimebundle_(**kwargs) or {})
        bundle.setdefault("text/html", self._repr_html_())
        display(bundle, raw=True)

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
        if timeout is not None:
            timeout = _seconds(timeout, "wait_for_workers(timeout=...)")
        return self.gateway.sync(self._wait_for_workers, n, timeout)

    async def _wait_for_workers(self, n: int, timeout: float | None) -> None:
        watcher, reconciler = self._watcher, self._reconciler
        if self.scheduler_comm is None or watcher is None or reconciler is None:
            raise GatewayClusterError(f"Cluster {self.name} is not running; no workers can join")
        tracker = reconciler.tracker
        deadline = None if timeout is None else time.monotonic() + timeout
        progress = view.Progress(f"{self.name}: waiting for {n} workers")
        # What the watcher's job loop sees, read after each of its looks: the
        # waiter asks neither the schedd nor the scheduler itself.
        async with watcher.hurried():
            try:
                # A look that began after the call, so a scale() just made is seen.
                limit = None if deadline is None else max(deadline - time.monotonic(), 0)
                await watcher.fresh_look(limit)
                while True:
                    joined, state, jobs = self._what_the_watcher_saw(watcher, reconciler)
                    failure = self._failure_message()
                    failures = tracker.failures_in_a_row
                    if failures:
                        state += (
                            f"; {failures} ended without serving "
                            f"({tracker.failures[-1].describe()})"
                        )
                    progress.show(f"{joined}/{n} workers; {state}")
                    if watcher.unreachable:
                        raise GatewayClusterError(
                            unreachable_workers_message(self.name, watcher.unreachable)
                        )
                    if joined >= n:
                        return
                    held = [job for job in jobs if job.is_stuck]
                    if held:
                        raise HTCondorError(
                            f"{len(held)} worker job(s) of {self.name} are held and will not "
                            f"start; job {held[0].job_id}: {held[0].hold_reason}"
                        )
                    if failure and failures >= min(n, FAILURES_BEFORE_PAUSE):
                        raise HTCondorError(
                            f"{failures} worker job(s) of {self.name} in a row ended without "
                            f"serving; {failure}"
                        )
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{joined} of {n} workers joined {self.name} in {timeout} s; {state}"
                        )
                    await watcher.next_look(timeout=PROGRESS_PERIOD)
            finally:
                progress.done()

    def _what_the_watcher_saw(
        self, watcher: Watcher, reconciler: Reconciler
    ) -> tuple[int, str, list[WorkerJob]]:
        """Joined workers, a summary of the jobs, and the active jobs, as last seen."""
        joined = len(reconciler.connected)
        error = watcher.round_error
        silent = watcher.scheduler_silence()
        if silent is not None:
            # A scheduler on a crowded host can answer late; only one that
            # stays silent is lost.
            if silent > SCHEDULER_SILENCE_LIMIT:
                raise GatewayClusterError(
                    f"The scheduler of {self.name} has not answered for {silent:.0f} s"
                )
            return joined, f"the scheduler has not answered for {silent:.0f} s", []
        if isinstance(error, HTCondorError):
            # The schedd may come back before the timeout (a restart): keep
            # waiting, and say why nothing moves.
            return joined, f"HTCondor unavailable: {error}", []
        return joined, view.jobs_summary(reconciler.tracker, reconciler), reconciler.tracker.table


def gateway_id(settings: HTCondorSettings, address: str) -> str:
    """The configured ``gateway-id``, or the gateway's address."""
    return settings.gateway_id or address.rstrip("/")


def _worker_count(n: object, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise SettingError(
            f"{what} takes a whole number of workers, got {n!r} ({type(n).__name__})"
        )
    if n < 0:
        raise SettingError(f"{what} takes a number of workers >= 0, got {n}")
    return int(n)


def _seconds(value: object, what: str) -> float:
    try:
        seconds = parse_timedelta(value)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError):
        seconds = None
    if (
        isinstance(value, bool)
        or not isinstance(seconds, numbers.Real)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise SettingError(f"{what} takes a duration in seconds (or '3s'), got {value!r}")
    return float(seconds)
