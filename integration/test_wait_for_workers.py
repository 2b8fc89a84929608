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


def test_unmatchable_job_times_out_with_the_job_states(gateway):
    never = HTCGateway(htcondor={"submit": {"extra-directives": {"requirements": "False"}}})
    cluster = never.new_cluster()
    try:
        cluster.scale(1)
        with pytest.raises(TimeoutError, match=r"0 of 1 workers joined .* idle 1"):
            cluster.wait_for_workers(1, timeout=5)
    finally:
        cluster.shutdown()
        never.close()


def test_bad_count_is_refused(new_cluster):
    cluster = new_cluster()
    with pytest.raises(TypeError, match="whole number"):
        cluster.wait_for_workers("2")
