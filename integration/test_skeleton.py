"""The walking skeleton through the real stack: gateway, proxy, schedd, workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from dask_gateway.client import ClusterStatus
from distributed import get_worker

from conftest import (
    condor_history_long,
    condor_q_long,
    credentials_jobs,
    nothing_queued,
    queue,
    stack_service,
    wait_for,
    worker_name_of,
)

REPO = Path(__file__).resolve().parent.parent


def running_worker_names(cluster_name: str) -> set[str]:
    ads = queue(cluster_name, ["ClusterId", "ProcId", "GlobalJobId", "JobStatus"])
    return {worker_name_of(ad) for ad in ads if ad["JobStatus"] == 2}


def worker_names(client) -> set[str]:
    return {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}


def where_tasks_ran(client, n: int) -> list[tuple[int, str]]:
    def square_and_where(i: int) -> tuple[int, str]:
        time.sleep(0.05)  # long enough that both workers get tasks
        return i * i, get_worker().name

    return client.gather(client.map(square_and_where, range(n)))


def test_scale_two_workers_tied_to_jobs_and_compute(new_cluster, record_figure):
    cluster = new_cluster()
    started = time.monotonic()
    cluster.scale(2)
    client = cluster.get_client()
    client.wait_for_workers(2, timeout=90)
    record_figure(f"scale(2) -> 2 connected workers: {time.monotonic() - started:.2f} s")

    jobs = wait_for(lambda: running_worker_names(cluster.name), "2 running jobs", 30)
    ads = queue(cluster.name, ["TransferOutput", "WhenToTransferOutput"])
    assert len(ads) == 2
    # The schedd's copy says nothing comes back from the sandbox (no spill
    # files to the spool, no output-catalog pause before the worker starts).
    assert all(ad["TransferOutput"] == "" for ad in ads), ads
    assert {ad["WhenToTransferOutput"] for ad in ads} == {"ON_EXIT"}, ads
    names = worker_names(client)
    assert names == jobs, "each worker is named after its job and schedd"

    def worker_dask_config() -> tuple[str, str]:
        import dask

        get = dask.config.get
        return get("distributed.admin.tick.interval"), get("distributed.worker.profile.interval")

    # gateway.htcondor.worker.dask-config's defaults, through the jobs' environment.
    assert set(client.run(worker_dask_config).values()) == {("200ms", "100ms")}

    results = where_tasks_ran(client, 40)
    assert [r for r, _ in results] == [i * i for i in range(40)]
    assert {w for _, w in results} <= names
    assert len({w for _, w in results}) == 2, "tasks ran on both HTCondor workers"


def test_two_clusters_at_once_each_with_own_jobs_and_certificate(new_cluster):
    first, second = new_cluster(), new_cluster()
    assert first.name != second.name
    assert first.security.tls_cert != second.security.tls_cert
    first.scale(1)
    second.scale(2)
    clients = first.get_client(set_as_default=False), second.get_client(set_as_default=False)
    clients[0].wait_for_workers(1, timeout=90)
    clients[1].wait_for_workers(2, timeout=90)

    for cluster, client, n in ((first, clients[0], 1), (second, clients[1], 2)):
        jobs = wait_for(lambda c=cluster: running_worker_names(c.name), "running jobs", 30)
        assert len(jobs) == n
        assert worker_names(client) == jobs
        results = where_tasks_ran(client, 10)
        assert [r for r, _ in results] == [i * i for i in range(10)]
        assert {w for _, w in results} <= worker_names(client)
    assert not running_worker_names(first.name) & running_worker_names(second.name)


def test_no_secret_in_job_ad_history_logs_environment_arguments_or_temp(new_cluster):
    cluster = new_cluster()
    cluster.scale(1)
    client = cluster.get_client()
    client.wait_for_workers(1, timeout=90)

    long_listing = condor_q_long(cluster.name)
    assert f'HTCDaskGatewayCluster = "{cluster.name}"' in long_listing, "the job is listed"
    assert "BEGIN" not in long_listing
    key_body = cluster.security.tls_key.splitlines()[1]
    assert key_body not in long_listing

    def process_view() -> dict:
        cmdline = Path("/proc/self/cmdline").read_text().replace("\0", " ")
        scratch = Path(os.environ["_CONDOR_SCRATCH_DIR"])
        return {
            "environ": "\n".join(f"{k}={v}" for k, v in os.environ.items()),
            "cmdline": cmdline,
            "key_mode": oct((scratch / "dask.pem").stat().st_mode & 0o777),
        }

    (view,) = client.run(process_view).values()
    assert "BEGIN" not in view["environ"] and key_body not in view["environ"]
    assert "BEGIN" not in view["cmdline"] and key_body not in view["cmdline"]
    assert "--sni daskgateway-" + cluster.name in view["cmdline"]
    assert view["key_mode"] == "0o600"

    leftovers = list(Path(tempfile.gettempdir()).glob("htcdaskgateway-*"))
    assert not leftovers, "credentials staged for the schedd are removed after submit"
    secret_markers = ("BEGIN", key_body)
    assert not files_containing(Path(tempfile.gettempdir()), secret_markers), "temp space"

    (job,) = cluster.worker_jobs()
    cluster.shutdown()
    wait_for(lambda: nothing_queued(cluster.name), "the job to leave the queue", 30)
    history = condor_history_long(cluster.name)
    assert f'HTCDaskGatewayCluster = "{cluster.name}"' in history, "the job is in the history"
    assert not any(marker in history for marker in secret_markers), "condor_history -l"
    event_log = Path("/pool-log/EventLog")
    job_cluster, job_proc = job.job_id.cluster, job.job_id.proc
    event_id = f"({job_cluster:03d}.{job_proc:03d}.000)"
    assert event_id in event_log.read_text(errors="replace"), "the job log has the job's events"
    assert not files_containing(Path("/pool-log"), secret_markers), "the pool's logs"


def in_pool(*command: str, user: str = "root") -> tuple[int, str]:
    """Run a command in the pool's container (where the schedd keeps its spool)."""
    result = stack_service("pool").exec_run(list(command), user=user)
    return result.exit_code, result.output.decode(errors="replace")


