"""The only module that talks to HTCondor (through the htcondor2 bindings).

Binding calls block, so each runs in one worker thread per process, off
the event loop, in the order they were made, and is given up on after the
configured timeout.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import classad2
import htcondor2

from .errors import HTCondorError, ScheddUnavailableError, SubmitError
from .jobs import EndedJob, JobId, JobStatus, WorkerJob
from .naming import CLUSTER_ATTRIBUTE, USER_ATTRIBUTE

T = TypeVar("T")

_PROJECTION = [
    "ClusterId", "ProcId", "JobStatus", "HoldReason", "HoldReasonCode", "LastRejMatchReason",
    "ServerTime", CLUSTER_ATTRIBUTE, USER_ATTRIBUTE,
]  # fmt: skip
_HISTORY_PROJECTION = [
    "ClusterId", "ProcId", "JobStatus", "ExitCode", "ExitBySignal", "ExitSignal",
    "JobCurrentStartDate", "EnteredCurrentStatus", "RemoveReason",
]  # fmt: skip
# Slot attributes every explanation of an idle job reads, besides those the
# job's and the slots' requirements name.
_SLOT_PROJECTION = [
    "Name", "Requirements", "START", "WithinResourceLimits", "Cpus", "Memory", "Disk", "GPUs",
    "TotalSlotCpus", "TotalSlotMemory", "TotalSlotDisk", "DynamicSlot", "PartitionableSlot",
]  # fmt: skip


class Schedd(Protocol):
    """What the rest of the client needs of a schedd: ``ScheddClient``, or a fake in tests."""

    async def owner(self) -> str: ...
    def schedd_time(self) -> float: ...
    async def submit(self, description: Mapping[str, str], count: int) -> list[JobId]: ...
    async def jobs(self, constraint: str) -> list[WorkerJob]: ...
    async def ended(self, job_ids: list[JobId], not_before: int) -> list[EndedJob]: ...
    async def history(
        self, constraint: str, not_before: int, limit: int = -1
    ) -> list[EndedJob]: ...
    async def edit(self, constraint: str, attribute: str, value: str) -> None: ...
    async def explain_idle(self, job_id: JobId) -> str | None: ...
    async def remove(self, job_spec: list[JobId] | str, reason: str) -> int: ...


@functools.cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, thread_name_prefix="htcdaskgateway-schedd")


class ScheddClient:
    """A schedd, found through the collector on first use.

    After a failed call it is looked up again: a restarted schedd may have
    a new address. A call not answered within ``timeout`` seconds raises
    ``ScheddUnavailableError`` (the binding's thread may still finish it);
    callers retry on their own schedule, and nothing that must stay timely
    (the client lease) waits for a schedd call.
    """

    def __init__(
        self, collector: str | None = None, name: str | None = None, timeout: float = 60.0
    ) -> None:
        self.collector = collector
        self.name = name
        self.timeout = timeout
        self._location: classad2.ClassAd | None = None  # the schedd's ad, from the collector
        self._owner: str | None = None
        # Seconds the schedd's clock is ahead of this machine's, from the
        # ServerTime of the last query that returned jobs.
        self.clock_offset = 0.0

    def __repr__(self) -> str:
        return f"ScheddClient(collector={self.collector!r}, name={self.name!r})"

    def schedd_time(self) -> float:
        """Now, on the schedd's clock as last measured."""
        return time.time() + self.clock_offset

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            try:
                future = loop.run_in_executor(_executor(), func, *args)
            except RuntimeError:
                # Executors take no new work once the interpreter is exiting,
                # but shutdown at exit must still remove the jobs: call directly.
                return func(*args)
            try:
                return await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                raise ScheddUnavailableError(
                    f"The schedd did not answer within {self.timeout:g} s "
                    "(gateway.htcondor.schedd-timeout): it is busy or unreachable"
                ) from None
        except HTCondorError:
            self._location = None
            raise

    def _collector(self) -> htcondor2.Collector:
        return htcondor2.Collector(self.collector) if self.collector else htcondor2.Collector()

    def _locate(self) -> htcondor2.Schedd:
        if self._location is None:
            where = self.collector or "the collector of the local HTCondor configuration"
            try:
                ads = self._collector().locateAll(htcondor2.DaemonType.Schedd)
            except htcondor2.HTCondorException as exc:
                raise ScheddUnavailableError(f"Cannot reach {where}: {exc}") from None
            if self.name is not None:
                ads = [ad for ad in ads if ad.get("Name") == self.name]
            if not ads:
                wanted = f"schedd {self.name!r}" if self.name else "schedd"
                raise ScheddUnavailableError(
                    f"No {wanted} is registered at {where}: it is down or restarting, or "
                    "gateway.htcondor.schedd / gateway.htcondor.collector name the wrong one"
                )
            if len(ads) > 1:
                known = sorted(str(ad.get("Name")) for ad in ads)
                raise ScheddUnavailableError(
                    f"{where} knows several schedds ({', '.join(known)}); "
                    "choose one with gateway.htcondor.schedd"
                )
            self._location = ads[0]
        # htcondor2.Schedd holds only the address; each call opens a connection.
        return htcondor2.Schedd(self._location)

    async def owner(self) -> str:
        """The HTCondor identity (``User``: ``name@domain``) the schedd knows this client as."""
        if self._owner is None:
            self._owner = await self._call(self._identity)
        return self._owner

    def _identity(self) -> str:
        self._locate()
        try:
            reply = htcondor2.ping(self._location, "WRITE")  # the schedd's view of who we are
        except htcondor2.HTCondorException as exc:
            raise ScheddUnavailableError(f"Cannot reach the schedd: {exc}") from None
        identity = reply.get("MyRemoteUserName")
        if not isinstance(identity, str):
            raise HTCondorError("The schedd did not say which user this client acts as")
        return identity

    async def submit(self, description: Mapping[str, str], count: int) -> list[JobId]:
        """Queue ``count`` jobs in one transaction and spool their input files.

        The jobs wait on hold until their input files are in the schedd's
        spool, so the local copies may be deleted when this returns.
        """
        return await self._call(self._submit, dict(description), count)

    def _submit(self, description: dict[str, str], count: int) -> list[JobId]:
        schedd = self._locate()
        try:
            result = schedd.submit(htcondor2.Submit(description), count=count, spool=True)
        except htcondor2.HTCondorException as exc:
            raise SubmitError(f"The schedd refused the worker jobs: {exc}") from None
        cluster, first = result.cluster(), result.first_proc()
        job_ids = [JobId.of(cluster, first + i) for i in range(result.num_procs())]
        try:
            schedd.spool(result)
        except htcondor2.HTCondorException as exc:
            schedd.act(
                htcondor2.JobAction.Remove, [str(j) for j in job_ids], "input files not spooled"
            )
            raise SubmitError(
                f"Could not send the worker credentials to the schedd: {exc}"
            ) from None
        return job_ids

    async def jobs(self, constraint: str) -> list[WorkerJob]:
        """Jobs matching ``constraint`` that are still in the queue."""
        return await self._call(self._jobs, constraint)

    def _jobs(self, constraint: str) -> list[WorkerJob]:
        try:
            ads = self._locate().query(constraint, projection=_PROJECTION)
        except htcondor2.HTCondorException as exc:
            raise HTCondorError(f"Could not query the schedd: {exc}") from None
        if ads and isinstance(ads[0].get("ServerTime"), int):
            self.clock_offset = ads[0]["ServerTime"] - time.time()
        ads = sorted(ads, key=lambda ad: (ad["ClusterId"], ad["ProcId"]))
        return [
            WorkerJob(
                job_id=JobId.of(ad["ClusterId"], ad["ProcId"]),
                status=JobStatus(ad["JobStatus"]),
                hold_reason=_string_or_none(ad.get("HoldReason")),
                cluster_name=_string_or_none(ad.get(CLUSTER_ATTRIBUTE)),
                hold_reason_code=_int_or_none(ad.get("HoldReasonCode")),
                user=_string_or_none(ad.get(USER_ATTRIBUTE)),
                last_rejection=_string_or_none(ad.get("LastRejMatchReason")),
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
        """Jobs matching ``constraint`` that left the queue since ``not_before``, newest first."""
        return await self._call(self._history, constraint, int(not_before), limit)

    def _history(self, constraint: str, not_before: int, limit: int) -> list[EndedJob]:
        try:
            ads = self._locate().history(
                constraint,
                projection=_HISTORY_PROJECTION,
                match=limit,
                since=f"EnteredCurrentStatus < {not_before}",
            )
        except htcondor2.HTCondorException as exc:
            raise HTCondorError(f"Could not read the schedd's job history: {exc}") from None
        return [_ended_job(ad) for ad in ads]

    async def edit(self, constraint: str, attribute: str, value: str) -> None:
        """Set ``attribute`` to the ClassAd expression ``value`` on matching jobs."""
        await self._call(self._edit, constraint, attribute, value)

    def _edit(self, constraint: str, attribute: str, value: str) -> None:
        try:
            self._locate().edit(constraint, attribute, value)
        except htcondor2.HTCondorException as exc:
            raise HTCondorError(f"Could not update worker jobs: {exc}") from None

    async def explain_idle(self, job_id: JobId) -> str | None:
        """Why an idle job has not started, from matching it against the pool's slots."""
        return await self._call(self._explain_idle, job_id)

    def _explain_idle(self, job_id: JobId) -> str | None:
        try:
            ads = self._locate().query(f"ClusterId == {job_id.cluster} && ProcId == {job_id.proc}")
            if not ads:
                return None
            job = ads[0]
            slots = _whole_slots(self._slots(_referenced(job, "Requirements", other=True)))
        except htcondor2.HTCondorException as exc:
            raise HTCondorError(f"Could not look at the pool: {exc}") from None
        matching = sum(1 for slot in slots if job.symmetricMatch(slot))
        if matching == 0:
            return (
                f"no slot can run it: none of the pool's {len(slots)} slots meets its "
                f"requirements ({job.get('Requirements')})"
            )
        return f"waiting for a free slot; {matching} of the pool's {len(slots)} slots could run it"

    def _slots(self, job_refs: set[str]) -> list[Any]:
        # Slot ads are large (hundreds of attributes) and a facility has
        # thousands: read only what matching needs, the attributes the job's
        # requirements name and those the slots' own policy names (found by
        # reading it; references nest, hence the rounds).
        projection = set(_SLOT_PROJECTION) | job_refs
        while True:
            slots = self._collector().query(htcondor2.AdType.Startd, projection=sorted(projection))
            wanted = set(projection)
            for slot in slots[:20]:  # the slots of a pool share a few policies
                for attribute in ("Requirements", "START", "WithinResourceLimits"):
                    wanted |= _referenced(slot, attribute, other=False)
            if wanted <= projection:
                return slots
            projection = wanted

    async def remove(self, job_spec: list[JobId] | str, reason: str) -> int:
        """Remove jobs given by ids or by a constraint; returns how many were removed."""
        return await self._call(self._remove, job_spec, reason)

    def _remove(self, job_spec: list[JobId] | str, reason: str) -> int:
        if not job_spec:
            return 0
        spec = job_spec if isinstance(job_spec, str) else [str(job) for job in job_spec]
        try:
            result = self._locate().act(htcondor2.JobAction.Remove, spec, reason)
        except htcondor2.HTCondorException as exc:
            raise HTCondorError(f"Could not remove worker jobs: {exc}") from None
        return int(result.get("TotalSuccess", 0))


def _ended_job(ad: Any) -> EndedJob:
    started, finished = ad.get("JobCurrentStartDate"), ad.get("EnteredCurrentStatus")
    by_signal = ad.get("ExitBySignal") is True
    ran = _int_or_none(started) and _int_or_none(finished)
    return EndedJob(
        job_id=JobId.of(ad["ClusterId"], ad["ProcId"]),
        status=JobStatus(ad["JobStatus"]),
        exit_code=None if by_signal else _int_or_none(ad.get("ExitCode")),
        exit_signal=_int_or_none(ad.get("ExitSignal")) if by_signal else None,
        run_seconds=float(finished - started) if ran else None,
        # The schedd's own words for a removal by the job's periodic_remove.
        removed_by_policy="PeriodicRemove" in (_string_or_none(ad.get("RemoveReason")) or ""),
    )


def _referenced(ad: Any, attribute: str, other: bool) -> set[str]:
    """Attribute names an expression of ``ad`` reads: of the matched ad (``other``) or its own."""
    if attribute not in ad:
        return set()
    expression = ad.lookup(attribute)
    refs = ad.externalRefs(expression) if other else ad.internalRefs(expression)
    names = set()
    for ref in map(str, refs):
        scope, _, name = ref.rpartition(".")
        if scope.upper() in ("", "TARGET", "MY"):
            names.add(name)
    return names


def _whole_slots(slots: list[Any]) -> list[Any]:
    """The pool's configured slots, each as if empty: could it ever run the job?

    Dynamic slots are pieces of a partitionable one and are left out; a
    partitionable slot is judged by its total resources, not what is free.
    """
    whole = []
    for slot in slots:
        if slot.get("DynamicSlot") is True:
            continue
        if slot.get("PartitionableSlot") is True:
            for resource in ("Cpus", "Memory", "Disk"):
                total = slot.get(f"TotalSlot{resource}")
                if isinstance(total, int | float):
                    slot[resource] = total
        whole.append(slot)
    return whole


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _string_or_none(value: object) -> str | None:
    # Unset attributes come back as classad2.Value.Undefined.
    return value if isinstance(value, str) else None
