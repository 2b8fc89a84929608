import asyncio
import itertools
import time

import pytest
from dask_gateway import GatewayClusterError

from htcdaskgateway.cluster import HTCGatewayCluster
from htcdaskgateway.dial_back import DialBack
from htcdaskgateway.errors import SettingError
from htcdaskgateway.jobs import EndedJob, JobStatus, WorkerJob, count_by_status, removal_order
from htcdaskgateway.naming import checked_cluster_name
from htcdaskgateway.waiting import wait_for_workers
from htcdaskgateway.wanted import worker_count


def test_removal_order_idle_then_held_then_newest_running():
    jobs = [
        WorkerJob("7.0", JobStatus.RUNNING),
        WorkerJob("7.1", JobStatus.IDLE),
        WorkerJob("8.0", JobStatus.RUNNING),
        WorkerJob("7.2", JobStatus.HELD, "no"),
        WorkerJob("7.10", JobStatus.RUNNING),
    ]
    assert [j.job_id for j in removal_order(jobs)] == ["7.1", "7.2", "8.0", "7.10", "7.0"]


@pytest.mark.parametrize(
    ("job", "joined", "failed", "text"),
    [
        (EndedJob("9.0", JobStatus.COMPLETED, 1, None, 61.0), False, True,
         "job 9.0 exited with code 1 after 61 s"),
        (EndedJob("9.1", JobStatus.COMPLETED, 0, None, 300.0), True, False,
         "job 9.1 exited with code 0 after 300 s"),
        (EndedJob("9.2", JobStatus.COMPLETED, 0, None, 2.0), False, True,
         "job 9.2 exited with code 0 after 2 s"),
        (EndedJob("9.3", JobStatus.COMPLETED, None, 11, None), True, True,
         "job 9.3 was killed by signal 11"),
        (EndedJob("9.4", JobStatus.REMOVED, None, None, 5.0), False, False,
         "job 9.4 was removed after 5 s"),
    ],
)  # fmt: skip
def test_ended_jobs_that_count_as_failures(job, joined, failed, text):
    # A job fails when it ends on its own without serving: its worker never
    # joined, or it crashed. Removed jobs and clean exits of joined workers
    # (lifetime, scheduler gone) do not.
    assert job.failed(worker_joined=joined) is failed
    assert job.describe() == text


def test_active_states():
    assert JobStatus.HELD.is_active and JobStatus.IDLE.is_active
    assert not JobStatus.REMOVED.is_active and not JobStatus.COMPLETED.is_active


@pytest.mark.parametrize("n", [0, 1, 30])
def test_worker_count_accepts_whole_numbers(n):
    assert worker_count(n, "scale()") == n


@pytest.mark.parametrize("n", [-1, "3", 2.5, True, None, float("nan")])
def test_worker_count_refuses_others_with_a_setting_error(n):
    with pytest.raises(SettingError, match=r"scale\(\)"):
        worker_count(n, "scale()")


@pytest.mark.parametrize("name", ["dask-gateway.abc\n", "", "a b", '"x"', None])
def test_cluster_names_are_matched_whole(name):
    with pytest.raises(SettingError, match="cluster name"):
        checked_cluster_name(name)


def test_a_cluster_name_of_the_gateway_passes():
    assert checked_cluster_name("dask-gateway.0123abcd") == "dask-gateway.0123abcd"


def test_count_by_status_ignores_ended_jobs():
    jobs = [
        WorkerJob("1.0", JobStatus.IDLE),
        WorkerJob("1.1", JobStatus.RUNNING),
        WorkerJob("1.2", JobStatus.RUNNING),
        WorkerJob("1.3", JobStatus.HELD, "out of memory"),
        WorkerJob("1.4", JobStatus.REMOVED),
    ]
    assert count_by_status(jobs) == {"idle": 1, "running": 2, "held": 1}


def test_held_is_stuck():
    assert WorkerJob("1.0", JobStatus.HELD, "Failed to execute", None, 6).is_stuck
    assert not WorkerJob("1.0", JobStatus.RUNNING).is_stuck


