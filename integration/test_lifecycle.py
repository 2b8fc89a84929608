"""Clusters across processes: connect, interpreter exit, a killed client, the CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import htcondor2
from dask_gateway.client import ClusterStatus

from conftest import nothing_queued, plain_gateway, queue, wait_for


def python(code: str, **kwargs) -> subprocess.Popen:
    """Run ``code`` in a new interpreter (another analyst process)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def cli(*args: str) -> str:
    done = subprocess.run(["htcdaskgateway", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def active_jobs(name: str) -> list:
    return [ad for ad in queue(name, ["JobStatus"]) if ad["JobStatus"] in (1, 2, 5)]


def python_until_killed(code: str) -> subprocess.Popen:
    """Run ``code``, which leaves a scaled ``cluster``; then report it and wait to be killed."""
    return python(
        textwrap.dedent(code) + "print(cluster.name, flush=True)\n__import__('time').sleep(600)\n"
    )


def kill_once_queued(client: subprocess.Popen, jobs: int) -> str:
    """SIGKILL a client once its cluster has ``jobs`` jobs; returns the cluster's name."""
    name = client.stdout.readline().strip()
    assert name, client.stderr.read()
    wait_for(lambda: len(active_jobs(name)) == jobs, f"{jobs} jobs to be queued", 30)
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    return name


def test_connect_from_another_process_scales_the_cluster(new_cluster):
    cluster = new_cluster()
    other = python(f"""
        from htcdaskgateway import HTCGateway
        with HTCGateway() as gateway, gateway.connect("{cluster.name}") as cluster:
            cluster.scale(2)
    """)
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, out + err

    client = cluster.get_client()
    client.wait_for_workers(2, timeout=90)
    jobs = {job.job_id for job in cluster.worker_jobs()}
    assert len(jobs) == 2
    names = {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    assert names == {f"htc-{j}" for j in jobs}
    assert client.submit(sum, [1, 2, 3]).result() == 6
    # Closing the other process's connection left the cluster and its jobs alone.
    assert cluster.gateway.get_cluster(cluster.name).status is ClusterStatus.RUNNING

    cluster.scale(1)
    wait_for(lambda: len(active_jobs(cluster.name)) == 1, "scale(1) to leave one job", 30)


def test_interpreter_exit_shuts_the_cluster_down(gateway):
    exiting = python("""
        from htcdaskgateway import HTCGateway
        cluster = HTCGateway().new_cluster()
        cluster.scale(1)
        cluster.get_client().wait_for_workers(1, timeout=90)
        print(cluster.name, flush=True)
        # no shutdown(): leaving the interpreter must do it
    """)
    out, err = exiting.communicate(timeout=180)
    assert exiting.returncode == 0, out + err
    name = out.split()[0]
    wait_for(lambda: nothing_queued(name), "the exited client's jobs to leave the queue", 30)
    wait_for(
        lambda: gateway.get_cluster(name).status is ClusterStatus.STOPPED,
        "the gateway to report the cluster stopped",
        30,
    )


def test_killed_owner_loses_its_lease_and_its_jobs(gateway, record_figure):
    # The owner (shutdown on close) holds a 10 s lease. Killed, it cannot
    # renew it: the scheduler plugin stops the cluster (running workers exit
    # with their scheduler) and the schedd removes the idle job.
    death_timeout = 30
    killed = python_until_killed(f"""
        from htcdaskgateway import HTCGateway
        from htcdaskgateway.settings import HTCondorSettings
        settings = {{"lease": 10, "worker": {{"death-timeout": {death_timeout}}}}}
        cluster = HTCGateway(htcondor=settings).new_cluster()
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=90)
        # and one job that never starts
        settings["submit"] = {{"requirements": "False"}}
        cluster.htcondor_settings = HTCondorSettings.from_config(settings)
        cluster.scale(3)
    """)
    name = kill_once_queued(killed, 3)
    started = time.monotonic()

    wait_for(lambda: nothing_queued(name), "the killed owner's jobs to leave", death_timeout)
    record_figure(
        f"killed client's jobs (2 running, 1 idle) gone "
        f"{time.monotonic() - started:.1f} s after SIGKILL (lease 10 s)"
    )
    wait_for(
        lambda: gateway.get_cluster(name).status is ClusterStatus.STOPPED,
        "the gateway to report the cluster stopped",
        10,
    )


def test_killed_client_leaves_jobs_that_cleanup_removes(gateway):
    # Jobs that can never start stay in the queue after their client dies;
    # the cleanup command is how they are found and removed.
    killed = python_until_killed("""
        from htcdaskgateway import HTCGateway
        gateway = HTCGateway(htcondor={"submit": {"extra-directives": {"requirements": "False"}}})
        cluster = gateway.new_cluster(shutdown_on_close=False)
        cluster.scale(2)
    """)
    name = kill_once_queued(killed, 2)

    # The gateway forgets the cluster (e.g. culled), without a word to HTCondor.
    with plain_gateway() as plain:
        plain.stop_cluster(name)
    time.sleep(2)
    assert len(active_jobs(name)) == 2, "nothing removed the orphaned jobs yet"

    out = cli("cleanup")
    assert f"cluster {name}: removed 3 jobs" in out, "2 workers and the credentials job"
    wait_for(lambda: nothing_queued(name), "cleanup to empty the queue of the orphaned jobs", 10)


def test_cli_list_status_scale_shutdown(gateway):
    cluster = gateway.new_cluster(shutdown_on_close=False)
    name = cluster.name
    try:
        assert name in cli("list")
        assert "scaled to 1 worker jobs" in cli("scale", name, "1")
        client = cluster.get_client()
        client.wait_for_workers(1, timeout=90)
        wait_for(lambda: "running" in cli("status", name), "status to show a running job", 30)
        row = next(line for line in cli("list").splitlines() if line.startswith(name))
        assert row.split()[1:] == ["RUNNING", "0", "1", "0"]

        assert "shut down" in cli("shutdown", name)
        wait_for(lambda: nothing_queued(name), "the queue to empty after `shutdown`", 30)
        wait_for(
            lambda: gateway.get_cluster(name).status is ClusterStatus.STOPPED,
            "the gateway to report the cluster stopped",
            30,
        )
    finally:
        cluster.shutdown()


def test_a_target_set_from_the_cli_is_kept_by_the_open_notebook(new_cluster):
    # Reproduction: `htcdaskgateway scale NAME 3` took control and exited;
    # nobody held the target after it, so a lost job was never replaced.
    notebook = new_cluster()
    name = notebook.name
    assert "scaled to 3 worker jobs" in cli("scale", name, "3")
    wait_for(lambda: len(active_jobs(name)) == 3, "the CLI's 3 jobs", 30)
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    (lost, *_) = sorted(
        f"{ad['ClusterId']}.{ad['ProcId']}" for ad in queue(name, ["ClusterId", "ProcId"])
    )
    schedd.act(htcondor2.JobAction.Remove, [lost], "test: condor_rm after the CLI left")

    def replaced() -> bool:
        ids = {f"{ad['ClusterId']}.{ad['ProcId']}" for ad in active_jobs_with_ids(name)}
        return len(ids) == 3 and lost not in ids

    wait_for(replaced, "the notebook to replace the removed job", 60)


def active_jobs_with_ids(name: str) -> list:
    ads = queue(name, ["ClusterId", "ProcId", "JobStatus"])
    return [ad for ad in ads if ad["JobStatus"] in (1, 2, 5)]


def test_killed_owner_leaves_no_held_job_behind(gateway, record_figure):
    # Idle and held jobs (held by policy, or while spooling when the client
    # died between submit and spool) are removed by the schedd once the
    # killed client's lease is past: within lease + PERIODIC_EXPR_INTERVAL
    # (1 s in the test pool, 60 s by default).
    lease = 6
    killed = python_until_killed(f"""
        from htcdaskgateway import HTCGateway
        settings = {{"lease": {lease}, "submit": {{"requirements": "False"}}}}
        cluster = HTCGateway(htcondor=settings).new_cluster()
        cluster.scale(2)
    """)
    name = killed.stdout.readline().strip()
    assert name, killed.stderr.read()
    wait_for(lambda: len(active_jobs(name)) == 2, "2 idle jobs", 30)
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    schedd.act(
        htcondor2.JobAction.Hold, f'HTCDaskGatewayCluster == "{name}"', "test: held by policy"
    )
    wait_for(lambda: all(ad["JobStatus"] == 5 for ad in active_jobs(name)), "the jobs held", 10)
    time.sleep(2 * lease)  # the live client keeps them: its lease is renewed
    assert len(active_jobs(name)) == 2, "held jobs of a live client were removed"

    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    started = time.monotonic()
    wait_for(lambda: nothing_queued(name), "the held jobs to leave", lease + 1 + 15)
    record_figure(
        f"killed client's 2 held jobs gone {time.monotonic() - started:.1f} s after SIGKILL "
        f"(lease {lease} s, PERIODIC_EXPR_INTERVAL 1 s)"
    )
