"""The cluster core against fakes of the schedd and the scheduler: targets,
ownership, failures, backoff, caps, races, the lease path."""

from __future__ import annotations

import asyncio

from htcdaskgateway.clocks import SYSTEM_CLOCK
from htcdaskgateway.jobs import (
    FAILURES_BEFORE_PAUSE,
    TRANSFER_INPUT_ERROR,
    JobId,
    JobStatus,
    JobTracker,
)
from htcdaskgateway.naming import GATEWAY_ATTRIBUTE, LEASE_ATTRIBUTE
from htcdaskgateway.reconciler import BACKOFF_FIRST, Reconciler
from htcdaskgateway.settings import HTCondorSettings
from htcdaskgateway.submit import credentials_job_description, worker_job_description
from htcdaskgateway.targets import AdaptTarget, ScaleTarget, target_from_wire, target_to_wire
from htcdaskgateway.watch import Watcher

from .fakes import ALICE, BOB, FakeSchedd, FakeSchedulerLink

CLUSTER = "dask-gateway.abc123"
GATEWAY = "http://gateway.test:8000"


class Clock:
    """time, monotonic and sleep that tests move by hand (``advance``)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        while self.now < until:
            await asyncio.sleep(0.002)

    async def advance(self, seconds: float, step: float = 1.0) -> None:
        """Move on by ``seconds``, a ``step`` at a time, letting the loops run at each."""
        for _ in range(round(seconds / step)):
            self.now += step
            for _ in range(3):
                await asyncio.sleep(0.003)


def make(
    schedd: FakeSchedd | None = None,
    clock: Clock | None = None,
    cluster: str = CLUSTER,
    token: str | None = None,
):
    schedd = schedd or FakeSchedd()
    link = FakeSchedulerLink()
    settings = HTCondorSettings.from_config()
    clock = clock or Clock()

    class Workers:  # workers.GroupWorkers, without the credentials job
        async def start(self, count: int) -> list[JobId]:
            description = worker_job_description(
                settings, cluster, "tls://proxy:8786", "/spool",
                user="alice", gateway_id=GATEWAY, lease=60,
            )  # fmt: skip
            return await schedd.submit(description, count)

        async def stop(self, job_ids: list[JobId], reason: str) -> None:
            await schedd.remove(job_ids, reason)

    tracker = JobTracker(schedd, GATEWAY, cluster, user="alice", clock=clock)
    return schedd, link, Reconciler(tracker, link, Workers(), token, clock=clock)


def run(coro):
    return asyncio.run(coro)


def test_target_round_trips_through_the_scheduler_plugin_form():
    for target in (ScaleTarget(3, 100), AdaptTarget(0, 10, 3.0, 3, 5.0), None):
        assert target_from_wire(target_to_wire(target)) == target


def test_a_scale_target_is_met_once_and_lost_jobs_are_replaced():
    schedd, _, reconciler = make()
    reconciler.want(ScaleTarget(3, 100), 1)

    async def body():
        await reconciler.step()
        await reconciler.step()  # nothing more: the jobs are counted
        assert schedd.submits == [3]
        lost = schedd.mine()[0]
        schedd.end(lost, JobStatus.REMOVED)  # condor_rm behind the client's back
        await reconciler.step()
        assert schedd.submits == [3, 1]
        assert len(schedd.mine()) == 3 and lost not in schedd.mine()

    run(body())


def test_another_users_job_with_the_clusters_name_is_neither_counted_nor_touched():
    # bob tags his own jobs with alice's cluster name (names are public in the queue).
    schedd, _, reconciler = make()
    bobs = [
        schedd.add_foreign(BOB, CLUSTER, status, **{GATEWAY_ATTRIBUTE: f'"{GATEWAY}"'})
        for status in (JobStatus.IDLE, JobStatus.RUNNING, JobStatus.HELD)
    ]
    reconciler.want(ScaleTarget(2, 100), 1)

    async def body():
        await reconciler.step()
        assert schedd.submits == [2], "bob's jobs were counted as alice's"
        assert {j.job_id for j in reconciler.tracker.table} == set(schedd.mine())
        reconciler.want(ScaleTarget(0, 100), 2)
        await reconciler.step()
        assert schedd.mine() == []
        assert all(job in schedd.queue for job in bobs), "bob's jobs were removed"

    run(body())


def test_a_job_of_another_gateway_is_not_counted():
    schedd, _, reconciler = make()
    schedd.add_foreign(ALICE, CLUSTER, JobStatus.IDLE, **{GATEWAY_ATTRIBUTE: '"http://other:8000"'})
    reconciler.want(ScaleTarget(1, 100), 1)
    run(reconciler.step())
    assert schedd.submits == [1]
    assert len(reconciler.tracker.table) == 1


def test_scaling_down_removes_waiting_jobs_then_retires_the_cheapest_workers():
    schedd, link, reconciler = make()
    reconciler.want(ScaleTarget(4, 100), 1)

    async def body():
        await reconciler.step()
        running = schedd.mine()[:3]
        for job in running:
            schedd.set_status(job, JobStatus.RUNNING)
        link.workers = set(running)
        reconciler.want(ScaleTarget(1, 100), 2)
        await reconciler.step()
        # The idle job first (no data), then two workers retired before removal.
        assert len(link.retired) == 2
        assert len(schedd.mine()) == 1 and schedd.mine()[0] in running

    run(body())


def test_jobs_that_keep_failing_pause_submission_until_a_new_target():
    schedd, _link, reconciler = make()
    reconciler.want(ScaleTarget(1, 100), 1)

    async def body():
        for _ in range(FAILURES_BEFORE_PAUSE):
            await reconciler.step()
            (job,) = schedd.mine()
            schedd.end(job, JobStatus.COMPLETED, exit_code=1)
        await reconciler.step()
        assert reconciler.tracker.paused
        assert schedd.mine() == [], "kept resubmitting a job that cannot start"
        reconciler.want(ScaleTarget(1, 100), 2)
        await reconciler.step()
        assert len(schedd.mine()) == 1

    run(body())


def test_jobs_removed_by_the_lease_count_as_failures_not_endless_resubmits():
    schedd, _, reconciler = make()
    reconciler.want(ScaleTarget(1, 100), 1)

    async def body():
        for _ in range(FAILURES_BEFORE_PAUSE + 2):
            await reconciler.step()
            for job in schedd.mine():
                schedd.end(job, JobStatus.REMOVED, by_policy=True)
        assert sum(schedd.submits) == FAILURES_BEFORE_PAUSE

    run(body())


def test_a_job_held_because_its_credentials_job_left_is_replaced_and_no_other_held_job_is():
    # Reproduction (CI): the schedd froze past the lease; on thawing it
    # removed the idle credentials job just after a worker job named its
    # spool, and the worker job was held for files that never came back.
    schedd, _, reconciler = make()
    reconciler.want(ScaleTarget(2, 100), 1)

    async def body():
        await reconciler.step()
        lost, kept = schedd.mine()
        for job_id in (lost, kept):
            schedd.set_status(job_id, JobStatus.HELD, hold_code=TRANSFER_INPUT_ERROR)
        # kept names a credentials job still queued (another spool): its
        # hold is the operator's to resolve, and is reported, not replaced.
        schedd.queue[kept].ad["TransferInput"] = "/spool/live/dask.crt,/spool/live/dask.pem"
        credentials = credentials_job_description(
            HTCondorSettings.from_config(), CLUSTER, [], user="alice", gateway_id=GATEWAY, lease=60
        )
        (live,) = await schedd.submit(credentials, 1, spool=True)
        schedd.queue[live].ad["Iwd"] = "/spool/live"

        table = await reconciler.step(act=False)
        marked = {job.job_id: job for job in table}
        assert marked[lost].credentials_lost and not marked[lost].is_stuck
        assert "credentials job left" in reconciler.tracker.reason(marked[lost])
        assert not marked[kept].credentials_lost and marked[kept].is_stuck

        await reconciler.step()
        assert lost not in schedd.queue and kept in schedd.queue and live in schedd.queue
        assert len([j for j in schedd.mine() if j != live]) == 2, "the lost job was replaced"
        await reconciler.step()
        assert reconciler.tracker.failures_in_a_row == 0, "a replacement is not a failure"

    run(body())


def test_submit_failures_back_off_exponentially_and_show_why():
    clock = Clock()
    schedd, _, reconciler = make(FakeSchedd(refuse_submits=3), clock=clock)
    reconciler.want(ScaleTarget(2, 100), 1)

    async def body():
        delays = []
        for _ in range(3):
            await reconciler.step()
            delays.append(reconciler.retry_in)
            await reconciler.step()  # within the backoff: no new attempt
            clock.now += reconciler.retry_in
        assert delays == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST]
        assert schedd.calls and "fake refusal" in (reconciler.submit_error or "")
        await reconciler.step()
        assert schedd.submits == [2] and reconciler.submit_error is None

    run(body())


def test_the_target_is_capped_at_its_own_cap():
    schedd, _, reconciler = make()
    reconciler.want(ScaleTarget(50, 5), 1)
    run(reconciler.step())
    assert schedd.submits == [5]


def test_concurrent_steps_of_scale_and_adapt_never_double_submit():
    schedd, link, reconciler = make()
    link.adaptive_wanted = 3
    reconciler.want(AdaptTarget(0, 10, 0.1, 1, 1.0), 1)

    async def body():
        await asyncio.gather(*(reconciler.step() for _ in range(5)))
        assert len(schedd.mine()) == 3
        reconciler.want(ScaleTarget(5, 100), 2)
        await asyncio.gather(reconciler.step(), reconciler.step())
        assert len(schedd.mine()) == 5

    run(body())


def test_adapting_follows_the_schedulers_target_within_bounds():
    schedd, link, reconciler = make()
    reconciler.want(AdaptTarget(1, 4, 0.1, 1, 1.0), 1)

    async def body():
        link.adaptive_wanted = 10
        await reconciler.step()
        assert len(schedd.mine()) == 4, "maximum respected"
        for job in schedd.mine():
            schedd.set_status(job, JobStatus.RUNNING)
        link.workers = set(schedd.mine())
        link.adaptive_wanted = 0
        await reconciler.step()
        await reconciler.step()
        assert len(schedd.mine()) == 1, "minimum kept"

    run(body())


# -- the watcher: lease on its own path, applier hand-over --------------------


def _watcher(reconciler, link, token, lease=0.3, interval=0.05, gone=None, clock=None,
             removed=None, job_lease=None):  # fmt: skip
    """A watcher; ``gone()`` gives the gateway's report (None: running), ``removed``
    collects the reasons it removed the remaining jobs for."""

    async def gateway_state():
        return None if gone is None else gone()

    async def remove_jobs(reason):
        if removed is not None:
            removed.append(reason)

    name = reconciler.tracker.cluster
    return Watcher(
        name, token, link, reconciler, lease, interval, gateway_state, remove_jobs,
        job_lease=job_lease, clock=clock or SYSTEM_CLOCK,
    )  # fmt: skip


def test_the_lease_is_renewed_while_the_schedd_does_not_answer():
    async def body():
        schedd = FakeSchedd(block=asyncio.Event())  # every schedd call hangs
        _, link, reconciler = make(schedd)
        watcher = _watcher(reconciler, link, "alice", lease=0.3)
        watcher.start()
        await asyncio.sleep(1.2)  # 4 leases long
        expiry = link.plugin.leases.get("alice")
        await watcher.stop()
        assert expiry is not None, "the lease lapsed behind a schedd call"
        assert link.plugin.leases["alice"] > asyncio.get_running_loop().time() - 100

    run(body())


def test_the_watcher_outlives_an_unreachable_scheduler_and_gateway():
    async def body():
        schedd, link, reconciler = make()
        asked = []

        def gone():
            asked.append(1)
            raise ConnectionError("gateway restarting")

        watcher = _watcher(reconciler, link, "alice", gone=gone)
        await link.set_target("alice", target_to_wire(ScaleTarget(2, 100)), 5)
        watcher.start()
        link.unreachable = True  # the proxy restarts
        await asyncio.sleep(0.5)
        assert asked, "the gateway was not asked whether the cluster still exists"
        link.unreachable = False
        await asyncio.sleep(0.5)
        await watcher.stop()
        assert watcher.stopped_reason is None
        assert len(schedd.mine()) == 2, "the target was not applied after the outage"

    run(body())


def test_a_cluster_the_gateway_reports_gone_stops_the_watcher():
    async def body():
        clock = Clock()
        _, link, reconciler = make()
        removed = []
        watcher = _watcher(
            reconciler, link, "alice", gone=lambda: "STOPPED", clock=clock, removed=removed
        )
        link.unreachable = True
        watcher.start()
        await clock.advance(25)  # answers at 0, 0.3 ... : not yet proven
        assert watcher.stopped_reason is None, "gone on answers over less than 30 s"
        await clock.advance(10)
        assert watcher.stopped_reason == "stopped elsewhere: the gateway reports it STOPPED"
        assert removed == [watcher.stopped_reason]
        assert all(task.done() for task in watcher._tasks)
        await watcher.stop()

    run(body())


def test_a_target_set_by_a_client_that_left_is_kept_by_another():
    # The CLI sets a target and exits; the notebook's watcher takes over
    # applying it and replaces a job removed later.
    async def body():
        schedd = FakeSchedd()
        _, link, notebook = make(schedd)
        _, _, cli = make(schedd)
        cli_link = FakeSchedulerLink(link.plugin)
        cli.scheduler = cli_link
        watcher = _watcher(notebook, link, "notebook", lease=0.3)
        watcher.start()
        reply = await cli_link.set_target("cli", target_to_wire(ScaleTarget(3, 100)), 5)
        cli.want(target_from_wire(reply["target"]), reply["generation"])
        await cli.step()
        await cli_link.release("cli")
        assert len(schedd.mine()) == 3
        schedd.end(schedd.mine()[0], JobStatus.REMOVED)
        await asyncio.sleep(0.5)
        await watcher.stop()
        assert watcher.is_applier
        assert len(schedd.mine()) == 3, "the lost job was not replaced"

    run(body())


def test_idle_and_held_jobs_lease_is_pushed_out_on_the_schedds_clock():
    async def body():
        schedd, link, reconciler = make()
        await link.set_target("alice", target_to_wire(ScaleTarget(2, 100)), 5)
        watcher = _watcher(reconciler, link, "alice", lease=3)
        watcher.start()
        await asyncio.sleep(1.3)  # renewed at once, then every second
        await watcher.stop()
        assert schedd.mine()
        for job in schedd.mine():
            expiry = schedd.queue[job].ad.eval(LEASE_ATTRIBUTE)
            assert isinstance(expiry, int)
            assert abs(expiry - (schedd.schedd_time() + 3)) < 2

    run(body())


def test_the_jobs_lease_lapses_only_after_a_whole_lease_with_no_sign_of_life():
    """A cluster whose scheduler and gateway are both gone (the gateway
    uninstalled) leaves its idle jobs to lapse, even while the cluster object
    stays open; renewals resume when the scheduler answers again."""

    async def body():
        clock = Clock()
        schedd, link, reconciler = make()
        await link.set_target("alice", target_to_wire(ScaleTarget(1, 100)), 5)

        def gateway_silent():
            raise ConnectionError("connection refused")

        watcher = _watcher(reconciler, link, "alice", lease=60, interval=10,
                           gone=gateway_silent, clock=clock)  # fmt: skip
        watcher.start()
        await clock.advance(1)
        link.unreachable = True
        await clock.advance(50)  # less than a lease: renewed every 20 s
        assert len(schedd.renewals) == 3, "renewals stopped before a lease had passed"
        await clock.advance(20)
        renewed = len(schedd.renewals)
        await clock.advance(100)
        assert len(schedd.renewals) == renewed, "renewed for a cluster with no sign of life"
        link.unreachable = False
        await clock.advance(30)
        await watcher.stop()
        assert len(schedd.renewals) > renewed, "not renewed once the scheduler answered again"

    run(body())


def test_a_slow_scheduler_does_not_stop_the_jobs_lease():
    """Point 4: a scheduler whose every call times out (a big graph being
    unpacked) while the gateway reports the cluster running: the idle jobs'
    lease is still renewed, for longer than a lease."""

    async def body():
        clock = Clock()
        schedd, link, reconciler = make()
        await link.set_target("alice", target_to_wire(ScaleTarget(1, 100)), 5)
        await reconciler.step()
        watcher = _watcher(reconciler, link, "alice", lease=60, interval=10,
                           gone=lambda: None, clock=clock)  # fmt: skip
        watcher.start()
        await clock.advance(1)
        link.late_answers = -1  # every call to the scheduler times out
        renewed = len(schedd.renewals)
        await clock.advance(300)  # 5 leases
        await watcher.stop()
        assert len(schedd.renewals) >= renewed + 15, "a slow scheduler stopped the renewals"
        assert watcher.stopped_reason is None
        assert len(schedd.mine()) == 1, "the idle job went"

    run(body())
