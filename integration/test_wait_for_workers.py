"""wait_for_workers: progress, and the HTCondor reason when workers cannot come."""

from __future__ import annotations

import time

import pytest

from htcdaskgateway import HTCGateway, HTCondorError


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
    with pytest.raises(TypeError, match="whole number"):
        cluster.wait_for_workers("2")
