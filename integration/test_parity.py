"""HTCGateway as a drop-in Gateway: async API, context managers, close vs shutdown."""

from __future__ import annotations

import asyncio
import os
import time

from dask_gateway.client import ClusterStatus
from dask_gateway.options import Options

from conftest import condor_q_long, nothing_queued, queue, wait_for
from htcdaskgateway import HTCGateway


def active(name: str) -> int:
    return sum(1 for ad in queue(name, ["JobStatus"]) if ad["JobStatus"] in (1, 2, 5))


def test_async_api_end_to_end(stack_ready):
    async def session() -> tuple[str, list, int]:
        async with HTCGateway(asynchronous=True) as gateway:
            assert isinstance(await gateway.cluster_options(), Options)
            async with gateway.new_cluster() as cluster:
                await cluster.scale(2)
                await cluster.wait_for_workers(2, timeout=90)
                async with cluster.get_client() as client:
                    total = await client.submit(sum, range(10))
                jobs = await cluster.worker_jobs()
                reports = {r.name: r for r in await gateway.list_clusters()}
                assert reports[cluster.name].jobs == {"idle": 0, "running": 2, "held": 0}
                name = cluster.name
            return name, jobs, total

    name, jobs, total = asyncio.run(session())
    assert total == 45
    assert len(jobs) == 2
    wait_for(lambda: nothing_queued(name), "leaving `async with` to remove the jobs", 30)
    # The gateway stops a scheduler in the background after the DELETE returns.
    with HTCGateway() as gateway:
        wait_for(
            lambda: gateway.get_cluster(name).status is ClusterStatus.STOPPED,
            "a stopped cluster",
            30,
        )


def test_close_keeps_the_cluster_shutdown_ends_it(gateway):
    with gateway.new_cluster(shutdown_on_close=False) as cluster:
        name = cluster.name
        cluster.scale(1)
        cluster.wait_for_workers(1, timeout=90)
    assert gateway.get_cluster(name).status is ClusterStatus.RUNNING
    assert active(name) == 1
    gateway.connect(name).shutdown()
    wait_for(lambda: nothing_queued(name), "shutdown() to remove the job", 30)

    # The owner's close(shutdown=False) releases its lease: the cluster runs
    # on well past the lease, and its idle job is not removed either.
    lease = 3
    unmatchable = {"lease": lease, "submit": {"requirements": "False"}}
    owner = gateway.new_cluster(htcondor={"lease": lease})
    name = owner.name
    owner.scale(1)
    owner.wait_for_workers(1, timeout=90)
    owner.htcondor_settings = type(owner.htcondor_settings).from_config(unmatchable)
    owner.scale(2)  # one more job, which stays idle
    owner.close(shutdown=False)
    time.sleep(3 * lease)
    assert gateway.get_cluster(name).status is ClusterStatus.RUNNING
    assert active(name) == 2

    again = gateway.connect(name)
    assert again.worker_jobs()[0].user == "alice"
    again.shutdown()
    again.shutdown()  # idempotent
    wait_for(lambda: nothing_queued(name), "shutdown() to remove the job", 30)
    wait_for(
        lambda: gateway.get_cluster(name).status is ClusterStatus.STOPPED, "a stopped cluster", 30
    )

    with gateway.new_cluster() as owned:
        owned.scale(1)
        name = owned.name
    wait_for(lambda: nothing_queued(name), "leaving `with` to shut the owned cluster down", 30)
    wait_for(
        lambda: gateway.get_cluster(name).status is ClusterStatus.STOPPED, "a stopped cluster", 30
    )


def test_gateway_methods_by_cluster_name(gateway, new_cluster):
    cluster = new_cluster(shutdown_on_close=False)
    name = cluster.name
    gateway.scale_cluster(name, 1)
    cluster.wait_for_workers(1, timeout=90)
    assert gateway.get_cluster(name).jobs == {"idle": 0, "running": 1, "held": 0}

    gateway.adapt_cluster(name, minimum=0, maximum=2, interval="1s")
    client = cluster.get_client()
    assert sum(client.gather(client.map(lambda i: time.sleep(0.2) or i, range(40)))) == 780
    wait_for(lambda: active(name) == 0, "adapting by name to scale to 0 when idle", 60)

    gateway.stop_cluster(name)
    wait_for(lambda: nothing_queued(name), "stop_cluster() to remove the jobs", 30)
    wait_for(lambda: gateway.get_cluster(name).status is ClusterStatus.STOPPED, "stopped", 30)


def test_no_token_reaches_the_jobs(new_cluster, monkeypatch):
    # The gateway's real password where it has one (the rig), else any.
    token = os.environ.get("DASK_GATEWAY__AUTH__KWARGS__PASSWORD") or "hub-token-to-stay-here"
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    monkeypatch.setenv("DASK_GATEWAY__AUTH__KWARGS__PASSWORD", token)
    cluster = new_cluster()
    cluster.scale(1)
    client = cluster.get_client()
    cluster.wait_for_workers(1, timeout=90)
    assert token not in condor_q_long(cluster.name)
    (environ,) = client.run(lambda: dict(__import__("os").environ)).values()
    assert token not in repr(environ)
