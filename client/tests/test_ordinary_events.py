"""A production pool's ordinary events, against the fakes (issue 26): none
may cost a live cluster its jobs, and none may leave jobs behind.

Each test names the point of the review it holds."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import classad2
import pytest

from htcdaskgateway.jobs import HISTORY_WAIT, JobSelector, JobStatus
from htcdaskgateway.naming import LEASE_ATTRIBUTE
from htcdaskgateway.schedd import ScheddClient
from htcdaskgateway.schedd_pool import DISCOVERY_TTL, UNLISTED_KEPT, ScheddPool
from htcdaskgateway.scheduler_plugin import KeepHTCondorWorkers
from htcdaskgateway.settings import HTCondorSettings
from htcdaskgateway.submit import worker_job_description
from htcdaskgateway.targets import (
    AdaptTarget,
    ScaleTarget,
    TargetFormatError,
    target_to_wire,
)

from .fakes import ALICE, FakeSchedd, FakeSchedulerLink
from .test_reconciler import CLUSTER, GATEWAY, Clock, _watcher, make


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- 1: one 404 is no proof that a cluster is gone ----------------------------


def test_a_passing_404_while_the_scheduler_is_cut_off_removes_nothing():
    """A restarting proxy: scheduler unreachable and the API answering 404
    for 15 s, then both back. Nothing is removed; scale() still works."""

    async def body():
        clock = Clock()
        schedd, link, reconciler = make(token="alice")
        removed: list[str] = []
        answers = {"state": "gone"}
        watcher = _watcher(reconciler, link, "alice", lease=60, interval=10,
                           gone=lambda: answers["state"], clock=clock, removed=removed)  # fmt: skip
        reply = await link.set_target("alice", target_to_wire(ScaleTarget(2, 100)), 60)
        watcher.follow(reply)
        await reconciler.step()
        watcher.start()
        link.unreachable = True
        await clock.advance(15)
        answers["state"] = None  # the proxy routes again
        link.unreachable = False
        await clock.advance(60)
        await watcher.stop()
        assert watcher.stopped_reason is None
        assert removed == [], "a passing 404 removed the cluster's jobs"
        assert len(schedd.mine()) == 2

    run(body())


# -- 2: the applier acts only on the current target ------------------------------


def test_a_client_on_an_older_target_does_not_undo_a_newer_one():
    """The notebook applies 2; the CLI sets 6, then 2 with running workers.
    The notebook, not yet told, neither removes the CLI's new jobs nor
    resubmits the ones it retired."""

    async def body():
        schedd = FakeSchedd()
        _, link, notebook = make(schedd, token="notebook")
        _, _, cli = make(schedd, token="cli")
        cli_link = FakeSchedulerLink(link.plugin)
        cli_link.workers = link.workers  # one scheduler
        cli.scheduler = cli_link
        reply = await link.set_target("notebook", target_to_wire(ScaleTarget(2, 100)), 30)
        notebook.want_wire(reply["target"], reply["generation"])
        await notebook.step()
        reply = await cli_link.set_target("cli", target_to_wire(ScaleTarget(6, 100)), 30)
        cli.want_wire(reply["target"], reply["generation"])
        await cli.step()
        await notebook.step()  # still on its old target, as after a renewal
        assert len(schedd.mine()) == 6, "the notebook undid the CLI's scale-up"
        assert notebook.target == ScaleTarget(6, 100), "the notebook did not take the new target"
        for job in schedd.mine():
            schedd.set_status(job, JobStatus.RUNNING)
        link.workers |= set(schedd.mine())
        reply = await cli_link.set_target("cli", target_to_wire(ScaleTarget(2, 100)), 30)
        cli.want_wire(reply["target"], reply["generation"])
        await cli.step()
        await notebook.step()
        assert len(schedd.mine()) == 2, "the notebook resubmitted the retired workers"
        assert schedd.submits == [2, 4]

    run(body())


# -- 3: an evicted worker is not removed by the expiry of its idle days --------


def _removes(description: dict[str, str], **ad: int) -> bool:
    return classad2.ExprTree(description["periodic_remove"]).eval(classad2.ClassAd(ad)) is True


def test_an_evicted_worker_gets_a_whole_lease_before_its_lease_rule_applies():
    description = worker_job_description(
        HTCondorSettings.from_config(), CLUSTER, "tls://proxy:8786", "/spool",
        user="alice", gateway_id=GATEWAY, lease=60,
    )  # fmt: skip
    now = int(time.time())
    # Ran for an hour, evicted 5 s ago: idle again, with an expiry long past.
    evicted = {"JobStatus": 1, "EnteredCurrentStatus": now - 5, LEASE_ATTRIBUTE: now - 3540}
    assert not _removes(description, **evicted)
    # A lease after its return, not renewed (its client died): removed.
    lapsed = {"JobStatus": 1, "EnteredCurrentStatus": now - 61, LEASE_ATTRIBUTE: now - 1}
    assert _removes(description, **lapsed)
    # Renewed in time: stays.
    assert not _removes(description, **{**lapsed, LEASE_ATTRIBUTE: now + 40})


# -- 5: a schedd missing from one collector answer is kept ----------------------


def test_a_schedd_the_collector_stops_listing_keeps_its_jobs_and_takes_no_new_ones():
    clock = Clock()
    ads = {"a@pool": {}, "b@pool": {}}
    schedds = {name: FakeSchedd(name=name) for name in ads}

    async def list_schedds(constraint: str) -> list[dict[str, Any]]:
        return [{"Name": name, **ad} for name, ad in ads.items()]

    pool = ScheddPool(None, None, None, 5.0, connect=schedds.__getitem__,
                      list_schedds=list_schedds, rng=random.Random(1), clock=clock)  # fmt: skip
    selector = JobSelector(ALICE, GATEWAY, CLUSTER, gateway_user="alice")
    description = worker_job_description(
        HTCondorSettings.from_config(), CLUSTER, "tls://p:1", "/spool", "alice", GATEWAY,
        lease=60, schedd="b@pool",
    )  # fmt: skip

    async def body():
        await pool.members()
        (on_b,) = schedds["b@pool"].add(description, 1, ALICE)
        del ads["b@pool"]  # the collector restarted: b's ad not back yet
        clock.now += DISCOVERY_TTL + 1
        assert on_b in {job.job_id for job in await pool.jobs(selector.constraint())}
        assert [m.name for m in await pool.submit_order()] == ["a@pool"]
        schedds["b@pool"].unavailable = True  # and b restarts too
        jobs = await pool.jobs(selector.constraint())
        assert on_b in {job.job_id for job in jobs}, "b's job vanished instead of 'not answering'"
        assert "b@pool" in pool.unreachable
        schedds["b@pool"].unavailable = False
        await pool.remove(selector.every_job_constraint(), "shut down")
        assert schedds["b@pool"].mine() == [], "shutdown skipped the unlisted schedd"
        clock.now += UNLISTED_KEPT + DISCOVERY_TTL
        await pool.members()
        clock.now += DISCOVERY_TTL + 1
        assert [m.name for m in await pool.members()] == ["a@pool"]

    run(body())


# -- 6: targets are checked where they are stored, and read safely -------------


@pytest.mark.parametrize(
    "wire",
    [
        {"kind": "scale", "n": -1, "cap": 10, "version": 1},
        {"kind": "scale", "n": 11, "cap": 10, "version": 1},
        {"kind": "scale", "n": 2, "cap": 10, "version": 1, "groups": {}},
        {"kind": "scale", "n": 2, "cap": 10, "version": 2},
        {"kind": "shrink", "n": 2, "version": 1},
        {"kind": "adapt", "minimum": 3, "maximum": 1, "interval": 3, "wait_count": 3,
         "target_duration": 5, "version": 1},
        {"kind": "scale", "n": True, "cap": 10, "version": 1},
        "scale to 3",
    ],
)  # fmt: skip
def test_the_plugin_refuses_a_target_no_client_could_apply(wire):
    plugin = KeepHTCondorWorkers(unattended_timeout=0)
    with pytest.raises(TargetFormatError):
        plugin.set_target("x", wire, 5)
    assert plugin.target is None and plugin.generation == 0


def test_the_previous_releases_scale_target_is_still_taken():
    plugin = KeepHTCondorWorkers(unattended_timeout=0)
    state = plugin.set_target("x", {"kind": "scale", "n": 3}, 5)
    assert state["target"] == target_to_wire(ScaleTarget(3, 3))


def test_a_target_this_client_cannot_read_leaves_the_jobs_and_the_renewals_alone():
    """A newer client stored a target this one does not know: it neither
    acts on the jobs nor stops renewing leases."""

    async def body():
        clock = Clock()
        schedd, link, reconciler = make(token="alice")
        watcher = _watcher(reconciler, link, "alice", lease=60, interval=10, clock=clock)
        reply = await link.set_target("alice", target_to_wire(ScaleTarget(2, 100)), 60)
        watcher.follow(reply)
        await reconciler.step()
        newer = {"kind": "groups", "groups": {"gpu": 1}, "version": 2}
        link.plugin.target, link.plugin.generation = newer, link.plugin.generation + 1
        watcher.start()
        await clock.advance(90)
        await watcher.stop()
        assert reconciler.unreadable and "version 2" in reconciler.unreadable
        assert len(schedd.mine()) == 2, "the jobs were acted on"
        assert link.plugin.leases.get("alice"), "the client lease was not renewed"
        assert len(schedd.renewals) >= 4, "the jobs' lease was not renewed"

    run(body())


# -- 7: times on the schedd's clock ------------------------------------------------


class SkewedScheddCalls:
    """The helper process's answers, from a schedd whose clock is ``skew`` s ahead."""

    def __init__(self, skew: float) -> None:
        self.skew = skew
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def __call__(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        if name == "query":
            return [{"ClusterId": 1, "ProcId": 0, "JobStatus": 1,
                     "ServerTime": int(time.time() + self.skew)}]  # fmt: skip
        return [] if name == "history" else None


@pytest.mark.parametrize("skew", [-180.0, 180.0])
def test_the_history_bound_and_a_first_renewal_use_the_schedds_clock(skew):
    async def body():
        client = ScheddClient(None, "s@pool", 5.0)
        calls = SkewedScheddCalls(skew)
        client._call = calls  # type: ignore[method-assign]
        # A new cluster: only its credentials job, no worker query yet.
        await client.renew_lease("true", 60)
        (edit,) = [args for name, args in calls.calls if name == "edit"]
        expiry = int(edit[2])
        assert abs(expiry - (time.time() + skew + 60)) < 3, "expiry not on the schedd's clock"
        bound = int(time.time()) - 60
        await client.history("true", bound)
        (history,) = [args for name, args in calls.calls if name == "history"]
        assert abs(history[3] - (bound + skew)) < 3, "history bound not on the schedd's clock"

    run(body())


def test_a_worker_that_leaves_the_queue_unrecorded_before_joining_counts_as_a_failure():
    """The schedd's history turned off: jobs that vanish before their
    worker joined pause the cluster after three, instead of being
    resubmitted on every look (a wait_for_workers() that never returns)."""

    async def body():
        clock = Clock()
        schedd, _, reconciler = make(clock=clock)
        reconciler.want(ScaleTarget(1, 100), 1)
        for _ in range(3):
            await reconciler.step()
            (job,) = schedd.mine()
            schedd.end(job, JobStatus.COMPLETED, exit_code=1)
            schedd.ended_jobs.clear()  # no history
            clock.now += HISTORY_WAIT + 1
            await reconciler.step()
        assert reconciler.tracker.paused
        assert "no record" in reconciler.tracker.failures[-1].describe()

    run(body())


# -- 8: the cap travels with the target -------------------------------------------


def test_a_client_with_a_lower_cap_applies_a_target_set_under_a_higher_one():
    async def body():
        schedd, link, reconciler = make(token="alice")
        # Set by a client with max-jobs 20; applied by one whose own is 10.
        reply = await link.set_target("alice", target_to_wire(ScaleTarget(15, 20)), 60)
        reconciler.want_wire(reply["target"], reply["generation"])
        await reconciler.step()
        assert len(schedd.mine()) == 15

    run(body())


def test_an_adapt_target_round_trips_with_its_version():
    target = AdaptTarget(0, 10, 3.0, 3, 5.0)
    assert target_to_wire(target)["version"] == 1


# -- 13: a cluster nobody holds a lease on keeps its queued jobs for a while only ----


def test_closing_without_shutdown_hands_the_jobs_a_detached_lease_not_none():
    async def body():
        schedd, link, reconciler = make(token="alice")
        watcher = _watcher(reconciler, link, "alice", lease=60, interval=10)
        reply = await link.set_target("alice", target_to_wire(ScaleTarget(2, 100)), 60)
        watcher.follow(reply)
        await reconciler.step()
        await watcher.renew()
        await watcher.release(detached_lease=3600)
        for job in schedd.mine():
            expiry = schedd.queue[job].ad.eval(LEASE_ATTRIBUTE)
            assert isinstance(expiry, int), "the jobs' lease was cleared: they would stay forever"
            assert abs(expiry - (time.time() + 3600)) < 5

    run(body())


def test_a_scheduler_of_the_previous_release_without_confirm_lets_the_applier_act():
    from htcdaskgateway.scheduler_link import SchedulerLink

    class PreviousPlugin:  # distributed answers None for a handler it lacks
        async def htcdaskgateway_confirm(self, **kwargs: Any) -> None:
            return None

    state = run(SchedulerLink(PreviousPlugin()).confirm("alice", 3))
    assert state["confirmed"] is True


# -- 4: a scheduler whose event loop was held up does not lapse its leases -------


def test_a_scheduler_frozen_longer_than_the_lease_keeps_the_clients_lease():
    """The scheduler's loop blocked for 2.5 s (a big graph unpacked) with a
    1 s lease: the renewal queued behind the lease check is not too late."""

    class Scheduler:
        def __init__(self) -> None:
            self.clients: dict[str, Any] = {}
            self.transition_counter = 0
            self.workers: dict[str, Any] = {}
            self.unrunnable: set[str] = set()
            self.services: dict[str, Any] = {}
            self.closed = False

        async def close(self) -> None:
            self.closed = True

    async def body():
        plugin = KeepHTCondorWorkers(unattended_timeout=0)
        scheduler = Scheduler()
        plugin.scheduler = scheduler
        watching = asyncio.create_task(plugin._watch_leases())
        plugin.renew("notebook", ttl=1.0)
        await asyncio.sleep(0.1)
        time.sleep(2.5)  # the scheduler's event loop held up
        plugin.renew("notebook", ttl=1.0)  # the renewal that waited meanwhile
        await asyncio.sleep(1.5)
        watching.cancel()
        assert not scheduler.closed and plugin._shutdown_task is None, "the lease lapsed"
        assert "notebook" in plugin.leases

    run(body())


# -- review: the watcher's times all come from its injected clock -------------


def test_the_schedulers_silence_is_measured_on_the_injected_clock():
    """The job loop marks when the scheduler stopped answering on the
    watcher's clock, so a waiter's "not answered for N s" needs no sleep
    in a test, and an answer clears it."""

    async def body():
        clock = Clock()
        _, link, reconciler = make(clock=clock)
        watcher = _watcher(reconciler, link, "alice", lease=0, interval=60, clock=clock)
        link.late_answers = -1
        watcher.start()
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert watcher.scheduler_silence() == 0
        clock.now += 20
        assert watcher.scheduler_silence() == 20
        watcher.wake()  # another unanswered look keeps the first moment
        await asyncio.sleep(0.05)
        assert watcher.scheduler_silence() == 20
        link.late_answers = 0
        watcher.wake()
        await asyncio.sleep(0.05)
        silence = watcher.scheduler_silence()
        await watcher.stop()
        return silence

    assert run(body()) is None


def test_stop_right_after_a_wake_up_ends_the_loops():
    """Python 3.11's wait_for swallows a cancellation that arrives as the
    awaited event is set: stop() right after wake() (a close() right after
    a scale()) then waited forever for the job loop."""
    from .test_reconciler import _watcher, make

    async def body():
        _, link, reconciler = make()
        watcher = _watcher(reconciler, link, "alice", lease=60, interval=30)
        watcher.start()
        for _ in range(20):
            await asyncio.sleep(0.01)
            watcher.wake()
            await asyncio.sleep(0)  # the job loop's wait_for sees its event set ...
            stopping = asyncio.ensure_future(watcher.stop())  # ... and the cancel
            done, _ = await asyncio.wait({stopping}, timeout=5)
            assert done, "stop() did not end"
            watcher.start()
        await watcher.stop()

    asyncio.run(body())
