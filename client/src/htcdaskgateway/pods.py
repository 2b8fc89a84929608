"""A worker group of the gateway's own workers, beside the HTCondor ones.

On Kubernetes they are pods that the gateway's backend starts in the
cluster, next to the scheduler (the chart's ``cluster.podWorkers``, capped
by the operator); on the compose stack the local backend's processes stand
in. Their count is the gateway's: ``PodGroup`` keeps the group's target at
the scheduler plugin, as every group's, and its applier hands it to the
gateway (``scale`` / ``adapt`` of dask-gateway's API) once per target. The
gateway then starts and stops them, and the plugin lets dask-gateway's own
preload retire them, while it keeps the HTCondor workers out of reach.
A cluster has one worker count at the gateway, so at most one pod group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .scheduler_link import SchedulerLink
from .targets import AdaptTarget, ScaleTarget, Target, TargetFormatError, target_from_wire

logger = logging.getLogger(__name__)

# The group spec's kind (on the wire) of a group of the gateway's own workers.
POD_KIND = "pods"


class PodGroup:
    """The reconciler of a pod group: the group's target, handed to the gateway.

    ``scale(n)`` and ``adapt(minimum, maximum)`` are the gateway's calls for
    this cluster (dask-gateway's ``_scale_cluster`` / ``_adapt_cluster``).
    """

    def __init__(
        self,
        group: str,
        scheduler: SchedulerLink,
        scale: Callable[[int], Awaitable[Any]],
        adapt: Callable[[int, int], Awaitable[Any]],
        token: str | None,
        cap: int,
    ) -> None:
        self.group = group
        self.scheduler = scheduler
        self._scale = scale
        self._adapt = adapt
        self.token = token
        self.cap = cap
        self.target: Target | None = None
        self.generation: int | None = None
        self.unreadable: str | None = None
        self.adaptive = None  # the gateway adapts pod workers itself
        self.connected: set[str] = set()  # pod workers in the scheduler, last look
        self.applied: int | None = None  # the generation last handed to the gateway
        self.lock = asyncio.Lock()

    def want(self, target: Target | None, generation: int | None) -> None:
        if generation == self.generation and target == self.target:
            return
        self.target, self.generation, self.unreadable = target, generation, None

    def want_wire(self, wire: object, generation: int | None) -> None:
        try:
            self.want(target_from_wire(wire), generation)
        except TargetFormatError as exc:
            self.want(None, generation)
            self.unreadable = str(exc)

    async def step(self, act: bool = True, raise_errors: bool = False) -> set[str]:
        """Look at the pod workers and, if ``act``, hand a new target to the gateway."""
        async with self.lock:
            self.connected = await self.scheduler.pod_workers()
            target = self.target
            if not act or target is None or self.unreadable or self.applied == self.generation:
                return self.connected
            state = await self.scheduler.confirm(self.token, self.generation, self.group)
            if not state.get("confirmed"):
                mine = state.get("groups", {}).get(self.group, {})
                self.want_wire(mine.get("target"), mine.get("generation"))
                return self.connected
            if isinstance(target, ScaleTarget):
                await self._scale(min(target.n, target.cap, self.cap))
            elif isinstance(target, AdaptTarget):
                await self._adapt(target.minimum, min(target.maximum, self.cap))
            self.applied = self.generation
            logger.info("Pod worker group %s: %s handed to the gateway", self.group, target)
            return self.connected

    async def after_look(self) -> None:
        return None

    @property
    def joined_count(self) -> int:
        return len(self.connected)
