"""Fakes of the client's two outside systems, for unit tests of the core.

``FakeSchedd`` keeps a queue and a history of jobs and evaluates every
constraint it is given with HTCondor's own ClassAd library, as a schedd
would, and refuses to act on another user's jobs, as a schedd does.
``FakeSchedulerLink`` answers like ``SchedulerLink`` from the real
scheduler plugin's lease and target bookkeeping, with no scheduler.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import classad2
from distributed.comm.core import CommClosedError

from htcdaskgateway.errors import ScheddUnavailableError, SubmitError
from htcdaskgateway.jobs import (
    EndedJob,
    JobId,
    JobStatus,
    QueuedCredentials,
    WorkerJob,
    input_directory,
)
from htcdaskgateway.naming import (
    CLUSTER_ATTRIBUTE,
    GROUP_ATTRIBUTE,
    LEASE_ATTRIBUTE,
    USER_ATTRIBUTE,
    worker_name,
)
from htcdaskgateway.scheduler_plugin import KeepHTCondorWorkers
from htcdaskgateway.versions import local_versions

ALICE = "alice@pool.test"
# HoldReasonCode of a job submitted with spool=True until its files arrive.
SPOOLING_INPUT = 16
BOB = "bob@pool.test"


@dataclass
class FakeJob:
    job_id: JobId
    ad: classad2.ClassAd
    status: JobStatus = JobStatus.IDLE
    hold_reason_code: int | None = None
    removed_by_policy: bool = False
    exit_code: int | None = None

    def as_ad(self) -> classad2.ClassAd:
        self.ad["JobStatus"] = int(self.status)
        if self.hold_reason_code is not None:
            self.ad["HoldReasonCode"] = self.hold_reason_code
        return self.ad


@dataclass
class FakeSchedd:
    identity: str = ALICE
    name: str | None = None  # set: job ids name it, as a pool member's do
    unavailable: bool = False  # set: every call fails, as a stopped schedd's
    refuse_submits: int = 0  # the next this many submits fail
    block: asyncio.Event | None = None  # set: calls wait for it (a schedd not answering)
    queue: dict[JobId, FakeJob] = field(default_factory=dict)
    ended_jobs: list[EndedJob] = field(default_factory=list)
    submits: list[int] = field(default_factory=list)  # count of each accepted submit
    descriptions: list[dict[str, str]] = field(default_factory=list)  # of each accepted submit
    spool_hold_looks: int = 0  # spooled jobs stay held (spooling) for this many looks
    delay: float = 0.0  # seconds every call takes (a slow schedd)
    # Set: one call answered at a time, in the order made, as the client's
    # helper process for a schedd answers them.
    serial: asyncio.Lock | None = None
    renewals: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, constraint)
    calls: int = 0
    in_flight: int = 0
    most_in_flight: int = 0  # calls answered at once, at most
    _clusters: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def _answer(self, delayed: bool = True) -> None:
        self.calls += 1
        if self.unavailable:
            raise ScheddUnavailableError(f"The schedd {self.name} did not answer")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.block is not None:
                await self.block.wait()
            delay = self.delay if delayed else 0.0
            if self.serial is not None:
                async with self.serial:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1

    async def owner(self) -> str:
        await self._answer(delayed=False)  # the real client asks once, then remembers
        return self.identity

    def schedd_time(self) -> float:
        return time.time()

    def _matching(self, constraint: str) -> list[FakeJob]:
        expression = classad2.ExprTree(constraint)
        return [job for job in self.queue.values() if expression.eval(job.as_ad()) is True]

    async def submit(
        self, description: Mapping[str, str], count: int, spool: bool = False
    ) -> list[JobId]:
        await self._answer()
        if self.refuse_submits:
            self.refuse_submits -= 1
            raise SubmitError("The schedd refused the jobs: fake refusal")
        self.descriptions.append(dict(description))
        ids = self.add(description, count, self.identity)
        for job_id in ids:
            # A spooled job's initial directory becomes its spool directory.
            self.queue[job_id].ad["Iwd"] = f"/spool/{job_id}" if spool else "/"
            if spool and self.spool_hold_looks:
                self.spooling(job_id)
                self.queue[job_id].ad["SpoolLooksLeft"] = self.spool_hold_looks
        return ids

    async def credentials_jobs(self, constraint: str) -> list[QueuedCredentials]:
        await self._answer()
        for job in self.queue.values():
            looks = job.ad.get("SpoolLooksLeft")
            if looks is not None:
                job.ad["SpoolLooksLeft"] = looks - 1
                if looks <= 1:
                    del job.ad["SpoolLooksLeft"]
                    self.set_status(job.job_id, JobStatus.IDLE)
        return [
            QueuedCredentials(job.job_id, job.status, job.ad["Iwd"])
            for job in sorted(self._matching(constraint), key=lambda j: j.job_id.sort_key)
        ]

    def add(self, description: Mapping[str, str], count: int, owner: str) -> list[JobId]:
        """Queue ``count`` jobs from a submit description's MY.* attributes, as ``owner``."""
        cluster = next(self._clusters)
        ids = []
        for proc in range(count):
            job_id = JobId.of(cluster, proc, self.name)
            ad = classad2.ClassAd({"ClusterId": cluster, "ProcId": proc, "User": owner})
            for key, value in description.items():
                if key.startswith("MY."):
                    ad[key[3:]] = classad2.ExprTree(value)
            if "transfer_input_files" in description:
                ad["TransferInput"] = description["transfer_input_files"]
            self.queue[job_id] = FakeJob(job_id, ad)
            ids.append(job_id)
        self.submits.append(count)
        return ids

    def add_foreign(self, owner: str, cluster_name: str, status: JobStatus, **attrs: str) -> JobId:
        """A job someone else queued, tagged with a cluster's name (as bob can)."""
        description = {f"MY.{CLUSTER_ATTRIBUTE}": f'"{cluster_name}"'}
        description.update({f"MY.{k}": v for k, v in attrs.items()})
        (job_id,) = self.add(description, 1, owner)
        self.submits.pop()
        self.queue[job_id].status = status
        return job_id

    async def jobs(self, constraint: str) -> list[WorkerJob]:
        await self._answer()
        return [
            WorkerJob(
                job.job_id,
                job.status,
                cluster_name=job.ad.get(CLUSTER_ATTRIBUTE),
                hold_reason_code=job.hold_reason_code,
                user=job.ad.get(USER_ATTRIBUTE),
                credentials_directory=input_directory(job.ad.get("TransferInput")),
                group=job.ad.get(GROUP_ATTRIBUTE) or "default",
            )
            for job in sorted(self._matching(constraint), key=lambda j: j.job_id.sort_key)
        ]

    async def ended(self, job_ids: list[JobId], not_before: int) -> list[EndedJob]:
        await self._answer()
        return [job for job in self.ended_jobs if job.job_id in job_ids]

    async def history(self, constraint: str, not_before: int, limit: int = -1) -> list[EndedJob]:
        await self._answer()
        return list(reversed(self.ended_jobs))[: limit if limit > 0 else None]

    async def edit(self, constraint: str, attribute: str, value: str) -> None:
        await self._answer()
        for job in self._matching(constraint):
            if job.ad["User"] == self.identity:
                job.ad[attribute] = classad2.ExprTree(value)

    async def renew_lease(self, constraint: str, seconds: int) -> None:
        self.renewals.append((time.monotonic(), constraint))
        await self.edit(constraint, LEASE_ATTRIBUTE, str(int(self.schedd_time()) + seconds))

    async def explain_idle(self, job_id: JobId) -> str | None:
        await self._answer()
        return "waiting for a free slot; 1 of the pool's 1 slots could run it"

    async def remove(self, job_spec: list[JobId] | str, reason: str) -> int:
        await self._answer()
        if isinstance(job_spec, str):
            jobs = self._matching(job_spec)
        else:
            jobs = [self.queue[j] for j in job_spec if j in self.queue]  # ids name this schedd
        removed = 0
        for job in jobs:
            if job.ad["User"] != self.identity:
                continue  # a schedd refuses to remove another user's job
            self.end(job.job_id, JobStatus.REMOVED)
            removed += 1
        return removed

    # -- what happens in the pool -------------------------------------------

    def end(self, job_id: JobId, status: JobStatus, exit_code: int | None = None,
            by_policy: bool = False) -> None:  # fmt: skip
        self.queue.pop(job_id)
        self.ended_jobs.append(
            EndedJob(
                job_id, status, exit_code=exit_code, run_seconds=1.0, removed_by_policy=by_policy
            )
        )

    def set_status(self, job_id: JobId, status: JobStatus, hold_code: int | None = None) -> None:
        self.queue[job_id].status = status
        self.queue[job_id].hold_reason_code = hold_code

    def spooling(self, job_id: JobId) -> None:
        self.set_status(job_id, JobStatus.HELD, SPOOLING_INPUT)

    def mine(self) -> list[JobId]:
        return sorted(
            (j for j, job in self.queue.items() if job.ad["User"] == self.identity),
            key=lambda j: j.sort_key,
        )


