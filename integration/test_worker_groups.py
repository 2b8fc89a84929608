"""Worker groups on the stack (issue 27): a GPU group on the pool's simulated
GPUs beside the default group, each scaled and adapted on its own, kept at
the scheduler for a second client and the CLI.

The test pool advertises two simulated GPUs (integration/pool/test-pool.conf):
HTCondor matches request_gpus to them and hands the job their ids.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from distributed import get_worker

from conftest import queue, wait_for
from htcdaskgateway import SettingError

GPU = {"gpus": 1, "memory": "1 GiB"}


def jobs_by_group(cluster_name: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ad in queue(cluster_name, ["HTCDaskGatewayGroup", "JobStatus"]):
        group = ad.get("HTCDaskGatewayGroup", "default")
        counts[group] = counts.get(group, 0) + 1
    return counts


def test_a_gpu_group_beside_the_default_one_runs_gpu_tasks_only_there(new_cluster, record_figure):
    cluster = new_cluster()
    cluster.scale(2)
    started = time.monotonic()
    cluster.add_worker_group("gpu", 1, **GPU)
    cluster.wait_for_workers(3, timeout=180)
    record_figure(f"default 2 + gpu 1 workers joined in {time.monotonic() - started:.1f} s")
    assert jobs_by_group(cluster.name) == {"default": 2, "gpu": 1}
    client = cluster.get_client()
    (gpu_job,) = [row for row in cluster.job_table() if row["group"] == "gpu"]

    def assigned_gpus() -> tuple[str, str]:
        """The worker's name and the GPUs HTCondor assigned its job (defined
        here so that it travels by value: the scheduler cannot import tests)."""
        import os

        return get_worker().name, os.environ.get("CUDA_VISIBLE_DEVICES", "")

    # Annotated tasks run only on the GPU worker and see its device id.
    seen = client.gather(
        [client.submit(assigned_gpus, resources={"GPU": 1}, pure=False) for _ in range(4)]
    )
    assert {name for name, _ in seen} == {f"htc-{gpu_job['job']}"}, seen
    devices = {device for _, device in seen}
    assert len(devices) == 1 and devices.pop().startswith("GPU-"), seen

    # Unannotated tasks use every worker.
    def where(_: int) -> str:
        time.sleep(0.3)
        return get_worker().name

    names = set(client.gather(client.map(where, range(30), pure=False)))
    assert len(names) == 3, names

    # Beyond the group's max-jobs (its preset's or the cluster's): refused.
    with pytest.raises(SettingError):
        cluster.scale(10_000, worker_group="gpu")
    cluster.delete_worker_group("gpu")
    wait_for(lambda: jobs_by_group(cluster.name) == {"default": 2}, "the gpu group's job to go", 60)


def test_a_gpu_group_adapts_from_zero_with_gpu_tasks_and_back(new_cluster, record_figure):
    cluster = new_cluster()
    # The default group adapts too: GPU work must not grow it.
    cluster.adapt(1, 3, interval="1s", wait_count=2)
    cluster.add_worker_group("gpu", 0, **GPU)
    cluster.adapt(0, 2, worker_group="gpu", interval="1s", wait_count=2)
    cluster.wait_for_workers(1, timeout=120)
    client = cluster.get_client()
    time.sleep(3)
    assert jobs_by_group(cluster.name) == {"default": 1}, "nothing needs a GPU yet"

    started = time.monotonic()
    tasks = [client.submit(time.sleep, 8, resources={"GPU": 1}, pure=False) for _ in range(2)]
    wait_for(lambda: jobs_by_group(cluster.name).get("gpu", 0) >= 1, "the gpu group to grow", 60)
    grown = time.monotonic() - started
    default_sizes = set()
    while not all(task.done() for task in tasks):
        default_sizes.add(jobs_by_group(cluster.name).get("default", 0))
        time.sleep(0.5)
    client.gather(tasks)
    assert default_sizes == {1}, "the default group stays at its minimum through GPU work"
    wait_for(lambda: "gpu" not in jobs_by_group(cluster.name), "the gpu group back to 0", 90)
    record_figure(
        f"adapt(0, 2, worker_group='gpu'): grew {grown:.1f} s after 2 GPU tasks, back to 0 "
        f"{time.monotonic() - started:.1f} s after they were submitted"
    )
    assert jobs_by_group(cluster.name) == {"default": 1}, "the default group unchanged"


def test_a_gpu_group_the_pool_cannot_hold_says_why_it_waits(new_cluster):
    cluster = new_cluster()
    cluster.add_worker_group("big", 1, gpus=3)  # the pool has 2
    wait_for(
        lambda: any(
            row["group"] == "big" and "GPU" in (row["reason"] or "") for row in cluster.job_table()
        ),
        "the idle reason to name the GPUs",
        60,
    )


SECOND_PROCESS = """
import sys
from htcdaskgateway import HTCGateway

