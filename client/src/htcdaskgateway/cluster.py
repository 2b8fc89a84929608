"""A dask-gateway cluster whose workers are HTCondor jobs."""

from __future__ import annotations

import asyncio
import logging
import numbers
import sys
import time
from collections.abc import Mapping
from typing import Any

from dask_gateway import GatewayCluster, GatewayClusterError

from .credentials import check_credentials, staged_credentials
from .errors import HTCondorError
from .jobs import WorkerJob, count_by_status, removal_order
from .naming import CLUSTER_ATTRIBUTE, checked_cluster_name
from .schedd import ScheddClient
from .settings import HTCondorSettings
from .submit import worker_job_description

logger = logging.getLogger(__name__)


class HTCGatewayCluster(GatewayCluster):
    """A ``GatewayCluster`` that scales by submitting and removing HTCondor jobs.

    The gateway runs only the scheduler; each worker is an HTCondor job that
    receives the cluster's TLS credentials as transferred files and joins
    the scheduler through the gateway's proxy.

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

    def _prepare(self, htcondor: Mapping[str, Any] | None) -> None:
        self.htcondor_settings = HTCondorSettings.from_config(htcondor)
        self.schedd = ScheddClient(self.htcondor_settings.collector, self.htcondor_settings.schedd)
        self._scale_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"HTCGatewayCluster<{self.name}, status={self.status}>"

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

    def scale(self, n: int, **kwargs: Any) -> Any:
        """Scale the cluster to ``n`` worker jobs (idle, running or held)."""
        n = _worker_count(n)
        return self.gateway.sync(self._scale, n, **kwargs)

    async def _scale(self, n: int) -> None:
        async with self._scale_lock:
            active = [job for job in await self._jobs() if job.status.is_active]
            if n > len(active):
                await self._submit_workers(n - len(active))
            elif n < len(active):
                excess = removal_order(active)[: len(active) - n]
                await self.schedd.remove(
                    [job.job_id for job in excess], f"scaled down to {n} workers"
                )

    def adapt(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("adapt() is not available yet for HTCondor workers; use scale(n)")

    async def _jobs(self) -> list[WorkerJob]:
        return await self.schedd.jobs(self._job_constraint)

    def worker_jobs(self) -> Any:
        """The cluster's jobs still in the HTCondor queue."""
        return self.gateway.sync(self._jobs)

    def wait_for_workers(self, n: int, timeout: float | None = None) -> Any:
        """Wait until ``n`` workers have joined, showing the jobs' progress.

        Stops early with an ``HTCondorError`` carrying the hold reason when
        one of the cluster's jobs is held (it would never start), and with a
        ``TimeoutError`` describing the jobs after ``timeout`` seconds.
        """
        n = _worker_count(n)
        return self.gateway.sync(self._wait_for_workers, n, timeout)

    async def _wait_for_workers(self, n: int, timeout: float | None) -> None:
        if self.scheduler_comm is None:
            raise GatewayClusterError(f"Cluster {self.name} is not running; no workers can join")
        deadline = None if timeout is None else time.monotonic() + timeout
        progress = _Progress(f"{self.name}: waiting for {n} workers")
        try:
            while True:
                jobs = [job for job in await self._jobs() if job.status.is_active]
                joined = await self._joined_workers()
                counts = count_by_status(jobs)
                progress.show(
                    f"{joined}/{n} workers; jobs idle {counts['idle']}, "
                    f"running {counts['running']}, held {counts['held']}"
                )
                if joined >= n:
                    return
                held = [job for job in jobs if job.is_stuck]
                if held:
                    raise HTCondorError(
                        f"{len(held)} worker job(s) of {self.name} are held and will not start; "
                        f"job {held[0].job_id}: {held[0].hold_reason}"
                    )
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{joined} of {n} workers joined {self.name} in {timeout} s; jobs idle "
                        f"{counts['idle']}, running {counts['running']}"
                    )
                await asyncio.sleep(1)
        finally:
            progress.done()

    async def _joined_workers(self) -> int:
        # Asked of the scheduler itself: the worker-status subscription that
        # fills scheduler_info is not a reliable count once clients attach.
        identity = await self.scheduler_comm.identity(n_workers=-1)
        return len(identity.get("workers", {}))

    async def _submit_workers(self, count: int) -> list[str]:
        if self.security is None:
            raise HTCondorError(f"Cluster {self.name} is not running; cannot add workers")
        cert, key = self.security.tls_cert, self.security.tls_key
        check_credentials(cert, key)
        with staged_credentials(cert, key) as files:
            description = worker_job_description(
                self.htcondor_settings, self.name, self.worker_scheduler_address, files
            )
            job_ids = await self.schedd.submit(description, count)
        logger.info("Submitted %d worker jobs for %s: %s", count, self.name, job_ids)
        return job_ids

    async def _stop_internal(self, shutdown: bool | None = None) -> None:
        if shutdown is None:
            shutdown = self.shutdown_on_close
        if shutdown and self.name is not None:
            try:
                await self.schedd.remove(self._job_constraint, f"cluster {self.name} shut down")
            except HTCondorError:
                # The workers still exit on their own once the scheduler is
                # gone (death timeout); stopping the cluster matters more.
                logger.exception("Could not remove the worker jobs of %s", self.name)
        await super()._stop_internal(shutdown=shutdown)


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


def _worker_count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"scale() takes a whole number of workers, got {n!r} ({type(n).__name__})")
    if n < 0:
        raise ValueError(f"scale() takes a number of workers >= 0, got {n}")
    return int(n)
