"""What the client knows about worker jobs: identity, state, selection, tracking.

``JobSelector`` is the one place a job constraint is written: every query
and action on worker jobs goes through it, so none can reach a job that is
not the user's, or not the gateway's. ``JobTracker`` keeps the table of a
cluster's jobs and learns how those that left ended; it only reads.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import HTCondorError
from .naming import (
    CLUSTER_ATTRIBUTE,
    CREDENTIALS_ROLE,
    GATEWAY_ATTRIBUTE,
    GROUP_ATTRIBUTE,
    JOB_ID,
    ROLE_ATTRIBUTE,
    USER_ATTRIBUTE,
    checked_cluster_name,
)
from .targets import DEFAULT_GROUP

if TYPE_CHECKING:
    from .schedd import Schedd

logger = logging.getLogger(__name__)

# HoldReasonCode of a job whose input files could not be sent to its slot.
TRANSFER_INPUT_ERROR = 13


class JobId(str):
    """An HTCondor job id and its schedd: ``"<ClusterId>.<ProcId>@<schedd name>"``.

    A job id is unique only within its schedd, and a cluster's jobs may be
    spread over several: the schedd's name is part of the identity, and of
    the worker's name (``htc-<JobId>``). ``"<ClusterId>.<ProcId>"`` alone is
    accepted where the schedd does not matter (tests, a single schedd).
    A ``str`` so that it prints, compares and serialises as is; built only
    from a well-formed id.
    """

    __slots__ = ()

    def __new__(cls, value: str) -> JobId:
        if isinstance(value, JobId):
            return value
        if not isinstance(value, str) or not JOB_ID.fullmatch(value):
            raise ValueError(f"Not an HTCondor job id: {value!r}")
        return super().__new__(cls, value)

    @classmethod
    def of(cls, cluster: int, proc: int, schedd: str | None = None) -> JobId:
        local = f"{int(cluster)}.{int(proc)}"
        return cls(local if schedd is None else f"{local}@{schedd}")

    @property
    def local(self) -> str:
        """``"<ClusterId>.<ProcId>"``, as the schedd knows the job."""
        return self.partition("@")[0]

    @property
    def schedd(self) -> str | None:
        """The name of the schedd that queued the job, if known."""
        return self.partition("@")[2] or None

    @property
    def cluster(self) -> int:
        return int(self.local.partition(".")[0])

    @property
    def proc(self) -> int:
        return int(self.local.partition(".")[2])

    @property
    def sort_key(self) -> tuple[str, int, int]:
        return self.schedd or "", self.cluster, self.proc


class JobStatus(enum.IntEnum):
    """HTCondor's ``JobStatus`` codes."""

    IDLE = 1
    RUNNING = 2
    REMOVED = 3
    COMPLETED = 4
    HELD = 5
    TRANSFERRING_OUTPUT = 6
    SUSPENDED = 7

    @property
    def is_active(self) -> bool:
        """Counts toward the cluster's size (queued, running or held)."""
        return self not in (JobStatus.REMOVED, JobStatus.COMPLETED)


@dataclass(frozen=True)
class WorkerJob:
    job_id: JobId
    status: JobStatus
    hold_reason: str | None = None
    cluster_name: str | None = None  # the gateway cluster the job belongs to
    hold_reason_code: int | None = None
    user: str | None = None  # the gateway user the job works for
    last_rejection: str | None = None  # the negotiator's last "no match" reason
    credentials_directory: str | None = None  # where its shadow takes the credentials from
    # Held because its credentials job left the queue before the job started:
    # the reconciler replaces it (``JobTracker.refresh`` decides).
    credentials_lost: bool = False
    group: str = DEFAULT_GROUP  # the worker group the job belongs to

    def __post_init__(self) -> None:
        object.__setattr__(self, "job_id", JobId(self.job_id))

    @property
    def is_stuck(self) -> bool:
        """Held: it will not start until someone releases it.

        (Worker jobs are not spooled, so no hold of theirs is a passing one;
        one held for lost credentials is replaced, not waited on.)
        """
        return self.status is JobStatus.HELD and not self.credentials_lost

    @property
    def may_have_lost_credentials(self) -> bool:
        """Held because its input could not be sent: maybe its credentials job is gone."""
        return (
            self.status is JobStatus.HELD
            and self.hold_reason_code == TRANSFER_INPUT_ERROR
            and self.credentials_directory is not None
        )


