"""Adaptive scaling of HTCondor worker jobs from the scheduler's target.

distributed's ``AdaptiveCore`` decides (target, hysteresis through
``wait_count``, which workers to close); this class feeds it the cluster's
jobs and turns its decisions into submissions, retirements and removals.
The tokens it works on are HTCondor job ids.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta
from distributed.deploy.adaptive_core import AdaptiveCore

from .naming import job_id_of_worker

if TYPE_CHECKING:
    from .cluster import HTCGatewayCluster


class HTCondorAdaptive(AdaptiveCore):
    def __init__(
        self,
        cluster: HTCGatewayCluster,
        minimum: int = 0,
        maximum: int | float = math.inf,
        wait_count: int = 3,
        target_duration: str | float = "5s",
        interval: str | float = "3s",
    ) -> None:
        super().__init__(minimum=minimum, maximum=maximum, wait_count=wait_count)
        self.cluster = cluster
        self.target_duration = parse_timedelta(target_duration)
        self.interval = parse_timedelta(interval)
        self._active: set[Any] = set()
        self._joined: set[Any] = set()

    def __repr__(self) -> str:
        return f"HTCondorAdaptive(minimum={self.minimum}, maximum={self.maximum})"

    @property
    def plan(self) -> set[Any]:
        return self._active

    @property
    def requested(self) -> set[Any]:
        return self._active

    @property
    def observed(self) -> set[Any]:
        return self._joined

    async def adapt(self) -> None:
        jobs = await self.cluster._active_jobs()
        joined = await self.cluster._joined_workers()
        self._active = {job.job_id for job in jobs}
        self._joined = {job_id_of_worker(name) for name in joined} & self._active
        await super().adapt()

    async def target(self) -> int:
        return int(
            await self.cluster.scheduler_comm.htcdaskgateway_adaptive_target(
                target_duration=self.target_duration
            )
        )

    async def workers_to_close(self, target: int) -> list[Any]:
        names = await self.cluster.scheduler_comm.htcdaskgateway_workers_to_close(
            n=max(len(self._joined) - target, 0)
        )
        return [job_id_of_worker(name) for name in names if job_id_of_worker(name) in self._joined]

    async def scale_up(self, n: int) -> None:
        await self.cluster._reconcile(n)

    async def scale_down(self, workers: Iterable[Any]) -> None:
        await self.cluster._remove_jobs(sorted(workers), "adaptive scale-down")