with HTCGateway() as gateway, gateway.connect(sys.argv[1]) as cluster:
    print(sorted(cluster.worker_groups))
    cluster.scale(2, worker_group="gpu")
"""


def test_a_second_process_and_the_cli_see_and_keep_each_groups_target(new_cluster):
    # An operator's preset (as the chart publishes it): picked by name, capped.
    preset = {"gpu": {"worker": GPU, "max-jobs": 2}}
    cluster = new_cluster(htcondor={"worker-groups": preset})
    cluster.scale(1)
    cluster.add_worker_group("gpu", 1)
    cluster.wait_for_workers(2, timeout=120)
    with pytest.raises(SettingError, match="max-jobs allows 2"):
        cluster.scale(3, worker_group="gpu")
    assert jobs_by_group(cluster.name) == {"default": 1, "gpu": 1}, "nothing submitted"

    # connect() from another process sees both groups and keeps its new target.
    other = subprocess.run(
        ["python", "-c", SECOND_PROCESS, cluster.name],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert other.stdout.strip() == "['default', 'gpu']", other
    wait_for(lambda: jobs_by_group(cluster.name).get("gpu") == 2, "2 gpu jobs", 60)
    # The notebook takes the new target at a renewal, and does not undo it.
    wait_for(lambda: cluster.worker_groups["gpu"].n == 2, "the notebook to see it", 30)
    time.sleep(3)
    assert jobs_by_group(cluster.name).get("gpu") == 2

    subprocess.run(
        ["htcdaskgateway", "scale", cluster.name, "0", "--group", "gpu"], check=True, timeout=120
    )
    wait_for(lambda: "gpu" not in jobs_by_group(cluster.name), "the gpu jobs to go", 60)
    status = subprocess.run(
        ["htcdaskgateway", "status", cluster.name], capture_output=True, text=True, check=True
    ).stdout
    assert "gpu" in status and "idle/running/held" in status, status
    assert jobs_by_group(cluster.name) == {"default": 1}


def test_a_pod_group_beside_htcondor_workers_computes_and_leaves_nothing(new_cluster, gateway):
    """On the compose stack the gateway's local worker processes stand in for
    pods (the rig starts real ones): both kinds compute one checked result."""
    cluster = new_cluster()
    cluster.scale(1)
    cluster.add_worker_group("pods", 1, kind="pods")
    cluster.wait_for_workers(2, timeout=120)
    client = cluster.get_client()
    names = {w["name"] for w in client.scheduler_info()["workers"].values()}
    assert len([n for n in names if n.startswith("htc-")]) == 1, names
    assert client.submit(sum, range(100)).result() == 4950

    def where(_: int) -> str:
        time.sleep(0.3)
        return get_worker().name

    assert set(client.gather(client.map(where, range(20), pure=False))) == names
    assert jobs_by_group(cluster.name) == {"default": 1}, "no HTCondor job for the pod"
    name = cluster.name
    cluster.shutdown()
    wait_for(lambda: not queue(name), "the cluster's jobs to leave", 60)
    assert name not in [c.name for c in gateway.list_clusters()]