@dataclass(frozen=True)
class QueuedCredentials:
    """The job whose spool holds a cluster's credentials (``credentials_job``)."""

    job_id: JobId
    status: JobStatus
    directory: str  # its initial directory: the spool directory, once spooled

    @property
    def is_ready(self) -> bool:
        """Spooled: idle, never to run, its files in place."""
        return self.status is JobStatus.IDLE


@dataclass(frozen=True)
class EndedJob:
    """A job that left the queue, as the schedd's history recorded it."""

    job_id: JobId
    status: JobStatus  # COMPLETED (ended on its own) or REMOVED
    exit_code: int | None = None
    exit_signal: int | None = None
    run_seconds: float | None = None
    # The schedd's own reason for a removal; set when a periodic_remove
    # expression (the lease) removed it rather than a person or a client.
    removed_by_policy: bool = False
    # Left the queue, but the schedd's history never recorded it (history
    # turned off, or a schedd that restarted without it).
    unrecorded: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "job_id", JobId(self.job_id))

    def describe(self) -> str:
        """What happened, e.g. "job 12.0 exited with code 1 after 61 s"."""
        if self.unrecorded:
            return f"job {self.job_id} left the queue; the schedd's history has no record of how"
        if self.status is JobStatus.REMOVED:
            how = (
                "was removed by the schedd's lease check"
                if self.removed_by_policy
                else "was removed"
            )
        elif self.exit_signal is not None:
            how = f"was killed by signal {self.exit_signal}"
        else:
            how = f"exited with code {self.exit_code}"
        after = f" after {self.run_seconds:.0f} s" if self.run_seconds is not None else ""
        return f"job {self.job_id} {how}{after}"

    def failed(self, worker_joined: bool) -> bool:
        """Ended without serving: its worker never joined, it crashed, or the lease removed it.

        A job the schedd removed because its lease had lapsed counts too: a
        replacement would carry the same lease and go the same way. So does
        one that left unrecorded before its worker joined: without a record
        nothing says it served, and a worker that crashes at start must not
        be resubmitted for good.
        """
        if self.unrecorded:
            return not worker_joined
        if self.status is JobStatus.REMOVED:
            return self.removed_by_policy
        if self.status is not JobStatus.COMPLETED:
            return False
        return not worker_joined or self.exit_signal is not None or self.exit_code != 0


