"""wait_for_workers: progress, and the HTCondor reason when workers cannot come."""

from __future__ import annotations

import re
import subprocess
import time

import htcondor2
import pytest
from dask_gateway import GatewayClusterError

from conftest import TARGET, queue, wait_for
from htcdaskgateway import HTCGateway, HTCondorError, SettingError
from htcdaskgateway.jobs import FAILURES_BEFORE_PAUSE
from htcdaskgateway.naming import CLUSTER_ATTRIBUTE


def test_waits_until_workers_join(new_cluster, capfd):
    cluster = new_cluster()
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=90)
    assert len(cluster.scheduler_info["workers"]) == 2
    progress = capfd.readouterr().err
    assert "2/2 workers" in progress and "jobs idle" in progress


def test_held_job_ends_the_wait_with_its_hold_reason(gateway, record_figure):
    broken = HTCGateway(htcondor={"worker": {"executable": "/nonexistent/htcdaskgateway-worker"}})
    cluster = broken.new_cluster()
    try:
        cluster.scale(1)
        started = time.monotonic()
        with pytest.raises(HTCondorError, match=r"held.*nonexistent"):
            cluster.wait_for_workers(1, timeout=120)
        record_figure(
            f"held job reported by wait_for_workers after {time.monotonic() - started:.1f} s"
        )
    finally:
        cluster.shutdown()
        broken.close()


def test_unmatchable_job_shows_why_it_waits(gateway, record_figure):
    # An impossible requirement: more memory than any slot of the pool has.
    never = HTCGateway(htcondor={"submit": {"requirements": "TARGET.Memory > 100000000"}})
    cluster = never.new_cluster()
    try:
        cluster.scale(1)
        started = time.monotonic()
        with pytest.raises(
            TimeoutError, match=r"0 of 1 workers joined .* idle 1 \(no slot can run"
        ):
            cluster.wait_for_workers(1, timeout=15)
        record_figure(
            "wait_for_workers(timeout=15) ended with the unmatchable job's idle reason "
            f"after {time.monotonic() - started:.1f} s"
        )
        (row,) = cluster.job_table()
        assert row["status"] == "idle"
        assert "none of the pool's 1 slots" in row["reason"], "the one partitionable slot"
        assert "TARGET.Memory > 100000000" in row["reason"]
        assert "no slot can run it" in cluster._widget_status()
        assert "idle 1" in repr(cluster)
    finally:
        cluster.shutdown()
        never.close()


def test_bad_count_is_refused(new_cluster):
    cluster = new_cluster()
    with pytest.raises(SettingError, match="whole number"):
        cluster.wait_for_workers("2")


def submitted_jobs(cluster_name: str) -> set[str]:
    """Every job the cluster ever had: still queued or in the schedd's history."""
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    constraint = f'{CLUSTER_ATTRIBUTE} == "{cluster_name}"'
    # Queue first: a job that leaves in between is then found in the history.
    ads = queue(cluster_name, ["ClusterId", "ProcId"])
    ads += schedd.history(constraint, projection=["ClusterId", "ProcId"])
    return {f"{ad['ClusterId']}.{ad['ProcId']}" for ad in ads}


def test_workers_that_cannot_reach_the_scheduler_end_the_wait_with_why(gateway, record_figure):
    # Nothing listens on loopback port 9: each worker gives up after its
    # death timeout and its job ends with exit code 1.
    nowhere = "tls://127.0.0.1:9"
    lost = HTCGateway(htcondor={"scheduler-address": nowhere, "worker": {"death-timeout": 5}})
    cluster = lost.new_cluster()
    try:
        cluster.scale(1)
        started = time.monotonic()
        with pytest.raises(HTCondorError) as raised:
            cluster.wait_for_workers(1, timeout=120)
        message = str(raised.value)
        assert re.search(r"job \d+\.0@\S+ exited with code 1 after \d+ s", message), message
        assert f"could not reach the scheduler at {nowhere}" in message, message
        assert "gateway.htcondor.scheduler-address" in message, message
        record_figure(
            "worker that cannot reach its scheduler (death timeout 5 s) reported by "
            f"wait_for_workers after {time.monotonic() - started:.1f} s"
        )
    finally:
        cluster.shutdown()
        lost.close()


