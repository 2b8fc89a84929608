"""Two users, one JupyterHub-authenticated gateway, one pool.

alice works in this process; bob is another Unix user of the same host
(sudo), with his own JupyterHub token and HTCondor token, using the real
``htcdaskgateway`` CLI and HTCondor tools. Every one of bob's attempts on
alice's cluster must fail, and alice's cluster must keep all its workers
and compute correctly throughout.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
import time
from pathlib import Path

import htcondor2
import pytest
from dask_gateway.auth import JupyterHubAuth

from conftest import as_user, hub_env, nothing_queued, queue, user_command, wait_for
from htcdaskgateway import GatewayAccessError, HTCGateway
from htcdaskgateway.cluster import gateway_id

CLI = shutil.which("htcdaskgateway") or "htcdaskgateway"


@pytest.fixture
def alices_cluster(hub_gateway):
    cluster = hub_gateway.new_cluster()
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=120)
    yield cluster
    cluster.shutdown()
    wait_for(lambda: nothing_queued(cluster.name), "alice's jobs to leave", 30)


def running_jobs(name: str) -> list[str]:
    return sorted(
        f"{ad['ClusterId']}.{ad['ProcId']}"
        for ad in queue(name, ["ClusterId", "ProcId", "JobStatus"])
        if ad["JobStatus"] == 2
    )


def test_another_user_can_neither_see_nor_touch_a_cluster(alices_cluster, hub_gateway):
    name = alices_cluster.name
    jobs_before = running_jobs(name)
    assert len(jobs_before) == 2

    listing = as_user("bob", CLI, "list")
    assert listing.returncode == 0, listing.stderr
    assert name not in listing.stdout

    refused = {}
    for attempt in (["status", name], ["scale", name, "5"], ["shutdown", name]):
        done = as_user("bob", CLI, *attempt)
        refused[attempt[0]] = done
        assert done.returncode != 0, f"bob's `{' '.join(attempt)}` succeeded: {done.stdout}"
        assert "Traceback" not in done.stderr, done.stderr
        assert name in done.stderr or "not found" in done.stderr.lower(), done.stderr

    condor_rm = as_user("bob", "condor_rm", "-constraint", f'HTCDaskGatewayCluster == "{name}"')
    assert condor_rm.returncode != 0, condor_rm.stdout

    cleanup = as_user("bob", CLI, "cleanup")
    assert cleanup.returncode == 0, cleanup.stderr
    assert name not in cleanup.stdout, "bob's cleanup judged alice's cluster"
    assert "0 orphaned jobs removed" in cleanup.stdout

    # alice: nothing lost.
    assert running_jobs(name) == jobs_before
    assert [c.name for c in hub_gateway.list_clusters()] == [name]
    client = alices_cluster.get_client()
    assert client.submit(sum, range(1000)).result() == 499500
    assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2


def test_another_users_cluster_is_not_listed_and_own_works(alices_cluster):
    bobs = as_user(
        "bob",
        "python",
        "-c",
        "from htcdaskgateway import HTCGateway\n"
        "with HTCGateway() as g:\n"
        "    c = g.new_cluster()\n"
        "    c.scale(1)\n"
        "    c.wait_for_workers(1, timeout=120)\n"
        "    print(sorted(r.name for r in g.list_clusters()))\n"
        "    print(c.get_client().submit(pow, 2, 10).result())\n"
        "    c.shutdown()\n",
        timeout=300,
    )
    assert bobs.returncode == 0, bobs.stderr
    listed, result = bobs.stdout.strip().splitlines()[-2:]
    assert alices_cluster.name not in listed
    assert result == "1024"
    assert len(running_jobs(alices_cluster.name)) == 2


def test_a_token_the_hub_does_not_know_is_refused_with_the_reason(stack_ready):
    # JupyterHub answers an unknown token with 403 and the gateway turns that
    # into a 500; analysts must still read that their token is the problem.
    env = {**hub_env("alice"), "JUPYTERHUB_API_TOKEN": secrets.token_hex(16)}
    listing = subprocess.run(
        [CLI, "list"], env=env, capture_output=True, text=True, timeout=60, cwd="/tmp"
    )
    assert listing.returncode != 0, listing.stdout
    assert "Traceback" not in listing.stderr, listing.stderr
    assert "JupyterHub refused it" in listing.stderr, listing.stderr

    stranger = JupyterHubAuth(api_token=secrets.token_hex(16))
    refusal = "could not verify your JupyterHub API token"
    with (
        HTCGateway(address=os.environ["HUB_GATEWAY_ADDRESS"], auth=stranger) as gateway,
        pytest.raises(GatewayAccessError, match=refusal),
    ):
        gateway.new_cluster()


def _bobs_job(cluster_name: str, gateway_id: str, variant: str) -> str:
    """bob queues a plain sleep job tagged with alice's cluster and gateway (both public)."""
    extra = {"idle": "requirements = False", "running": "", "held": "hold = True"}[variant]
    submit = (
        "executable = /bin/sleep\narguments = 600\n"
        f'+HTCDaskGatewayCluster = "{cluster_name}"\n+HTCDaskGatewayGateway = "{gateway_id}"\n'
        f'+HTCDaskGatewayUser = "alice"\n{extra}\nqueue\n'
    )
    done = subprocess.run(
        user_command("bob", "condor_submit", "-terse", "-"),
        input=submit, capture_output=True, text=True, timeout=60, cwd="/tmp",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split("-")[0].strip()


@pytest.mark.parametrize("variant", ["idle", "running", "held"])
def test_bobs_job_tagged_with_alices_cluster_is_not_hers(hub_gateway, variant):
    # Reproduction: with a job of bob's carrying her cluster's name, alice's
    # scale(2) used to submit one job, not two.
    cluster = hub_gateway.new_cluster()
    try:
        bobs = _bobs_job(cluster.name, cluster.gateway_id, variant)
        status = {"idle": 1, "running": 2, "held": 5}[variant]
        wait_for(
            lambda: any(f"{ad['ClusterId']}.{ad['ProcId']}" == bobs and ad["JobStatus"] == status
                        for ad in queue(cluster.name, ["ClusterId", "ProcId", "JobStatus"])),
            f"bob's {variant} job", 60,
        )  # fmt: skip
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=120)  # a held job of bob's would end this wait
        # bob's job is on the same schedd as alice's: compare the ids the schedd knows.
        mine = {job.job_id.local for job in cluster.worker_jobs()}
        assert len(mine) == 2 and bobs not in mine
        assert bobs not in {row["job"].split("@")[0] for row in cluster.job_table()}
        assert f"<td>{bobs}@" not in cluster._repr_html_()
        counted = hub_gateway.get_cluster(cluster.name).jobs
        assert sum(counted.values()) == 2, counted

        cluster.scale(0)  # neither retired nor removed
        wait_for(lambda: not cluster.worker_jobs(), "alice's jobs to leave", 60)
        assert any(
            f"{ad['ClusterId']}.{ad['ProcId']}" == bobs
            for ad in queue(cluster.name, ["ClusterId", "ProcId"])
        ), "alice's scale(0) removed bob's job"
    finally:
        cluster.shutdown()
        as_user("bob", "condor_rm", "-constraint", f'HTCDaskGatewayCluster == "{cluster.name}"')
    wait_for(lambda: nothing_queued(cluster.name), "all jobs to leave", 30)
    # shutdown() left bob's job to bob: it was still queued until his condor_rm.


