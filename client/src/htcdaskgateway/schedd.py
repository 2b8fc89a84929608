"""The client's schedd: HTCondor calls as coroutines, answers as ``jobs`` values.

The calls themselves (``condor_calls``) run in the client's helper process
(``helper_process``), one at a time, each given up on after the configured
timeout; a thread of this process waits for each answer, off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from . import condor_calls
from .condor_calls import CondorCallError
from .errors import HTCondorError, ScheddUnavailableError, SubmitError
from .helper_process import HelperProcess
from .jobs import EndedJob, JobId, JobStatus, QueuedCredentials, WorkerJob, input_directory
from .naming import CLUSTER_ATTRIBUTE, GROUP_ATTRIBUTE, LEASE_ATTRIBUTE, USER_ATTRIBUTE
from .targets import DEFAULT_GROUP

_PROJECTION = [
    "ClusterId", "ProcId", "JobStatus", "HoldReason", "HoldReasonCode", "LastRejMatchReason",
    "ServerTime", "TransferInput", CLUSTER_ATTRIBUTE, USER_ATTRIBUTE, GROUP_ATTRIBUTE,
]  # fmt: skip
_HISTORY_PROJECTION = [
    "ClusterId", "ProcId", "JobStatus", "ExitCode", "ExitBySignal", "ExitSignal",
    "JobCurrentStartDate", "EnteredCurrentStatus", "RemoveReason",
]  # fmt: skip


class Schedd(Protocol):
    """What the rest of the client needs of a schedd: ``ScheddClient``, or a fake in tests."""

    async def owner(self) -> str: ...
    async def submit(
        self, description: Mapping[str, str], count: int, spool: bool = False
    ) -> list[JobId]: ...
    async def jobs(self, constraint: str) -> list[WorkerJob]: ...
    async def credentials_jobs(self, constraint: str) -> list[QueuedCredentials]: ...
    async def ended(self, job_ids: list[JobId], not_before: int) -> list[EndedJob]: ...
    async def history(
        self, constraint: str, not_before: int, limit: int = -1
    ) -> list[EndedJob]: ...
    async def edit(self, constraint: str, attribute: str, value: str) -> None: ...
    async def renew_lease(self, constraint: str, seconds: int) -> None: ...
    async def explain_idle(self, job_id: JobId) -> str | None: ...
    async def remove(self, job_spec: list[JobId] | str, reason: str) -> int: ...


class ScheddMember(Schedd, Protocol):
    """One named schedd of a pool, which can take submissions."""

    name: str | None


@functools.cache
def _waiter(schedd: str | None) -> ThreadPoolExecutor:
    # Waits for the helper's answers; one call at a time, in the order made.
    return ThreadPoolExecutor(1, thread_name_prefix="htcdaskgateway-schedd")


@functools.cache
def _helper(schedd: str | None) -> HelperProcess:
    # One per schedd: a schedd that does not answer holds up only its own calls.
    return HelperProcess()


class ScheddClient:
    """A schedd, found through the collector on first use.

    After a failed call it is looked up again: a restarted schedd may have
    a new address. A call not answered within ``timeout`` seconds raises
    ``ScheddUnavailableError``, and the helper process that was waiting
    for it is replaced; callers retry on their own schedule.
    """

    def __init__(
        self, collector: str | None = None, name: str | None = None, timeout: float = 60.0
    ) -> None:
        self.collector = collector
        self.name = name
        self.timeout = timeout
        self._owner: str | None = None
        # Seconds the schedd's clock is ahead of this machine's, from the
        # ServerTime of the last query that returned jobs; None until one has.
        self.clock_offset: float | None = None

    def __repr__(self) -> str:
        return f"ScheddClient(collector={self.collector!r}, name={self.name!r})"

    def schedd_time(self) -> float:
        """Now, on the schedd's clock as last measured (this machine's until measured)."""
        return time.time() + (self.clock_offset or 0.0)

    def _measure_clock(self, ads: list[dict[str, Any]]) -> None:
        if ads and isinstance(ads[0].get("ServerTime"), int):
            self.clock_offset = ads[0]["ServerTime"] - time.time()

    async def _call(self, name: str, *args: Any) -> Any:
        where = (self.collector, self.name)
        loop = asyncio.get_running_loop()
        try:
            try:
                future = loop.run_in_executor(
                    _waiter(self.name), _helper(self.name).call, name, (where, *args),
                    self.timeout,
                )  # fmt: skip
            except RuntimeError:
                # Executors take no new work once the interpreter is exiting,
                # but shutdown at exit must still remove the jobs: call here.
                return condor_calls.call(name, where, *args)
            return await future
        except TimeoutError:
            raise ScheddUnavailableError(
                f"The schedd {self.name or ''} did not answer within {self.timeout:g} s "
                "(gateway.htcondor.schedd-timeout): it is busy or unreachable"
            ) from None
        except CondorCallError as exc:
            error = {condor_calls.UNAVAILABLE: ScheddUnavailableError,
                     condor_calls.SUBMIT: SubmitError}.get(exc.kind, HTCondorError)  # fmt: skip
            raise error(exc.message) from None

    async def schedd_ads(self, constraint: str) -> list[dict[str, Any]]:
        """The collector's ads (name, load) of the schedds matching ``constraint``."""
        return await self._call("schedd_ads", constraint)

    async def owner(self) -> str:
        """The HTCondor identity (``User``: ``name@domain``) the schedd knows this client as."""
        if self._owner is None:
            self._owner = await self._call("identity")
        return self._owner

    async def submit(
        self, description: Mapping[str, str], count: int, spool: bool = False
    ) -> list[JobId]:
        """Queue ``count`` jobs in one transaction; ``spool``: send their input files too.

        Spooled jobs wait on hold until their input files are in the
        schedd's spool, so the local copies may be deleted when this returns.
        """
        cluster, first, procs = await self._call("submit", dict(description), count, spool)
        return [JobId.of(cluster, first + i, self.name) for i in range(procs)]

    async def credentials_jobs(self, constraint: str) -> list[QueuedCredentials]:
        """Credentials jobs matching ``constraint``, with their spool directories."""
        ads = await self._call("query", constraint, ["ClusterId", "ProcId", "JobStatus", "Iwd"])
        ads.sort(key=lambda ad: (ad["ClusterId"], ad["ProcId"]))
        return [
            QueuedCredentials(
                JobId.of(ad["ClusterId"], ad["ProcId"], self.name),
                JobStatus(ad["JobStatus"]),
                str(ad["Iwd"]),
            )
            for ad in ads
        ]

    async def jobs(self, constraint: str) -> list[WorkerJob]:
        """Jobs matching ``constraint`` that are still in the queue."""
        ads = await self._call("query", constraint, _PROJECTION)
        self._measure_clock(ads)
        ads.sort(key=lambda ad: (ad["ClusterId"], ad["ProcId"]))
        return [
            WorkerJob(
                job_id=JobId.of(ad["ClusterId"], ad["ProcId"], self.name),
                status=JobStatus(ad["JobStatus"]),
                hold_reason=ad.get("HoldReason"),
                cluster_name=ad.get(CLUSTER_ATTRIBUTE),
                hold_reason_code=ad.get("HoldReasonCode"),
                user=ad.get(USER_ATTRIBUTE),
                last_rejection=ad.get("LastRejMatchReason"),
                credentials_directory=input_directory(ad.get("TransferInput")),
                group=ad.get(GROUP_ATTRIBUTE) or DEFAULT_GROUP,
            )
            for ad in ads
        ]

    async def ended(self, job_ids: list[JobId], not_before: int) -> list[EndedJob]:
        """How the given jobs ended, for those the schedd's history has recorded.

        ``not_before`` (epoch seconds) bounds the scan: the history is read
        from its newest record back to the first that left before then.
        """
        wanted = set(job_ids)
        clusters = sorted({job_id.cluster for job_id in wanted})
        constraint = " || ".join(f"ClusterId == {cluster}" for cluster in clusters) or "false"
        ended = await self.history(constraint, not_before)
        return [job for job in ended if job.job_id in wanted]

    async def history(self, constraint: str, not_before: int, limit: int = -1) -> list[EndedJob]:
        """Jobs matching ``constraint`` that left the queue since ``not_before``, newest first.

        ``not_before`` is on this machine's clock; the schedd's history is
        on its own, so the bound moves by the measured difference (a client
        minutes ahead would otherwise never see its jobs' ends).
        """
        since = int(not_before + (self.clock_offset or 0.0))
        ads = await self._call("history", constraint, _HISTORY_PROJECTION, limit, since)
        return [_ended_job(ad, self.name) for ad in ads]

    async def edit(self, constraint: str, attribute: str, value: str) -> None:
        """Set ``attribute`` to the ClassAd expression ``value`` on matching jobs."""
        await self._call("edit", constraint, attribute, value)

    async def renew_lease(self, constraint: str, seconds: int) -> None:
        """Set matching jobs' lease to end ``seconds`` from now, on this schedd's clock.

        The schedd's clock is measured first if no query has yet (a new
        cluster has only its credentials job): with this machine's clock
        minutes behind, the expiry written would already be past.
        """
        if self.clock_offset is None:
            self._measure_clock(await self._call("query", constraint, ["ServerTime"]))
        await self.edit(constraint, LEASE_ATTRIBUTE, str(int(self.schedd_time()) + seconds))

    async def explain_idle(self, job_id: JobId) -> str | None:
        """Why an idle job has not started, from matching it against the pool's slots."""
        return await self._call("explain_idle", job_id.cluster, job_id.proc)

    async def remove(self, job_spec: list[JobId] | str, reason: str) -> int:
        """Remove jobs given by ids or by a constraint; returns how many were removed."""
        if not job_spec:
            return 0
        spec = job_spec if isinstance(job_spec, str) else [job.local for job in job_spec]
        return await self._call("remove", spec, reason)


def _ended_job(ad: dict[str, Any], schedd: str | None) -> EndedJob:
    started, finished = ad.get("JobCurrentStartDate"), ad.get("EnteredCurrentStatus")
    by_signal = ad.get("ExitBySignal") is True
    ran = isinstance(started, int) and isinstance(finished, int)
    return EndedJob(
        job_id=JobId.of(ad["ClusterId"], ad["ProcId"], schedd),
        status=JobStatus(ad["JobStatus"]),
        exit_code=None if by_signal else ad.get("ExitCode"),
        exit_signal=ad.get("ExitSignal") if by_signal else None,
        run_seconds=float(finished - started) if ran else None,
        # The schedd's own words for a removal by the job's periodic_remove.
        removed_by_policy="PeriodicRemove" in str(ad.get("RemoveReason", "")),
    )
