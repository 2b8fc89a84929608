"""``HTCGateway``: a ``dask_gateway.Gateway`` whose clusters run workers on HTCondor."""

from __future__ import annotations

import atexit
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

import dask.config
from dask_gateway.client import ClusterReport

from .cluster import HTCGatewayCluster
from .compat import ClosingOnceGateway, trust_api_ca
from .config import environment_overrides
from .jobs import JobSelector, WorkerJob, count_by_status, select_jobs
from .schedd_pool import ScheddPool
from .settings import HTCondorSettings
from .spec import gateway_id

logger = logging.getLogger(__name__)


class HTCGateway(ClosingOnceGateway):
    """A drop-in ``dask_gateway.Gateway`` for HTCondor-backed clusters.

    Takes the arguments of ``Gateway`` plus ``htcondor``, a mapping that
    overrides the ``gateway.htcondor`` config for the clusters it creates
    or connects to.
    """

    cluster_class: type[HTCGatewayCluster] = HTCGatewayCluster

    def __init__(
        self, *args: Any, htcondor: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        self.htcondor = dict(htcondor or {})
        for override in environment_overrides():
            logger.warning("%s", override)
        settings = HTCondorSettings.from_config(self.htcondor)  # bad settings fail here
        self.htcondor_settings = settings
        self.schedd = ScheddPool(
            settings.collector, settings.schedd, settings.schedd_constraint,
            settings.schedd_timeout,
        )  # fmt: skip
        self._adapting: dict[str, HTCGatewayCluster] = {}
        super().__init__(*args, **kwargs)
        if settings.api_ca:
            trust_api_ca(self, settings.api_ca)
        _unclosed.add(self)

    async def _jobs_selector(self, cluster_name: str | None = None) -> JobSelector:
        """Your jobs (to the schedd and the gateway) of this gateway; of one cluster if named.

        Selected on the gateway user too: where hub users share one HTCondor
        identity, the gateway lists only your clusters, so another user's
        live cluster would otherwise look orphaned to ``cleanup``.
        """
        gateway = gateway_id(self.htcondor_settings, self.address)
        return await select_jobs(self.schedd, gateway, cluster_name, self.user)

    def _cluster_kwargs(self, htcondor: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {
            "address": self.address,
            "proxy_address": self.proxy_address,
            "public_address": self._public_address,
            "auth": self.auth,
            "asynchronous": self.asynchronous,
            "loop": self.loop,
            "htcondor": dask.config.merge(self.htcondor, dict(htcondor or {})),
        }

    def new_cluster(
        self,
        cluster_options: Any = None,
        shutdown_on_close: bool = True,
        htcondor: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> HTCGatewayCluster:
        """Start a cluster at the gateway; ``scale(n)`` then submits ``n`` worker jobs.

        ``htcondor`` overrides the gateway's ``htcondor`` settings for this cluster.
        """
        return self.cluster_class(
            cluster_options=cluster_options,
            shutdown_on_close=shutdown_on_close,
            **self._cluster_kwargs(htcondor),
            **kwargs,
        )

    def connect(
        self,
        cluster_name: str,
        shutdown_on_close: bool = False,
        htcondor: Mapping[str, Any] | None = None,
    ) -> HTCGatewayCluster:
        """Connect to a running cluster and take control of its worker jobs."""
        return self.cluster_class.from_name(
            cluster_name, shutdown_on_close=shutdown_on_close, **self._cluster_kwargs(htcondor)
        )

    def get_cluster(self, cluster_name: str, **kwargs: Any) -> Any:
        """A cluster's report, with ``jobs``: its idle, running and held job counts."""
        return self.sync(self._cluster_with_jobs, cluster_name, **kwargs)

    async def _cluster_with_jobs(self, cluster_name: str) -> HTCClusterReport:
        report = await self._cluster_report(cluster_name)
        selector = await self._jobs_selector(cluster_name)
        jobs = await self.schedd.jobs(selector.constraint())
        return HTCClusterReport.extend(report, count_by_status(jobs))

    def stop_cluster(self, cluster_name: str, **kwargs: Any) -> Any:
        """Remove a cluster's jobs, then stop it at the gateway."""
        return self.sync(self._stop_cluster_and_jobs, cluster_name, **kwargs)

    async def _stop_cluster_and_jobs(self, cluster_name: str) -> None:
        adapting = self._adapting.pop(cluster_name, None)
        if adapting is not None:
            await adapting._stop_internal()
        selector = await self._jobs_selector(cluster_name)
        await self.schedd.remove(selector.every_job_constraint(), f"cluster {cluster_name} stopped")
        await self._stop_cluster(cluster_name)

    def scale_cluster(self, cluster_name: str, n: int, **kwargs: Any) -> Any:
        """Scale a cluster's HTCondor jobs to ``n`` (as ``connect(name).scale(n)``).

        The target stays with the cluster's scheduler: an open client of the
        cluster keeps it (replaces lost jobs) after this call returns.
        """
        return self.sync(self._scale_by_name, cluster_name, n, **kwargs)

    async def _scale_by_name(self, cluster_name: str, n: int) -> None:
        async with self._connected(cluster_name) as cluster:
            await cluster._set_target(cluster.scale_target(n, "scale_cluster()"))

    def adapt_cluster(
        self,
        cluster_name: str,
        minimum: int | None = None,
        maximum: int | None = None,
        active: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Adapt a cluster's HTCondor jobs to its load while this gateway object is open.

        Adapting needs a running client: it ends when this gateway is closed.
        Takes the arguments of ``HTCGatewayCluster.adapt``.
        """
        return self.sync(
            self._adapt_by_name, cluster_name, minimum, maximum, active, adapt_kwargs=kwargs
        )

    async def _adapt_by_name(
        self,
        cluster_name: str,
        minimum: int | None,
        maximum: int | None,
        active: bool,
        adapt_kwargs: dict[str, Any],
    ) -> None:
        previous = self._adapting.pop(cluster_name, None)
        if previous is not None:
            await previous._stop_internal()
        if not active:
            return
        cluster = await self._connect_here(cluster_name)
        try:
            await cluster._set_target(cluster.adaptive(minimum, maximum, **adapt_kwargs))
        except BaseException:
            await cluster._stop_internal()
            raise
        self._adapting[cluster_name] = cluster

    async def _cleanup(self) -> None:
        while self._adapting:
            _, cluster = self._adapting.popitem()
            await cluster._stop_internal()
        await super()._cleanup()

    async def _connect_here(self, cluster_name: str) -> HTCGatewayCluster:
        # A connection on this gateway's own event loop, for calls by name.
        kwargs = dict(self._cluster_kwargs(), asynchronous=True, loop=self.loop)
        cluster = self.cluster_class.from_name(cluster_name, shutdown_on_close=False, **kwargs)
        await cluster._start_internal()
        return cluster

    @contextlib.asynccontextmanager
    async def _connected(self, cluster_name: str) -> AsyncIterator[HTCGatewayCluster]:
        cluster = await self._connect_here(cluster_name)
        try:
            yield cluster
        finally:
            await cluster._stop_internal()

    def list_clusters(self, status: Any = None, **kwargs: Any) -> Any:
        """Your clusters, each report with ``jobs``: its idle, running and held job counts."""
        return self.sync(self._clusters_with_jobs, status=status, **kwargs)

    async def _clusters_with_jobs(self, status: Any = None) -> list[HTCClusterReport]:
        reports = await self._clusters(status=status)
        jobs = await self.schedd.jobs((await self._jobs_selector()).constraint())
        return [
            HTCClusterReport.extend(
                report, count_by_status([j for j in jobs if j.cluster_name == report.name])
            )
            for report in reports
        ]

    def worker_jobs(self, **kwargs: Any) -> dict[str, list[WorkerJob]]:
        """The queued jobs of each of your running or pending clusters, by cluster name."""
        return self.sync(self._worker_jobs, **kwargs)

    async def _worker_jobs(self) -> dict[str, list[WorkerJob]]:
        clusters = await self._clusters()
        by_cluster: dict[str, list[WorkerJob]] = {c.name: [] for c in clusters}
        for job in await self.schedd.jobs((await self._jobs_selector()).constraint()):
            if job.cluster_name in by_cluster and job.status.is_active:
                by_cluster[job.cluster_name].append(job)
        return by_cluster

    def remove_orphaned_jobs(self, **kwargs: Any) -> dict[str, int]:
        """Remove the jobs of clusters this gateway no longer runs.

        Such jobs are left when a client dies before it can shut its cluster
        down. Only your own jobs that carry this gateway's ``gateway-id``
        are considered: yours as the schedd knows you (``User``) and as the
        gateway does (``HTCDaskGatewayUser``), since the gateway lists only
        your clusters; another user's or another gateway's clusters sharing
        the schedd, or your HTCondor identity, are not yours to judge.
        Returns the number of jobs removed per cluster name.
        """
        return self.sync(self._remove_orphaned_jobs, **kwargs)

    async def _remove_orphaned_jobs(self) -> dict[str, int]:
        # Jobs first, clusters second: a cluster started in between has no
        # job in the first answer, so it cannot be judged orphaned.
        selector = await self._jobs_selector()
        jobs = await self.schedd.jobs(selector.every_job_constraint())
        live = {c.name for c in await self._clusters()}
        orphans = sorted(
            {j.cluster_name for j in jobs if j.cluster_name and j.cluster_name not in live}
        )
        removed = {}
        for name in orphans:
            removed[name] = await self.schedd.remove(
                selector.for_cluster(name).every_job_constraint(),
                f"gateway cluster {name} no longer exists",
            )
        return removed


class HTCClusterReport(ClusterReport):
    """A ``ClusterReport`` with the counts of the cluster's HTCondor jobs."""

    __slots__ = ("jobs",)

    @classmethod
    def extend(cls, report: ClusterReport, jobs: dict[str, int]) -> HTCClusterReport:
        extended = cls.__new__(cls)
        for slot in ClusterReport.__slots__:
            setattr(extended, slot, getattr(report, slot))
        extended.jobs = jobs
        return extended

    def __repr__(self) -> str:
        jobs = ", ".join(f"{state} {count}" for state, count in self.jobs.items())
        return f"ClusterReport<name={self.name}, status={self.status.name}, jobs: {jobs}>"


_unclosed: weakref.WeakSet[HTCGateway] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close the clusters and then the gateways a script or notebook left open.

    ``Gateway.__del__`` does not close once the interpreter is finalizing, so
    a gateway never closed (the usual usage) left its HTTP session to be
    reported as "Unclosed client session" at exit. Its clusters share its
    event loop, so they go first: each is closed as dask-gateway's own exit
    hook would (shut down if ``shutdown_on_close``), which that hook, running
    later, then finds done.
    """
    for closable in [*HTCGatewayCluster._instances, *_unclosed]:
        if closable.asynchronous:
            continue
        try:
            closable.close()
        except Exception as exc:
            logger.warning("Closing %r at exit failed: %r", closable, exc)