def test_cleanup_on_one_gateway_leaves_another_gateways_live_cluster(hub_gateway):
    # Reproduction: `htcdaskgateway cleanup` against the default gateway
    # judged alice's live cluster on the JupyterHub gateway (same schedd,
    # same user) orphaned and removed its worker.
    cluster = hub_gateway.new_cluster()
    try:
        cluster.scale(1)
        cluster.wait_for_workers(1, timeout=120)
        (job,) = cluster.worker_jobs()
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB")}
        cleanup = subprocess.run(
            [CLI, "cleanup"], env=env, capture_output=True, text=True, timeout=120, cwd="/tmp"
        )
        assert cleanup.returncode == 0, cleanup.stderr
        assert cluster.name not in cleanup.stdout
        assert "0 orphaned jobs removed" in cleanup.stdout
        time.sleep(3)
        assert [str(j.job_id) for j in cluster.worker_jobs()] == [str(job.job_id)]
        assert cluster.get_client().submit(pow, 2, 5).result() == 32
    finally:
        cluster.shutdown()
    wait_for(lambda: nothing_queued(cluster.name), "alice's jobs to leave", 30)


def _alices_job_marked_for(gateway_user: str, cluster_name: str, gateway: str) -> str:
    """alice queues, with the bindings, a sleep job tagged as a cluster's of ``gateway_user``.

    What a hub whose users share one HTCondor identity (one submit token)
    queues: the job's ``User`` is alice's either way.
    """
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    description = htcondor2.Submit({
        "executable": "/bin/sleep", "arguments": "600", "requirements": "False",
        "+HTCDaskGatewayCluster": f'"{cluster_name}"', "+HTCDaskGatewayGateway": f'"{gateway}"',
        "+HTCDaskGatewayUser": f'"{gateway_user}"',
    })  # fmt: skip
    return f"{schedd.submit(description, count=1).cluster()}.0"


