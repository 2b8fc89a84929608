"""A cluster's worker jobs at the schedds: the one place that submits and removes them.

``HTCondorWorkers`` starts workers of a group (worker jobs that take the
cluster's credentials from its credentials job's spool on the same
schedd) and stops them (removes their jobs); the reconciler and the
cluster's shutdown reach the schedds only through it. It is built once per
running cluster from its ``ClusterSpec`` and never calls back into the
cluster object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from .credentials_job import CredentialsSpool
from .errors import HTCondorError
from .jobs import JobId, JobSelector, select_jobs
from .schedd import ScheddMember
from .schedd_pool import ScheddPool
from .spec import DEFAULT_GROUP, ClusterSpec, WorkerGroupSpec
from .submit import credentials_job_description, worker_job_description

logger = logging.getLogger(__name__)


class HTCondorWorkers:
    """Starts and stops one cluster's worker jobs; keeps its credentials job on each schedd.

    ``tls`` is the cluster's (certificate, key) from the gateway; None for a
    cluster object that cannot start workers (it was not given them).
    """

    def __init__(self, spec: ClusterSpec, schedd: ScheddPool, tls: tuple[str, str] | None) -> None:
        self.spec = spec
        self.schedd = schedd
        self._tls = tls
        self._spools: dict[str | None, CredentialsSpool] = {}  # by schedd name
        self._preparing: asyncio.Future[None] | None = None

    async def selector(self) -> JobSelector:
        """Every job of this cluster (of its user and gateway)."""
        spec = self.spec
        return await select_jobs(self.schedd, spec.gateway_id, spec.name, spec.user)

    def prepare(self) -> None:
        """Spool the credentials now, in the background, on the likeliest first schedd."""
        if self._tls is not None and self._preparing is None:
            self._preparing = asyncio.ensure_future(self._prepare())

    async def _prepare(self) -> None:
        # The files are in place ~10 ms later, while the caller gets to scale().
        with contextlib.suppress(HTCondorError):
            self._spool_on((await self.schedd.submit_order())[0]).prepare()

    def _spool_on(self, schedd: ScheddMember) -> CredentialsSpool:
        spool = self._spools.get(schedd.name)
        if spool is None:
            spool = CredentialsSpool(schedd, self.selector, self._credentials_description)
            spool.tls = self._tls
            self._spools[schedd.name] = spool
        return spool

    def _credentials_description(self, files: Sequence[Path]) -> dict[str, str]:
        spec = self.spec
        return credentials_job_description(
            spec.settings, spec.name, files,
            user=spec.user, gateway_id=spec.gateway_id, lease=spec.job_lease or None,
        )  # fmt: skip

    async def start(self, group: WorkerGroupSpec, count: int) -> list[JobId]:
        """Queue ``count`` worker jobs of ``group`` on one schedd; their ids."""
        if self._tls is None:
            raise HTCondorError(f"Cluster {self.spec.name} is not running; cannot add workers")
        spec = self.spec

        async def describe(schedd: ScheddMember) -> dict[str, str]:
            return worker_job_description(
                group.settings, spec.name, spec.scheduler_address,
                await self._spool_on(schedd).directory(),
                user=spec.user, gateway_id=spec.gateway_id, lease=spec.job_lease or None,
                schedd=schedd.name, group=None if group.name == DEFAULT_GROUP else group.name,
            )  # fmt: skip

        job_ids = await self.schedd.submit(describe, count)
        logger.info("Submitted %d worker jobs for %s: %s", count, spec.name, job_ids)
        return job_ids

    async def stop(self, job_ids: list[JobId], reason: str) -> None:
        """Remove the jobs (their workers were retired first, if they had joined)."""
        await self.schedd.remove(list(job_ids), reason)

    async def settle(self) -> None:
        """Let credentials jobs on their way be queued, so that removals find them."""
        if self._preparing is not None:
            with contextlib.suppress(HTCondorError):
                await self._preparing
        for spool in self._spools.values():
            await spool.settle()

    async def remove_all(self, reason: str) -> None:
        """Remove every worker job of the cluster and its credentials jobs."""
        await self.settle()
        await self.schedd.remove((await self.selector()).every_job_constraint(), reason)


class GroupWorkers:
    """``HTCondorWorkers`` for one group: what a reconciler starts and stops."""

    def __init__(self, workers: HTCondorWorkers, group: WorkerGroupSpec) -> None:
        self.workers = workers
        self.group = group

    async def start(self, count: int) -> list[JobId]:
        return await self.workers.start(self.group, count)

    async def stop(self, job_ids: list[JobId], reason: str) -> None:
        await self.workers.stop(job_ids, reason)