def test_credentials_spooled_once_private_to_the_user_and_gone_after_shutdown(new_cluster):
    cluster = new_cluster()
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=90)
    cluster.scale(3)  # a second submission uses the same credentials job
    cluster.wait_for_workers(3, timeout=90)

    (carrier,) = credentials_jobs(cluster.name, ["ClusterId", "JobStatus", "Iwd", "Requirements"])
    assert carrier["JobStatus"] == 1, "spooled, idle, never to run"
    assert str(carrier["Requirements"]).lower().startswith("(false) &&")
    spool = carrier["Iwd"]
    workers = queue(cluster.name, ["ClusterId", "Iwd", "TransferInput", "JobStatus"])
    assert len(workers) == 3 and {ad["JobStatus"] for ad in workers} == {2}
    assert {ad["ClusterId"] for ad in workers} != {carrier["ClusterId"]}
    for ad in workers:
        # Not spooled: nothing of theirs in the spool, the files named from the carrier's.
        assert ad["Iwd"] == "/"
        assert ad["TransferInput"] == f"{spool}/dask.crt,{spool}/dask.pem"

    code, listing = in_pool(
        "stat", "-c", "%U %a %n", spool, f"{spool}/dask.crt", f"{spool}/dask.pem"
    )
    assert code == 0, listing
    assert listing.split("\n")[:3] == [
        f"alice 700 {spool}",
        f"alice 600 {spool}/dask.crt",
        f"alice 600 {spool}/dask.pem",
    ]
    code, key = in_pool("cat", f"{spool}/dask.pem", user="alice")
    assert code == 0 and key == cluster.security.tls_key, "the spooled key is the cluster's"
    code, refused = in_pool("cat", f"{spool}/dask.pem", user="bob")
    assert code != 0 and "Permission denied" in refused, "another user cannot read it"

    cluster.shutdown()
    wait_for(lambda: nothing_queued(cluster.name), "every job of the cluster to leave", 30)
    code, gone = in_pool("ls", spool)
    assert code != 0 and "No such file" in gone, "the schedd deleted the spooled credentials"