def test_cleanup_leaves_another_gateway_users_jobs_under_the_same_htcondor_identity(hub_gateway):
    # Reproduction: cleanup selected on User and gateway only, so where hub
    # users share one HTCondor identity, the live clusters of the others
    # (absent from alice's list at the gateway) looked orphaned to her.
    gateway = gateway_id(hub_gateway.htcondor_settings, hub_gateway.address)
    bobs_cluster = f"bobs-live.{secrets.token_hex(6)}"  # not in alice's list, as bob's never is
    alices_dead = f"alices-dead.{secrets.token_hex(6)}"
    bobs = _alices_job_marked_for("bob", bobs_cluster, gateway)
    orphan = _alices_job_marked_for("alice", alices_dead, gateway)
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    try:
        for name in (bobs_cluster, alices_dead):
            wait_for(lambda name=name: queue(name), f"the job of {name} to be queued", 30)
        cleanup = as_user("alice", CLI, "cleanup")
        assert cleanup.returncode == 0, cleanup.stderr
        assert bobs_cluster not in cleanup.stdout, "alice's cleanup judged bob's cluster"
        assert f"cluster {alices_dead}: removed 1 jobs" in cleanup.stdout, cleanup.stdout
        time.sleep(3)
        assert _queued_ids(bobs_cluster) == [bobs], "alice's cleanup removed bob's job"
        wait_for(lambda: nothing_queued(alices_dead), "alice's orphan to leave", 30)
    finally:
        left = [job for job in (bobs, orphan) if job in _queued_ids(bobs_cluster, alices_dead)]
        if left:
            schedd.act(htcondor2.JobAction.Remove, left, "test: done")
    wait_for(lambda: nothing_queued(bobs_cluster), "the test's job to leave", 30)


def _queued_ids(*cluster_names: str) -> list[str]:
    return [
        f"{ad['ClusterId']}.{ad['ProcId']}"
        for name in cluster_names
        for ad in queue(name, ["ClusterId", "ProcId"])
    ]


def test_the_hubs_tokens_are_readable_by_their_reader_only(stack_ready):
    # They were written 0644: any account of the analysts' host (or of the
    # gateway's) could read every user's token.
    for name in ("alice", "bob", "dask-gateway"):
        found = os.stat(Path(os.environ["HUB_TOKEN_DIR"], name))
        assert stat.S_IMODE(found.st_mode) == 0o600, (name, oct(found.st_mode))
        assert found.st_uid == os.getuid(), (name, found.st_uid)