@dataclass(frozen=True)
class JobSelector:
    """Which worker jobs a query or action may touch, as one ClassAd constraint.

    ``owner`` is the HTCondor identity the schedd authenticated this client
    as (its ``User`` attribute, ``name@domain``): another user's job that
    carries the same cluster name never matches. ``gateway`` names the
    gateway whose clusters the jobs serve (``GATEWAY_ATTRIBUTE``), so two
    gateways sharing a schedd never judge each other's jobs.
    ``gateway_user`` is the gateway user the jobs work for
    (``USER_ATTRIBUTE``): where hub users share one HTCondor identity (one
    submit token for the hub), ``User`` is the same for all of them, and
    only this keeps alice's cleanup off bob's live clusters. Keyword-only
    and required, so that no selection can leave it out.
    """

    owner: str
    gateway: str
    cluster: str | None = None  # None: every cluster of this gateway
    gateway_user: str = dataclasses.field(kw_only=True)
    # A worker group's jobs only (DEFAULT_GROUP: those with no group
    # attribute); None: every group. Credentials jobs belong to no group.
    group: str | None = dataclasses.field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.cluster is not None:
            checked_cluster_name(self.cluster)

    def for_cluster(self, cluster: str) -> JobSelector:
        return dataclasses.replace(self, cluster=cluster)

    def for_group(self, group: str | None) -> JobSelector:
        return dataclasses.replace(self, group=group)

    def constraint(self, *statuses: JobStatus) -> str:
        """The worker jobs (of the group, in one of ``statuses``, if given)."""
        return self._terms(statuses, f"{ROLE_ATTRIBUTE} =?= undefined", *self._group_terms())

    def _group_terms(self) -> list[str]:
        if self.group is None:
            return []
        if self.group == DEFAULT_GROUP:
            return [f"{GROUP_ATTRIBUTE} =?= undefined"]
        return [f"{GROUP_ATTRIBUTE} == {classad_string(self.group)}"]

    def credentials_constraint(self) -> str:
        """The job(s) carrying the cluster's credentials for its workers."""
        return self._terms((), f"{ROLE_ATTRIBUTE} == {classad_string(CREDENTIALS_ROLE)}")

    def every_job_constraint(self, *statuses: JobStatus) -> str:
        """Worker and credentials jobs alike: what removal and leases cover."""
        return self._terms(statuses)

    def _terms(self, statuses: tuple[JobStatus, ...], *extra: str) -> str:
        terms = [f"User == {classad_string(self.owner)}"]
        terms.append(f"{GATEWAY_ATTRIBUTE} == {classad_string(self.gateway)}")
        terms.append(f"{USER_ATTRIBUTE} == {classad_string(self.gateway_user)}")
        if self.cluster is None:
            terms.append(f"{CLUSTER_ATTRIBUTE} =!= undefined")
        else:
            terms.append(f"{CLUSTER_ATTRIBUTE} == {classad_string(self.cluster)}")
        terms.extend(extra)
        if statuses:
            terms.append("(" + " || ".join(f"JobStatus == {int(s)}" for s in statuses) + ")")
        return " && ".join(terms)