def test_wait_for_workers_on_a_cluster_that_is_not_running():
    cluster = object.__new__(HTCGatewayCluster)
    cluster.name, cluster.scheduler_comm, cluster._runtime = "abc", None, None
    with pytest.raises(GatewayClusterError, match="abc is not running"):
        asyncio.run(cluster._wait_for_workers(1, None))


def test_more_jobs_than_max_jobs_is_a_setting_error_naming_it():
    cluster = object.__new__(HTCGatewayCluster)
    cluster._prepare({"max-jobs": 5})
    assert cluster.scale_target(5, "scale()").n == 5
    with pytest.raises(SettingError, match=r"scale\(\) asks for 6 .*max-jobs allows 5"):
        cluster.scale_target(6, "scale()")
    with pytest.raises(SettingError, match="max-jobs allows 5"):
        cluster.adaptive(0, 6)
    assert cluster.adaptive().maximum == 5, "no maximum: max-jobs"


@pytest.mark.parametrize("interval", [float("nan"), -1, "soon", True])
def test_adapt_refuses_bad_durations(interval):
    cluster = object.__new__(HTCGatewayCluster)
    cluster._prepare(None)
    with pytest.raises(SettingError, match="interval"):
        cluster.adaptive(0, 2, interval=interval)


def running(reconciler, watcher):
    """The runtime of a running cluster "abc" made of these parts (no credentials)."""
    from htcdaskgateway.runtime import ClusterRuntime
    from htcdaskgateway.settings import HTCondorSettings
    from htcdaskgateway.spec import ClusterSpec

    tracker = reconciler.tracker
    spec = ClusterSpec(tracker.cluster, "alice", tracker.gateway_id, "tls://proxy:8786", 60,
                       HTCondorSettings.from_config())  # fmt: skip
    return ClusterRuntime(spec, None, reconciler, watcher, {})


def wait_with_a_watcher(link_setup, n=1, timeout=None, schedd=None, progress=None):
    """``wait_for_workers(n)`` on a cluster whose watcher runs against the fakes."""
    from htcdaskgateway.naming import CLUSTER_ATTRIBUTE, GATEWAY_ATTRIBUTE, USER_ATTRIBUTE

    from .fakes import ALICE
    from .test_reconciler import _watcher, make

    schedd, link, reconciler = make(schedd)
    # One job of the cluster in the queue, for a worker to join as.
    attributes = {CLUSTER_ATTRIBUTE: reconciler.tracker.cluster, USER_ATTRIBUTE: "alice",
                  GATEWAY_ATTRIBUTE: reconciler.tracker.gateway_id}  # fmt: skip
    link.queued_job = schedd.add({f"MY.{k}": f'"{v}"' for k, v in attributes.items()}, 1, ALICE)
    link_setup(link)
    # A cluster object's watch interval: between its looks the waiter must
    # not ask anything itself.
    runtime = running(reconciler, _watcher(reconciler, link, "alice", lease=60, interval=10))

    async def body():
        runtime.watcher.start()
        try:
            await wait_for_workers(runtime, n, timeout, progress)
        finally:
            await runtime.watcher.stop()

    asyncio.run(body())
    return schedd, link


class RecordedProgress:
    def __init__(self) -> None:
        self.shown: list[tuple[int, int, str]] = []
        self.ended = False

    def show(self, joined: int, n: int, state: str) -> None:
        self.shown.append((joined, n, state))

    def done(self) -> None:
        self.ended = True


def test_wait_for_workers_shows_its_progress_where_it_is_told_and_ends_it():
    from htcdaskgateway.view import progress_html

    def a_worker_joins(link):
        link.workers = set(link.queued_job)

    progress = RecordedProgress()
    wait_with_a_watcher(a_worker_joins, progress=progress)
    joined, n, state = progress.shown[-1]
    assert (joined, n) == (1, 1) and state.startswith("jobs idle 1"), progress.shown
    assert progress.ended
    bar = progress_html("abc: waiting for 3 workers", 2, 3, "jobs idle 1, running 2, held 0")
    assert "<progress value='2' max='3'>" in bar and "2/3 workers; jobs idle 1" in bar


