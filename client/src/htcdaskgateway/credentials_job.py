"""The cluster's credentials, spooled once at the schedd for all its worker jobs.

A job submitted with its input spooled waits on hold until the schedd has
the files, and the schedd then sleeps a further second before it lets the
job go (it does so after every spool, so that output files written in the
same second can be told apart by their mtimes): measured, 1.0 s of a 3.5 s
``scale(1)``. So worker jobs are not spooled. One job per cluster is, the
**credentials job**, and it never runs (its requirements are false): the
schedd keeps the cluster's certificate and key in that job's spool
directory (owned by the user, 0700; the files 0600), and each worker job's
shadow transfers them from there when the job starts. The credentials job
is selected, leased and removed with the cluster's worker jobs
(``JobSelector.every_job_constraint``); its removal deletes the files.

The schedd's pause comes after the transfer: the files are in place when
the spool call returns (measured: 9 ms after submit), and worker jobs may
name them at once, while the credentials job itself still waits on hold.
A new cluster's credentials job is spooled as soon as the gateway gives
the cluster's credentials (``prepare``, when the cluster runs), so the
first ``scale()`` finds it made. A client that connects to a running
cluster uses the job already there, or makes one when it first submits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from .credentials import check_credentials, staged_credentials
from .errors import CredentialError, HTCondorError
from .jobs import JobId, JobSelector, JobStatus
from .schedd import Schedd

logger = logging.getLogger(__name__)


class CredentialsSpool:
    """Finds or makes the job whose spool holds a cluster's credentials; one per cluster object.

    ``describe(files)`` gives the job's submit description for the staged
    credential files; ``tls`` is the cluster's (certificate, key), set by
    the cluster once the gateway has given them.
    """

    def __init__(
        self,
        schedd: Schedd,
        selector: Callable[[], Awaitable[JobSelector]],
        describe: Callable[[Sequence[Path]], Mapping[str, str]],
    ) -> None:
        self._schedd = schedd
        self._selector = selector
        self._describe = describe
        self.tls: tuple[str, str] | None = None
        self._lock = asyncio.Lock()
        self._preparing: asyncio.Future[str] | None = None
        self._made: JobId | None = None  # the credentials job this object spooled

    def prepare(self) -> None:
        """Start making the credentials job in the background, unless already started."""
        if self._preparing is None and self.tls is not None:
            self._preparing = asyncio.ensure_future(self._create())

    async def settle(self) -> None:
        """Wait for a job being prepared to be queued, so that removals find it."""
        preparing, self._preparing = self._preparing, None
        if preparing is not None:
            with contextlib.suppress(HTCondorError, CredentialError):
                await preparing

    async def directory(self) -> str:
        """The spool directory, on the schedd's host, that worker jobs take the credentials from.

        The one this object made, if still queued; else a spooled (idle)
        credentials job of the cluster, made by another client; else a new
        one. The queue is asked each time, so a job removed behind the
        client's back is replaced before a worker job names its directory.
        """
        async with self._lock:
            preparing, self._preparing = self._preparing, None
            if preparing is not None:
                try:
                    return await preparing
                except (HTCondorError, CredentialError) as exc:
                    logger.info("Preparing the credentials job failed (%s); trying again", exc)
            selector = await self._selector()
            found = await self._schedd.credentials_jobs(selector.credentials_constraint())
            for job in found:
                if job.job_id == self._made or job.is_ready:
                    return job.directory
            return await self._create()

    async def _create(self) -> str:
        if self.tls is None:
            raise HTCondorError("The cluster's TLS credentials are not known yet")
        cert, key = self.tls
        check_credentials(cert, key)
        with staged_credentials(cert, key) as files:
            # When this returns the files are in the job's spool directory
            # (the schedd's 1 s pause comes after): worker jobs may name
            # them at once, and the staged copies can go.
            (job_id,) = await self._schedd.submit(self._describe(files), 1, spool=True)
        selector = await self._selector()
        constraint = f"{selector.credentials_constraint()} && ClusterId == {job_id.cluster}"
        found = [j for j in await self._schedd.credentials_jobs(constraint) if j.job_id == job_id]
        if not found or found[0].status not in (JobStatus.IDLE, JobStatus.HELD):
            raise HTCondorError(
                f"Credentials job {job_id} left the queue as soon as it was spooled"
            )
        self._made = job_id
        logger.debug("Credentials job %s spooled in %s", job_id, found[0].directory)
        return found[0].directory