# A worker address its scheduler cannot dial. Anywhere: a contact address
# (NAT) where nothing listens: the worker listens on loopback 127.0.0.3 and
# gives 127.0.0.2, with the port it listens on. On the rig also the most
# likely mistake, worker.host 127.0.0.1, which the scheduler pod dials on
# its own loopback.
WRONG_WORKER_ADDRESSES = [
    ("contact-address", {"host": "127.0.0.3", "contact-address": "tls://127.0.0.2:47913"})
] + ([("host", {"host": "127.0.0.1"})] if TARGET == "k8s" else [])


@pytest.mark.parametrize(("setting", "worker"), WRONG_WORKER_ADDRESSES)
def test_workers_the_scheduler_cannot_dial_back_are_named_with_the_setting(
    gateway, record_figure, caplog, setting, worker
):
    # Issue 30, point 2: workers that reach their scheduler but give it an
    # address it cannot dial join all the same, and a computation on them
    # would hang at its first gather ("Couldn't gather keys") unexplained.
    wrong = worker[setting]
    astray = HTCGateway(htcondor={"worker": {**worker, "death-timeout": 20}})
    cluster = astray.new_cluster()
    # One worker per execute node can listen on a contact address's port.
    n = 1 if setting == "contact-address" else 2
    try:
        cluster.scale(n)
        started = time.monotonic()
        try:
            cluster.wait_for_workers(n, timeout=120)
        except GatewayClusterError as exc:
            told = str(exc)
        else:  # both joined before the scheduler's dial failed: the watcher says it

            def said() -> str | None:
                messages = [record.getMessage() for record in caplog.records]
                return next((m for m in messages if "cannot reach" in m), None)

            told = wait_for(
                said,
                "the client to say the scheduler cannot reach the workers",
                60,
            )
        record_figure(
            f"workers the scheduler cannot dial back (worker.{setting} {wrong}): said "
            f"{time.monotonic() - started:.1f} s after scale({n})"
        )
        assert f"The scheduler of {cluster.name} cannot reach" in told, told
        assert f"{wrong.removeprefix('tls://')}" in told, told
        assert "gateway.htcondor.worker.host" in told, told
    finally:
        cluster.shutdown()
        astray.close()
    wait_for(lambda: not queue(cluster.name), "the workers' jobs to leave", 30)


def test_workers_that_keep_failing_are_not_resubmitted_forever(gateway, record_figure):
    # A worker environment whose entry point fails at once: every job exits 1.
    broken = HTCGateway(htcondor={"watch-interval": 1, "worker": {"executable": "/bin/false"}})
    cluster = broken.new_cluster()
    try:
        cluster.scale(2)
        with pytest.raises(HTCondorError, match=r"in a row ended without serving.*code 1"):
            cluster.wait_for_workers(2, timeout=120)
        assert "ended without serving" in cluster._widget_status()
        assert "exited with code 1" in cluster._repr_html_()
        # The target holds, but replacement pauses after 3 failures in a row:
        # at most 2 + 2 jobs, whatever order the failures are noticed in.
        wait_for(
            lambda: (
                cluster._reconciler.tracker.failures_in_a_row >= FAILURES_BEFORE_PAUSE
                and not queue(cluster.name)
            ),
            "replacement to pause and the failing jobs to end",
            60,
        )
        tried = submitted_jobs(cluster.name)
        time.sleep(5)  # five watch periods in which nothing may be submitted
        assert submitted_jobs(cluster.name) == tried
        assert 3 <= len(tried) <= 4, tried
        assert not queue(cluster.name)
        record_figure(f"worker jobs that exit at once: {len(tried)} submitted, then paused")
        status = subprocess.run(
            ["htcdaskgateway", "status", cluster.name], capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stderr
        ended = re.findall(r"job (\d+\.\d+)@\S+ exited with code 1 after \d+ s", status.stdout)
        assert set(ended) == tried, status.stdout

        cluster.scale(2)  # asked again: one more round is tried
        wait_for(lambda: len(submitted_jobs(cluster.name)) > len(tried), "a new round", 30)
    finally:
        cluster.shutdown()
        broken.close()
