"""Faults of the services around a running cluster: the schedd stops, the gateway restarts.

The stack's own containers are stopped and restarted through the docker
API. Each test asserts that nothing was lost or left running: results are
correct afterwards, and no job or scheduler outlives its cluster.
"""

from __future__ import annotations

import time

import pytest
from dask_gateway import GatewayClusterError
from dask_gateway.client import ClusterStatus

from conftest import nothing_queued, queue, stack_service, wait_for, wait_healthy
from htcdaskgateway import HTCondorError

# Bounds for the tests, not promises of speed: a client call with the
# schedd down must fail within SCHEDD_DOWN_BOUND seconds.
SCHEDD_DOWN_BOUND = 60
DEATH_TIMEOUT = 10
# The test pool's second schedd is left out (see docker-compose.yml).
FIRST_SCHEDD = 'HTCDaskGatewayTestSchedd =!= "second"'


def pool_command(*command: str) -> str:
    result = stack_service("pool").exec_run(list(command))
    assert result.exit_code == 0, result.output.decode()
    return result.output.decode()


def schedd_is_up() -> bool:
    """The pool's first schedd (the one these tests use) is in the collector."""
    out = (
        stack_service("pool")
        .exec_run(["condor_status", "-schedd", "-constraint", FIRST_SCHEDD, "-af", "Name"])
        .output
    )
    return bool(out.decode().strip())


@pytest.fixture
def schedd_restored():
    yield
    if not schedd_is_up():
        pool_command("condor_on", "-daemon", "schedd")
    wait_for(schedd_is_up, "the schedd to be back", 60)


def test_schedd_stopped_then_back_the_cluster_recovers(new_cluster, schedd_restored, record_figure):
    cluster = new_cluster()
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=120)
    client = cluster.get_client()

    pool_command("condor_off", "-daemon", "schedd")
    wait_for(lambda: not schedd_is_up(), "the schedd to stop", 60)

    started = time.monotonic()
    with pytest.raises(HTCondorError) as failure:
        cluster.scale(3)
    took = time.monotonic() - started
    assert took < SCHEDD_DOWN_BOUND
    assert "schedd" in str(failure.value).lower(), failure.value
    record_figure(f"scale(3) with the schedd down failed after {took:.1f} s: {failure.value}")

    pool_command("condor_on", "-daemon", "schedd")
    back = time.monotonic()
    # The scale(3) target holds: the cluster gets its jobs back and a third one.
    cluster.wait_for_workers(3, timeout=180)
    record_figure(f"schedd back: 3 workers {time.monotonic() - back:.1f} s later")
    assert client.submit(sum, range(100)).result() == 4950
    active = [ad for ad in queue(cluster.name, ["JobStatus"]) if ad["JobStatus"] in (1, 2)]
    assert len(active) == 3


def test_gateway_restart_leaves_no_worker_running(gateway, record_figure):
    cluster = gateway.new_cluster(htcondor={"worker": {"death-timeout": DEATH_TIMEOUT}})
    try:
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=120)
        name = cluster.name

        stack_service("gateway").restart(timeout=10)
        restarted = time.monotonic()
        wait_healthy("gateway")

        # The local backend's schedulers die with the gateway: the cluster is
        # gone, and so must its jobs be, whoever notices first (the owner's
        # watcher, or each worker's death timeout).
        wait_for(lambda: nothing_queued(name), f"the jobs of {name} to leave", DEATH_TIMEOUT + 60)
        record_figure(
            f"gateway restart: the lost cluster's jobs left the queue "
            f"{time.monotonic() - restarted:.1f} s after the restart"
        )
        assert name not in [c.name for c in gateway.list_clusters()]
        with pytest.raises((GatewayClusterError, HTCondorError, ValueError, OSError)):
            cluster.scale(1)
        assert nothing_queued(name)
    finally:
        cluster.close()

    # The restarted gateway serves new clusters.
    again = gateway.new_cluster()
    try:
        again.scale(1)
        again.wait_for_workers(1, timeout=120)
        assert again.get_client().submit(pow, 3, 3).result() == 27
    finally:
        again.shutdown()
    wait_for(lambda: nothing_queued(again.name), "the new cluster's jobs to leave", 30)


