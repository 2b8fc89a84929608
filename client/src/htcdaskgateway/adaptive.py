"""Adaptive scaling of HTCondor worker jobs from the scheduler's target.

distributed's ``AdaptiveCore`` decides (target, hysteresis through
``wait_count``, which workers to close); this class feeds it the jobs the
reconciler last saw and turns its decisions into the reconciler's actions.
The tokens it works on are HTCondor job ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from distributed.deploy.adaptive_core import AdaptiveCore

if TYPE_CHECKING:
    from .reconciler import Reconciler
    from .targets import AdaptTarget


class HTCondorAdaptive(AdaptiveCore):
    def __init__(self, reconciler: Reconciler, target: AdaptTarget) -> None:
        super().__init__(
            minimum=target.minimum, maximum=target.maximum, wait_count=target.wait_count
        )
        self.reconciler = reconciler
        self.target_duration = target.target_duration
        self.interval = target.interval

    def __repr__(self) -> str:
        return f"HTCondorAdaptive(minimum={self.minimum}, maximum={self.maximum})"

    @property
    def plan(self) -> set[Any]:
        return {job.job_id for job in self.reconciler.tracker.table}

    @property
    def requested(self) -> set[Any]:
        return self.plan

    @property
    def observed(self) -> set[Any]:
        return self.reconciler.tracker.joined & self.plan

    async def target(self) -> int:
        # A group whose workers offer resources (GPU) follows the tasks that
        # need them; the default group the scheduler's whole load.
        reconciler = self.reconciler
        return await reconciler.scheduler.adaptive_target(
            self.target_duration, reconciler.resources or None
        )

    async def workers_to_close(self, target: int) -> list[Any]:
        observed = self.observed
        jobs = await self.reconciler.jobs_to_close(max(len(observed) - target, 0), observed)
        return [job_id for job_id in jobs if job_id in observed]

    async def scale_up(self, n: int) -> None:
        await self.reconciler.scale_to(n)

    async def scale_down(self, workers: Iterable[Any]) -> None:
        await self.reconciler.remove(sorted(workers), "adaptive scale-down")