def test_outside_a_notebook_progress_is_a_line_on_stderr(capsys):
    from htcdaskgateway.view import Progress, progress_for

    progress = progress_for("abc: waiting for 2 workers")
    assert isinstance(progress, Progress)
    progress.show(1, 2, "jobs idle 1")
    progress.show(1, 2, "jobs idle 1")
    assert capsys.readouterr().err == "abc: waiting for 2 workers: 1/2 workers; jobs idle 1\n"


def test_wait_for_workers_outlasts_a_scheduler_that_answers_late():
    def two_late_then_a_worker(link):
        link.late_answers = 2
        link.workers = set(link.queued_job)  # its worker joins

    _, link = wait_with_a_watcher(two_late_then_a_worker, timeout=30)
    assert link.late_answers == 0


def test_wait_for_workers_reports_a_scheduler_that_stays_silent(monkeypatch):
    monkeypatch.setattr("htcdaskgateway.waiting.SCHEDULER_SILENCE_LIMIT", 1.5)

    def always_late(link):
        link.late_answers = -1

    with pytest.raises(
        GatewayClusterError, match=r"scheduler of dask-gateway\.abc123 has not answered for 2 s"
    ):
        wait_with_a_watcher(always_late)


def test_five_waiting_clusters_on_one_slow_schedd_keep_their_jobs_lease():
    """A client waits for workers on five clusters at once while the schedd
    answers one call at a time, 0.15 s each (the load test's situation).
    Every cluster's idle jobs have their lease renewed in time (lease 3 s,
    due every 1 s): no gap between renewals reaches the lease."""
    from htcdaskgateway.targets import ScaleTarget, target_to_wire

    from .fakes import FakeSchedd
    from .test_reconciler import _watcher, make

    lease, names = 3, [f"dask-gateway.c{i}" for i in range(5)]

    async def body():
        schedd = FakeSchedd(delay=0.15, serial=asyncio.Lock())
        clusters = []
        for name in names:
            _, link, reconciler = make(schedd, cluster=name)
            link.workers = set()  # no worker ever joins
            await link.set_target(name, target_to_wire(ScaleTarget(2, 100)), 5)
            watcher = _watcher(reconciler, link, name, lease=lease, interval=10)
            clusters.append(running(reconciler, watcher))
        started = time.monotonic()
        for runtime in clusters:
            runtime.watcher.start()
        waits = [wait_for_workers(runtime, 2, 6) for runtime in clusters]
        results = await asyncio.gather(*waits, return_exceptions=True)
        ended = time.monotonic()
        for runtime in clusters:
            await runtime.watcher.stop()
        assert all(isinstance(r, TimeoutError) for r in results), results
        return schedd, started, ended

    schedd, started, ended = asyncio.run(body())
    assert len(schedd.queue) == 5 * 2
    for name in names:
        times = [started] + [t for t, c in schedd.renewals if f'"{name}"' in c] + [ended]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert max(gaps) < lease, (name, [round(g, 1) for g in gaps])


def test_an_idle_jobs_rejection_reason_is_shown_without_the_negotiators_trailing_space():
    from htcdaskgateway.jobs import JobTracker

    from .fakes import FakeSchedd

    tracker = JobTracker(FakeSchedd(), "gw", "dask-gateway.abc", user="alice")
    job = WorkerJob("1.0", JobStatus.IDLE, last_rejection="no match found ")
    assert tracker.reason(job) == "no match found"


def test_wait_for_workers_names_the_setting_when_the_scheduler_cannot_reach_a_worker():
    """Issue 30, point 2: a worker that joined at an address its scheduler
    cannot dial (worker.host 127.0.0.1 on the rig) would count as joined,
    and the first computation would hang; the waiter says what to fix."""

    def joined_but_unreachable(link):
        link.plugin.dial_back = DialBack(pool=None)
        link.plugin.dial_back.unreachable["htc-1.0@schedd"] = "tls://127.0.0.1:40000: refused"

    with pytest.raises(GatewayClusterError, match=r"cannot reach 1 of its workers.*worker\.host"):
        wait_with_a_watcher(joined_but_unreachable, n=2, timeout=30)