def test_a_schedd_that_does_not_answer_for_3x_the_lease_does_not_stop_the_cluster(
    gateway, record_figure
):
    # Reproduction: the lease renewal waited behind the schedd query in the
    # same watch cycle, so a schedd silent for longer than the lease stopped
    # a live client's cluster and its data. Pausing the pool's container
    # freezes the schedd (and the worker job: it lives there too).
    lease = 6
    cluster = gateway.new_cluster(htcondor={"lease": lease, "watch-interval": 2})
    try:
        cluster.scale(1)
        cluster.wait_for_workers(1, timeout=120)
        client = cluster.get_client()
        kept = client.scatter(list(range(100)))
        pool = stack_service("pool")
        pool.pause()
        try:
            time.sleep(3 * lease + 2)
            assert cluster.gateway.get_cluster(cluster.name).status.name == "RUNNING"
        finally:
            pool.unpause()
        assert not any(task.done() for task in cluster._watcher._tasks), "the watcher died"
        # It catches up: the next target is met, the data is still there.
        started = time.monotonic()
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=120)
        record_figure(f"after the schedd was silent {3 * lease + 2} s: scale(2) met in "
                      f"{time.monotonic() - started:.1f} s, cluster kept")  # fmt: skip
        assert client.submit(sum, kept).result() == 4950
        assert gateway.get_cluster(cluster.name).status.name == "RUNNING"
    finally:
        cluster.shutdown()
    wait_for(lambda: nothing_queued(cluster.name), "the jobs to leave", 30)


def test_an_abandoned_cluster_stops_itself_and_attended_ones_stay(gateway, record_figure):
    # Reproduction: a notebook that ended with shutdown_on_close=False left
    # its scheduler running forever. The plugin's unattended timeout stops
    # it; an open cluster object or a connected client keep theirs.
    from distributed import Client

    timeout = 12
    quick = {"worker": {"death-timeout": 10}}
    watched = gateway.new_cluster(unattended_timeout=timeout, htcondor=quick)
    with_client = gateway.new_cluster(
        unattended_timeout=timeout, shutdown_on_close=False, htcondor=quick
    )
    abandoned = gateway.new_cluster(
        unattended_timeout=timeout, shutdown_on_close=False, htcondor=quick
    )
    client = None
    try:
        abandoned.scale(1)
        abandoned.wait_for_workers(1, timeout=90)
        client = Client(with_client.scheduler_address, security=with_client.security)
        name, kept = abandoned.name, with_client.name
        with_client.close()  # a client stays connected to it
        abandoned.close()  # the notebook ends; nothing of it is attached
        started = time.monotonic()
        wait_for(lambda: gateway.get_cluster(name).status is ClusterStatus.STOPPED,
                 "the abandoned cluster to stop itself", 60)  # fmt: skip
        record_figure(
            f"abandoned cluster stopped {time.monotonic() - started:.1f} s after its client "
            f"left (unattended-timeout {timeout} s)"
        )
        # Its running worker exits 10 s after its scheduler. The idle
        # credentials job waits, as for any cluster stopped behind its
        # client's back, for cleanup (a cluster kept past its client keeps
        # its idle jobs: no lease removes them).
        wait_for(lambda: not queue(name), "its worker job to leave", 60)
        assert gateway.remove_orphaned_jobs() == {name: 1}
        wait_for(lambda: nothing_queued(name), "cleanup to remove its credentials job", 30)
        # Both were left as long as the abandoned one, and longer.
        time.sleep(max(0.0, timeout + 5 - (time.monotonic() - started)))
        for running in (watched.name, kept):
            assert gateway.get_cluster(running).status is ClusterStatus.RUNNING, running
    finally:
        if client is not None:
            client.close()
        watched.shutdown()
        gateway.stop_cluster(with_client.name)
