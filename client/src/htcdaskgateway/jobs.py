"""What the client knows about a worker job."""

from __future__ import annotations

import enum
from dataclasses import dataclass


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
    job_id: str  # "ClusterId.ProcId"
    status: JobStatus
    hold_reason: str | None = None
    cluster_name: str | None = None  # the gateway cluster the job belongs to
    hold_reason_code: int | None = None
    user: str | None = None  # the gateway user the job works for
    last_rejection: str | None = None  # the negotiator's last "no match" reason

    @property
    def is_stuck(self) -> bool:
        """Held for a reason other than its input files still being spooled."""
        return self.status is JobStatus.HELD and self.hold_reason_code != SPOOLING_INPUT


# HoldReasonCode of a job submitted with spool=True until its files arrive.
SPOOLING_INPUT = 16


@dataclass(frozen=True)
class EndedJob:
    """A job that left the queue, as the schedd's history recorded it."""

    job_id: str
    status: JobStatus  # COMPLETED (ended on its own) or REMOVED
    exit_code: int | None = None
    exit_signal: int | None = None
    run_seconds: float | None = None

    def describe(self) -> str:
        """What happened, e.g. "job 12.0 exited with code 1 after 61 s"."""
        if self.status is JobStatus.REMOVED:
            how = "was removed"
        elif self.exit_signal is not None:
            how = f"was killed by signal {self.exit_signal}"
        else:
            how = f"exited with code {self.exit_code}"
        after = f" after {self.run_seconds:.0f} s" if self.run_seconds is not None else ""
        return f"job {self.job_id} {how}{after}"

    def failed(self, worker_joined: bool) -> bool:
        """Ended on its own without serving: its worker never joined, or it crashed."""
        if self.status is not JobStatus.COMPLETED:
            return False
        return not worker_joined or self.exit_signal is not None or self.exit_code != 0


def count_by_status(jobs: list[WorkerJob]) -> dict[str, int]:
    """Idle, running and held counts, for tables and reports."""
    counts = {"idle": 0, "running": 0, "held": 0}
    for job in jobs:
        name = job.status.name.lower()
        if name in counts:
            counts[name] += 1
    return counts


def removal_order(jobs: list[WorkerJob]) -> list[WorkerJob]:
    """Jobs in the order to remove them when scaling down.

    Idle and held jobs hold no data, so they go first; among running ones
    the newest go first, as they have done the least work.
    """
    rank = {JobStatus.IDLE: 0, JobStatus.HELD: 1}
    return sorted(
        jobs,
        key=lambda job: (rank.get(job.status, 2), [-int(p) for p in job.job_id.split(".")]),
    )