def classad_string(value: str) -> str:
    """``value`` as a ClassAd string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def count_by_status(jobs: Iterable[WorkerJob]) -> dict[str, int]:
    """Idle, running and held counts, for tables and reports."""
    counts = {"idle": 0, "running": 0, "held": 0}
    for job in jobs:
        name = job.status.name.lower()
        if name in counts:
            counts[name] += 1
    return counts


def removal_order(jobs: Iterable[WorkerJob]) -> list[WorkerJob]:
    """Jobs in the order to remove them when scaling down.

    Idle and held jobs hold no data, so they go first; among running ones
    the newest go first, as they have done the least work.
    """
    rank = {JobStatus.IDLE: 0, JobStatus.HELD: 1}

    def key(job: WorkerJob) -> tuple[int, int, int]:
        _, cluster, proc = job.job_id.sort_key
        return rank.get(job.status, 2), -cluster, -proc

    return sorted(jobs, key=key)


# An idle job is matched against the pool's slots to explain why it waits
# once it has been idle this long (seconds); one explanation per submit
# transaction is reused for IDLE_REASON_TTL seconds, and at most one is
# asked for per refresh.
IDLE_EXPLAIN_AFTER = 5.0
IDLE_REASON_TTL = 60.0
# Jobs that end on their own without a worker joining are replaced, but
# after this many in a row the cluster stops submitting until a new target
# is set: a worker that cannot start would otherwise be resubmitted forever.
FAILURES_BEFORE_PAUSE = 3


async def select_jobs(
    schedd: Schedd, gateway: str, cluster: str | None, user: str, group: str | None = None
) -> JobSelector:
    """The jobs of ``user`` (as the schedd authenticates this client, and at
    the gateway) that serve ``gateway``; of one cluster and worker group if
    named. The one place a selection is made, so none leaves out a part of it."""
    owner = await schedd.owner()
    return JobSelector(owner, gateway, cluster, gateway_user=user, group=group)


# Seconds to keep looking for a vanished job in the schedd's history.
HISTORY_WAIT = 60.0


class JobTracker:
    """The cluster's jobs as last seen, and what became of those that left.

    ``refresh()`` reads the queue (the selector's jobs only) and the
    history of jobs that left it unasked, counting failures in a row;
    ``explain_idle()`` asks the pool why idle jobs wait, rate-limited.
    Nothing here acts on jobs.
    """

    def __init__(
        self,
        schedd: Schedd,
        gateway_id: str,
        cluster: str,
        *,
        user: str,
        clock: Any = time,
        group: str | None = None,
    ) -> None:
        self.group = group  # a worker group's jobs only; None: every group
        self.schedd = schedd
        self.gateway_id = gateway_id
        self.cluster = checked_cluster_name(cluster)
        self.user = user  # the gateway user the cluster's jobs work for
        self._clock = clock
        self.table: list[WorkerJob] = []  # active jobs, as of the last refresh
        self.joined: set[JobId] = set()  # jobs whose worker has joined the scheduler
        self.failures: list[EndedJob] = []  # newest last
        self.failures_in_a_row = 0
        self._last_seen: dict[JobId, float] = {}  # epoch second last seen queued
        self._removed_here: set[JobId] = set()
        self._idle_since: dict[JobId, float] = {}
        self._in_scheduler: set[JobId] = set()  # as of the last saw_workers()
        # (schedd, ClusterId) of a submit transaction -> (when, why its jobs wait)
        self._idle_reasons: dict[tuple[str | None, int], tuple[float, str]] = {}

    @property
    def paused(self) -> bool:
        """Too many jobs in a row ended without serving: submit no more for now."""
        return self.failures_in_a_row >= FAILURES_BEFORE_PAUSE

    def reset_failures(self) -> None:
        self.failures_in_a_row = 0

    def started(self, job_ids: Iterable[JobId]) -> None:
        """Jobs just queued: counted at once, so a step right after does not queue them again."""
        job_ids = list(job_ids)
        # Watched from now on, so a job that fails before the next look is noticed.
        self._last_seen.update(dict.fromkeys(job_ids, self._clock.time()))
        group = self.group or DEFAULT_GROUP
        self.table = [*self.table, *(WorkerJob(j, JobStatus.IDLE, group=group) for j in job_ids)]

    @property
    def awaited(self) -> set[JobId]:
        """This tracker's jobs seen queued or just queued, whose end it still watches for."""
        return set(self._last_seen)

    def stopping(self, job_ids: Iterable[JobId]) -> None:
        """Jobs about to be removed by this client: their end is no failure."""
        self._removed_here.update(job_ids)

    def stopped(self, job_ids: Iterable[JobId]) -> None:
        """Jobs removed: no longer counted."""
        gone = set(job_ids)
        self.table = [job for job in self.table if job.job_id not in gone]

    def saw_workers(self, job_ids: Iterable[JobId]) -> None:
        """The jobs whose workers are in the scheduler now."""
        self._in_scheduler = set(job_ids)
        new = self._in_scheduler - self.joined
        if new:
            self.failures_in_a_row = 0  # a worker joined: the jobs can work
            self.joined |= new

    async def selector(self) -> JobSelector:
        """This cluster's jobs, of this user (to the schedd and the gateway) and gateway."""
        return await select_jobs(
            self.schedd, self.gateway_id, self.cluster, self.user, group=self.group
        )

    async def refresh(self) -> list[WorkerJob]:
        selector = await self.selector()
        jobs = await self.schedd.jobs(selector.constraint())
        self.table = await self._mark_lost_credentials(
            selector, [job for job in jobs if job.status.is_active]
        )
        await self._notice_ended(self.table)
        self._forget_gone()
        return self.table

    def _forget_gone(self) -> None:
        # What a long adaptive cluster would otherwise accumulate. A job stays
        # "joined" while queued, while its end is still awaited (_last_seen:
        # _notice_ended judges that end by it), or while its worker is still
        # in the scheduler (a job on a schedd not answering): dropping that
        # one would make the next saw_workers() count it as newly joined.
        keep = {job.job_id for job in self.table} | set(self._last_seen) | self._in_scheduler
        self.joined &= keep
        # An idle reason is shown only for a job in the table.
        transactions = {_transaction(job.job_id) for job in self.table}
        self._idle_reasons = {
            key: known for key, known in self._idle_reasons.items() if key in transactions
        }

    async def _mark_lost_credentials(
        self, selector: JobSelector, jobs: list[WorkerJob]
    ) -> list[WorkerJob]:
        # A worker job names its credentials job's spool when it is queued,
        # and its shadow reads the files only when it starts. If the
        # credentials job left in between (its lease lapsed while the schedd
        # was frozen, a condor_rm, or an evicted job starting again later),
        # the job is held for files that will never come back.
        suspects = [job for job in jobs if job.may_have_lost_credentials]
        if not suspects:
            return jobs
        live = {
            (found.job_id.schedd, found.directory)
            for found in await self.schedd.credentials_jobs(selector.credentials_constraint())
        }
        lost = {
            job.job_id
            for job in suspects
            if (job.job_id.schedd, job.credentials_directory) not in live
        }
        return [
            dataclasses.replace(job, credentials_lost=True) if job.job_id in lost else job
            for job in jobs
        ]

    async def _notice_ended(self, active: list[WorkerJob]) -> None:
        now = self._clock.time()
        queued = {job.job_id for job in active}
        self._last_seen.update(dict.fromkeys(queued, now))
        gone = []
        for job_id in [job_id for job_id in self._last_seen if job_id not in queued]:
            if job_id in self._removed_here:  # removed by this client: nothing to learn
                self._removed_here.discard(job_id)
                del self._last_seen[job_id]
            else:
                gone.append(job_id)
        if not gone:
            return
        # The history scan stops at jobs that left well before these were last seen.
        not_before = int(min(self._last_seen[job_id] for job_id in gone) - HISTORY_WAIT)
        try:
            ended = await self.schedd.ended(gone, not_before)
        except HTCondorError:
            logger.warning("Could not learn how jobs %s ended", gone)
            return
        recorded = {job.job_id for job in ended}
        for job_id in gone:  # never recorded (history off, or a slow history)
            if job_id not in recorded and now - self._last_seen[job_id] > HISTORY_WAIT:
                ended.append(EndedJob(job_id, JobStatus.REMOVED, unrecorded=True))
        for job in ended:
            if self._last_seen.pop(job.job_id, None) is None:
                continue
            if job.failed(worker_joined=job.job_id in self.joined):
                self.failures = [*self.failures[-(FAILURES_BEFORE_PAUSE * 3) :], job]
                self.failures_in_a_row += 1

    async def explain_idle(self) -> None:
        """Learn why long-idle jobs wait: at most one question to the pool per call."""
        now = self._clock.monotonic()
        idle = [job for job in self.table if job.status is JobStatus.IDLE]
        self._idle_since = {job.job_id: self._idle_since.get(job.job_id, now) for job in idle}
        for job in idle:
            known = self._idle_reasons.get(_transaction(job.job_id))
            if now - self._idle_since[job.job_id] < IDLE_EXPLAIN_AFTER:
                continue
            if known is None or now - known[0] > IDLE_REASON_TTL:
                reason = await self.schedd.explain_idle(job.job_id)
                self._idle_reasons[_transaction(job.job_id)] = (now, reason or "")
                return

    def reason(self, job: WorkerJob) -> str:
        """Why a job is held, or idle, as far as known; "" otherwise."""
        if job.credentials_lost:
            return "its credentials job left the queue before it started; being replaced"
        if job.status is JobStatus.HELD:
            return job.hold_reason or ""
        if job.status is JobStatus.IDLE:
            known = self._idle_reasons.get(_transaction(job.job_id))
            # The negotiator's own text ends in a space ("no match found ").
            return (known[1] if known else "") or (job.last_rejection or "").strip()
        return ""


def _transaction(job_id: JobId) -> tuple[str | None, int]:
    return job_id.schedd, job_id.cluster


def input_directory(transfer_input: str | None) -> str | None:
    """The directory of a job's first input file (a worker job's: its credentials)."""
    if not transfer_input:
        return None
    first = str(transfer_input).split(",")[0].strip()
    directory = first.rpartition("/")[0]
    return directory or None