def files_containing(root: Path, markers: tuple[str, ...]) -> list[Path]:
    """Files under ``root`` this user can read that contain any of ``markers``."""
    found = []
    for path in root.rglob("*"):
        try:
            text = path.read_text(errors="replace") if path.is_file() else ""
        except OSError:
            continue
        if any(marker in text for marker in markers):
            found.append(path)
    return found


def test_shutdown_stops_scheduler_and_removes_jobs(gateway, new_cluster):
    cluster = new_cluster()
    name = cluster.name
    cluster.scale(2)
    wait_for(lambda: len(running_worker_names(name)) == 2, "2 running jobs", 60)

    cluster.shutdown()
    wait_for(lambda: nothing_queued(name), "the cluster's jobs to leave the queue", 30)
    wait_for(
        lambda: gateway.get_cluster(name).status is ClusterStatus.STOPPED,
        "the gateway to report the cluster stopped",
        30,
    )
    assert name not in {c.name for c in gateway.list_clusters()}


@pytest.mark.parametrize("n", [-1, "3", 2.5, None])
def test_bad_scale_arguments_fail_clearly_and_submit_nothing(new_cluster, n):
    cluster = new_cluster()
    with pytest.raises((TypeError, ValueError), match="scale"):
        cluster.scale(n)
    time.sleep(1)
    assert queue(cluster.name) == []


def test_seed_usage_runs_as_written():
    done = subprocess.run(
        [sys.executable, str(REPO / "integration" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 workers connected" in done.stdout
    assert "cluster shut down" in done.stdout
    name = done.stdout.split()[1]  # "cluster <name> started"
    wait_for(lambda: nothing_queued(name), f"the demo's jobs ({name}) to leave the queue", 30)


def test_settings_that_would_harm_are_refused_before_anything_is_submitted(gateway, new_cluster):
    from htcdaskgateway import HTCGateway, SettingError

    cluster = new_cluster(htcondor={"max-jobs": 2})
    with pytest.raises(SettingError, match="max-jobs allows 2"):
        cluster.scale(3)
    with pytest.raises(SettingError, match=r"extra-directives\.getenv may not be set"):
        HTCGateway(htcondor={"submit": {"extra-directives": {"getenv": "true"}}})
    # Attributes are applied last: MY.Requirements would have let the
    # credentials job run, MY.PeriodicRemove dropped the lease.
    for directive in ("MY.Requirements", "+periodicremove"):
        with pytest.raises(SettingError, match=rf"extra-directives\.{re.escape(directive)} may"):
            gateway.new_cluster(htcondor={"submit": {"extra-directives": {directive: "true"}}})
    with pytest.raises(SettingError, match=r"attributes\.Cmd may not be set"):
        gateway.new_cluster(htcondor={"submit": {"attributes": {"Cmd": '"/bin/sh"'}}})
    with pytest.raises(SettingError, match=r"extra-directives\.\+HTCDaskGatewayCluster"):
        gateway.new_cluster(
            htcondor={"submit": {"extra-directives": {"+HTCDaskGatewayCluster": '"x"'}}}
        )
    with pytest.raises(SettingError, match=r"worker\.memory"):
        gateway.new_cluster(htcondor={"worker": {"memory": float("nan")}})
    with pytest.raises(SettingError, match="cluster name"):
        gateway.connect(cluster.name + "\n")
    assert not queue(cluster.name), "something was submitted"
