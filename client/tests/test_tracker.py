"""The job tracker of a long-lived cluster: what it remembers stays bounded."""

from __future__ import annotations

import asyncio

from htcdaskgateway.jobs import IDLE_EXPLAIN_AFTER, EndedJob, JobId, JobStatus, JobTracker
from htcdaskgateway.settings import HTCondorSettings
from htcdaskgateway.submit import worker_job_description

from .fakes import FakeSchedd
from .test_reconciler import Clock

CLUSTER = "dask-gateway.abc123"
GATEWAY = "gateway-under-test"
ROUNDS = 40


def _description():
    return worker_job_description(
        HTCondorSettings.from_config(), CLUSTER, "tls://scheduler.invalid:8786", "/spool",
        user="alice", gateway_id=GATEWAY, lease=60,
    )  # fmt: skip


def test_a_tracker_over_jobs_that_come_and_go_keeps_bounded_memory():
    # An adaptive cluster: every round two jobs are queued, wait long enough
    # to have their idle reason asked, run, their workers join, and they end.
    schedd, clock = FakeSchedd(), Clock()
    tracker = JobTracker(schedd, GATEWAY, CLUSTER, user="alice", clock=clock)
    description = _description()
    sizes = []

    async def look(in_scheduler: list[JobId]) -> None:
        # As Reconciler.observe(): the scheduler's workers first, then the queue.
        tracker.saw_workers(in_scheduler)
        await tracker.refresh()

    async def body() -> None:
        for _ in range(ROUNDS):
            ids = await schedd.submit(description, 2)
            tracker.started(ids)
            await look([])
            await tracker.explain_idle()
            clock.now += IDLE_EXPLAIN_AFTER + 1
            await tracker.explain_idle()  # asks the pool: one reason per submit transaction
            for job_id in ids:
                schedd.set_status(job_id, JobStatus.RUNNING)
            await look(ids)
            for job_id in ids:
                schedd.end(job_id, JobStatus.COMPLETED, exit_code=0)
            clock.now += 1
            await look(ids)  # the workers leave the scheduler a little after their jobs
            await look([])
            sizes.append((len(tracker.joined), len(tracker._idle_reasons)))

    asyncio.run(body())
    assert max(sizes) == (0, 0), sizes[-3:]
    assert tracker.failures_in_a_row == 0, "the jobs that served ended as they should"


def test_a_worker_whose_job_is_not_in_the_table_stays_joined():
    # Its schedd does not answer, or its job left and the worker lingers: it
    # is not newly joined on every look.
    schedd, clock = FakeSchedd(), Clock()
    tracker = JobTracker(schedd, GATEWAY, CLUSTER, user="alice", clock=clock)
    elsewhere = JobId("5.0@other-schedd")

    async def body() -> None:
        for _ in range(3):
            tracker.saw_workers([elsewhere])
            await tracker.refresh()
            assert tracker.joined == {elsewhere}
            tracker.failures_in_a_row = 1  # as an unrelated failure would
        tracker.saw_workers([elsewhere])
        assert tracker.failures_in_a_row == 1, "counted as a worker that joined just now"

    asyncio.run(body())


def test_a_joined_job_that_ended_is_still_known_as_joined_when_its_end_is_learned():
    # Its end shows up in the history only a look later: meanwhile it must
    # stay "joined", or its ordinary end would count as a failure.
    schedd, clock = FakeSchedd(), Clock()
    tracker = JobTracker(schedd, GATEWAY, CLUSTER, user="alice", clock=clock)
    description = _description()

    async def body() -> None:
        (job_id,) = await schedd.submit(description, 1)
        tracker.started([job_id])
        schedd.set_status(job_id, JobStatus.RUNNING)
        tracker.saw_workers([job_id])
        await tracker.refresh()
        schedd.queue.pop(job_id)  # left the queue, not yet in the history
        tracker.saw_workers([])  # and its worker left the scheduler
        await tracker.refresh()
        assert job_id in tracker.joined
        schedd.ended_jobs.append(EndedJob(job_id, JobStatus.COMPLETED, exit_code=0))
        tracker.saw_workers([])
        await tracker.refresh()
        assert tracker.failures_in_a_row == 0
        assert job_id not in tracker.joined

    asyncio.run(body())