class FakeSchedulerLink:
    """A ``SchedulerLink`` answered by the real plugin's bookkeeping, with no scheduler."""

    def __init__(self, plugin: KeepHTCondorWorkers | None = None) -> None:
        self.plugin = plugin or KeepHTCondorWorkers()
        self.workers: set[JobId] = set()  # jobs whose workers joined
        self.pods: set[str] = set()  # the gateway's own workers that joined (pods)
        self.adaptive_wanted = 0
        # Workers wanted by a group offering these resources (sorted names).
        self.adaptive_wanted_by_resources: dict[tuple[str, ...], int] = {}
        self.retired: list[JobId] = []
        self.unreachable = False
        # Calls that time out, as those of a scheduler on a crowded host; -1: all.
        self.late_answers = 0
        # Package versions the scheduler and (by job) the workers report;
        # None: this interpreter's.
        self.scheduler_versions: dict[str, str | None] | None = None
        self.worker_versions: dict[JobId, dict[str, str | None]] = {}
        self.versions_asked = 0
        self.confirms = 0
        self.drop_once: set[str] = set()  # calls whose next answer is a dropped connection

    def fail_next(self, call: str) -> None:
        """The next ``call`` fails as a proxy restart makes it fail."""
        self.drop_once.add(call)

    def _dropped(self, call: str) -> None:
        if call in self.drop_once:
            self.drop_once.discard(call)
            raise CommClosedError(f"in <TLS (closed) ConnectionPool.{call}>: Stream is closed")

    def _check(self) -> None:
        if self.unreachable:
            raise OSError("scheduler unreachable")
        if self.late_answers:
            self.late_answers -= self.late_answers > 0
            raise TimeoutError

    async def renew(self, token: str, ttl: float | None, apply_ttl: float | None = None) -> dict:
        self._check()
        return self.plugin.renew(token, ttl=ttl, apply_ttl=apply_ttl)

    async def set_target(
        self, token: str, target: dict[str, Any] | None, apply_ttl: float,
        group: str = "default", spec: dict[str, Any] | None = None,
    ) -> dict:  # fmt: skip
        self._check()
        return self.plugin.set_target(token, target, apply_ttl, group=group, spec=spec)

    async def delete_group(self, token: str, group: str, apply_ttl: float) -> dict:
        self._check()
        return self.plugin.delete_group(token, group, apply_ttl)

    async def confirm(self, token: str, generation: int | None, group: str = "default") -> dict:
        self._check()
        self.confirms += 1
        return self.plugin.confirm(token, generation, group)

    async def release(self, token: str) -> None:
        self._check()
        self.plugin.release(token)

    async def joined_jobs(self) -> set[JobId]:
        self._check()
        return set(self.workers)

    async def versions(self) -> dict[str, Any]:
        self._check()
        self.versions_asked += 1
        mine = local_versions()
        return {
            "scheduler": self.scheduler_versions or mine,
            "workers": {worker_name(j): self.worker_versions.get(j, mine) for j in self.workers},
        }

    async def pod_workers(self) -> set[str]:
        self._check()
        return set(self.pods)

    async def jobs_to_close(self, n: int, among: list[JobId] | None = None) -> list[JobId]:
        self._check()
        self._dropped("jobs_to_close")
        workers = self.workers if among is None else self.workers & set(among)
        return sorted(workers, key=lambda j: j.sort_key, reverse=True)[:n]

    async def adaptive_target(
        self, target_duration: float, resources: dict[str, float] | None = None
    ) -> int:
        self._check()
        if resources:
            return self.adaptive_wanted_by_resources.get(tuple(sorted(resources)), 0)
        return self.adaptive_wanted

    async def retire(self, job_ids: list[JobId]) -> None:
        self._check()
        self.retired.extend(job_ids)
        self.workers -= set(job_ids)
