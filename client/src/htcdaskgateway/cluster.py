"""A dask-gateway cluster whose workers are HTCondor jobs.

This module keeps dask-gateway's public API and hands the work down, once,
as spec records (``spec``):

- ``runtime``: builds the parts of a running cluster;
- ``workers``: the one place that submits and removes its jobs;
- ``reconciler``: the target, compared with the jobs, acted on;
- ``watch``: the lease loop and the job loop of an open cluster object;
- ``wanted`` / ``waiting``: scale() and adapt() checked, wait_for_workers();
- ``view``: repr, widget, job table, progress line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from dask_gateway import GatewayClusterError

from . import view, waiting, wanted
from .compat import OwnGatewayCluster
from .errors import HTCondorError
from .jobs import JobTracker, WorkerJob
from .naming import checked_cluster_name
from .reconciler import Reconciler
from .runtime import ClusterRuntime, PodCalls, gateway_state, start_runtime
from .scaling import ScalesByTarget
from .schedd_pool import ScheddPool
from .settings import HTCondorSettings
from .spec import DEFAULT_GROUP, ClusterSpec, WorkerGroupSpec, gateway_id
from .view import ShownWithJobs
from .watch import Watcher

logger = logging.getLogger(__name__)


class HTCGatewayCluster(ScalesByTarget, ShownWithJobs, OwnGatewayCluster):
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

    def _prepare(self, htcondor: Mapping[str, Any] | None) -> None:
        settings = HTCondorSettings.from_config(htcondor)
        self.htcondor_settings = settings
        self.schedd = ScheddPool(
            settings.collector, settings.schedd, settings.schedd_constraint,
            settings.schedd_timeout,
        )  # fmt: skip
        # Identifies this object to the scheduler plugin (lease, applier).
        self._token = uuid.uuid4().hex
        self._runtime: ClusterRuntime | None = None

    # -- what the parts are handed, once -----------------------------------

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
    def user(self) -> str:
        """The gateway user the jobs are marked with."""
        return self.gateway.user

    def _spec(self) -> ClusterSpec:
        assert self.name is not None
        settings = self.htcondor_settings
        return ClusterSpec(
            name=self.name, user=self.user, gateway_id=self.gateway_id,
            scheduler_address=self.worker_scheduler_address,
            # While this object holds the client lease, the idle jobs' lease
            # follows it; otherwise (a cluster that outlives its clients)
            # detached-lease bounds how long the queued jobs and the
            # credentials in the spool of a cluster nobody watches stay.
            job_lease=self._lease or settings.detached_lease, settings=settings,
        )  # fmt: skip

    # Read by tests and the soak to look inside a running cluster object.
    @property
    def _watcher(self) -> Watcher | None:
        return None if self._runtime is None else self._runtime.watcher

    @property
    def _reconciler(self) -> Reconciler | None:
        return None if self._runtime is None else self._runtime.reconciler

    @property
    def _tracker(self) -> JobTracker | None:
        return None if self._runtime is None else self._runtime.tracker

    # -- starting and stopping -------------------------------------------

    async def _start_async(self) -> None:
        new = self.status == "created"
        await super()._start_async()
        if self.status != "running" or self._runtime is not None:
            return
        spec = self._spec()
        security = self.security
        self._runtime = await start_runtime(
            spec, WorkerGroupSpec(DEFAULT_GROUP, spec.settings), self.schedd,
            tls=None if security is None else (security.tls_cert, security.tls_key),
            scheduler_comm=self.scheduler_comm, token=self._token, lease=self._lease,
            new=new and security is not None,
            state=functools.partial(gateway_state, self.gateway, self.name),
            on_change=self._refresh_widget, pods=self._pod_calls(),
        )  # fmt: skip

    def _pod_calls(self) -> PodCalls:
        """The gateway's own scale and adapt of this cluster: its pod workers' count."""
        gateway, name = self.gateway, self.name

        async def adapt(minimum: int, maximum: int) -> None:
            await gateway._adapt_cluster(name, minimum, maximum, True)

        return PodCalls(functools.partial(gateway._scale_cluster, name), adapt)

    async def _stop_internal(self, shutdown: bool | None = None) -> None:
        if shutdown is None:
            shutdown = self.shutdown_on_close
        if shutdown and self.name is not None:
            await self._close_others_here("shut down by another object of this process")
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            await runtime.watcher.stop()
        if shutdown and self.name is not None:
            try:
                workers = runtime.workers if runtime is not None else self._detached_workers()
                await workers.remove_all(f"cluster {self.name} shut down")
            except HTCondorError:
                # The workers still exit on their own once the scheduler is
                # gone (death timeout); stopping the cluster matters more.
                logger.exception("Could not remove the worker jobs of %s", self.name)
        elif runtime is not None and runtime.watcher.stopped_reason is None:
            await runtime.workers.settle()
            await runtime.watcher.release(self.htcondor_settings.detached_lease)
        await super()._stop_internal(shutdown=shutdown)

    def _detached_workers(self) -> Any:
        """The workers of a cluster this object never watched (stopped before it ran)."""
        from .workers import HTCondorWorkers

        return HTCondorWorkers(self._spec(), self.schedd, tls=None)

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
        runtime = self._runtime
        if runtime is None:
            return []
        trackers = [g.tracker for g in runtime.groups.values() if isinstance(g, Reconciler)]
        return [row for tracker in trackers for row in view.job_rows(tracker)]

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
        n = wanted.worker_count(n, "wait_for_workers()")
        if timeout is not None:
            timeout = wanted.seconds(timeout, "wait_for_workers(timeout=...)")
        # Shown from this thread, so that a notebook puts it in this cell.
        progress = view.progress_for(view.waiting_title(self.name, n))
        return self.gateway.sync(self._wait_for_workers, n, timeout, progress)

    async def _wait_for_workers(self, n: int, timeout: float | None, progress: Any = None) -> None:
        if self.scheduler_comm is None or self._runtime is None:
            raise GatewayClusterError(f"Cluster {self.name} is not running; no workers can join")
        await waiting.wait_for_workers(self._runtime, n, timeout, progress)
