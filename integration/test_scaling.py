"""Scaling on HTCondor: retire before remove, lost jobs replaced, adapt()."""

from __future__ import annotations

import time

import htcondor2
from distributed import get_worker

from conftest import credentials_jobs, queue, wait_for

FAST_WATCH = {"watch-interval": 1}


def active_job_ids(name: str) -> set[str]:
    ads = queue(name, ["ClusterId", "ProcId", "JobStatus"])
    return {f"{ad['ClusterId']}.{ad['ProcId']}" for ad in ads if ad["JobStatus"] in (1, 2, 5)}


def jobs_if_at_least(name: str, n: int) -> int:
    count = len(active_job_ids(name))
    return count if count >= n else 0


def remove_behind_the_clients_back(job_id: str) -> None:
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    schedd.act(htcondor2.JobAction.Remove, [job_id], "test: condor_rm behind the client")


def _single_successor(cluster_name: str, first: str, what: str) -> str:
    """The one active job of the cluster once ``first`` has been replaced."""

    def successor() -> str | None:
        ids = active_job_ids(cluster_name)
        return next(iter(ids)) if len(ids) == 1 and first not in ids else None

    return wait_for(successor, what, 60)


def test_scale_down_retires_workers_so_their_data_survives(new_cluster):
    cluster = new_cluster()
    cluster.scale(3)
    client = cluster.get_client()
    cluster.wait_for_workers(3, timeout=90)
    # Scattered data cannot be recomputed: it survives only if the scheduler
    # moved it off the removed workers before their jobs went.
    data = client.scatter(list(range(60)))
    holders = {addr for addrs in client.who_has(data).values() for addr in addrs}
    assert len(holders) == 3, "the data is spread over all three workers"

    cluster.scale(1)
    wait_for(lambda: len(active_job_ids(cluster.name)) == 1, "scale(1) to leave one job", 60)
    wait_for(
        lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == 1, "one worker left", 30
    )
    assert client.gather(data) == list(range(60))


def test_job_removed_behind_the_clients_back_is_replaced(new_cluster, record_figure):
    cluster = new_cluster(htcondor=FAST_WATCH)
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=90)
    before = active_job_ids(cluster.name)
    lost = sorted(before)[0]

    remove_behind_the_clients_back(lost)
    started = time.monotonic()

    def replaced() -> set[str] | None:
        ids = active_job_ids(cluster.name)
        return ids if len(ids) == 2 and lost not in ids else None

    after = wait_for(
        replaced,
        "a new job to replace the removed one",
        60,
    )
    record_figure(f"condor_rm'd job replaced under scale(2) in {time.monotonic() - started:.1f} s")
    assert len(after - before) == 1
    cluster.wait_for_workers(2, timeout=90)
    client = cluster.get_client()
    assert client.submit(sum, [1, 2]).result() == 3


def test_a_job_whose_credentials_job_left_before_it_started_is_replaced(new_cluster, record_figure):
    # Reproduction (CI): a schedd frozen past the lease removed the idle
    # credentials job on thawing, just after a new worker job had named its
    # spool; the job was held for files that never came back, and
    # wait_for_workers gave up. Here the worker jobs wait for a go-ahead
    # (an attribute the test sets), so the credentials job can be removed
    # between a job's submission and its start, every time.
    gated = {"submit": {"requirements": "MY.TestGo =?= true"}, **FAST_WATCH}
    cluster = new_cluster(htcondor=gated)
    cluster.scale(1)
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    (first,) = wait_for(lambda: active_job_ids(cluster.name), "the worker job to be queued", 30)
    (carrier,) = credentials_jobs(cluster.name, ["ClusterId", "ProcId", "Iwd"])
    schedd.act(
        htcondor2.JobAction.Remove,
        [f"{carrier['ClusterId']}.{carrier['ProcId']}"],
        ("test: the credentials job leaves before its worker job starts", None),
    )
    started = time.monotonic()
    schedd.edit([first], "TestGo", "true")

    second = _single_successor(cluster.name, first, "the held job to be replaced")
    record_figure(
        f"job held for a removed credentials job replaced in {time.monotonic() - started:.1f} s"
    )
    (new_carrier,) = wait_for(
        lambda: credentials_jobs(cluster.name, ["Iwd"]), "a new credentials job", 30
    )
    assert new_carrier["Iwd"] != carrier["Iwd"]
    (ad,) = queue(cluster.name, ["TransferInput"])
    assert ad["TransferInput"].startswith(f"{new_carrier['Iwd']}/"), "named the new spool"
    (removed,) = wait_for(
        lambda: schedd.history(
            f"ClusterId == {first.split('.')[0]}",
            projection=["RemoveReason", "LastHoldReasonCode"],
            match=1,
        ),
        "the held job's history record",
        30,
    )
    assert removed["LastHoldReasonCode"] == 13, "it was held for its input"
    assert "credentials job left the queue" in removed.get("RemoveReason", ""), removed

    schedd.edit([second], "TestGo", "true")
    cluster.wait_for_workers(1, timeout=60)
    assert cluster.get_client().submit(sum, [1, 2]).result() == 3


def test_adapt_follows_the_load_and_keeps_its_minimum(new_cluster, record_figure):
    cluster = new_cluster(htcondor=FAST_WATCH)
    client = cluster.get_client()
    cluster.adapt(minimum=0, maximum=4, interval="1s", wait_count=3)
    time.sleep(3)
    assert not active_job_ids(cluster.name), "no load, no jobs"

    def slow_square(i: int) -> tuple[int, str]:
        time.sleep(0.5)
        return i * i, get_worker().name

    started = time.monotonic()
    futures = client.map(slow_square, range(80))
    peak = wait_for(
        lambda: jobs_if_at_least(cluster.name, 2),
        "the burst to bring workers",
        60,
    )
    results = client.gather(futures)
    busy = time.monotonic() - started
    assert [r for r, _ in results] == [i * i for i in range(80)], "no task lost"
    assert len({name for _, name in results}) >= 2, "more than one worker took part"
    assert max(peak, *[len(active_job_ids(cluster.name))]) <= 4, "maximum respected"
    del futures

    idle_since = time.monotonic()
    wait_for(lambda: not active_job_ids(cluster.name), "idle time to take the workers away", 90)
    record_figure(
        f"adapt(0, 4): 80 x 0.5 s tasks done in {busy:.1f} s; "
        f"all jobs gone {time.monotonic() - idle_since:.1f} s after the burst"
    )

    # A minimum is held like a scale() target: a lost job is replaced.
    cluster.adapt(minimum=1, maximum=4, interval="1s")
    (only,) = wait_for(lambda: active_job_ids(cluster.name), "the minimum of one job", 60)
    remove_behind_the_clients_back(only)
    wait_for(
        lambda: (ids := active_job_ids(cluster.name)) and only not in ids,
        "adapt to replace the removed job",
        60,
    )
    assert client.submit(sum, [2, 3]).result() == 5


def test_worker_lifetime_ends_the_job_and_the_target_replaces_it(new_cluster, record_figure):
    cluster = new_cluster(htcondor={"watch-interval": 1, "worker": {"lifetime": 8}})
    cluster.scale(1)
    cluster.wait_for_workers(1, timeout=90)
    (first,) = active_job_ids(cluster.name)
    started = time.monotonic()

    second = _single_successor(
        cluster.name, first, "the retired worker's job to end and be replaced"
    )
    record_figure(
        f"worker lifetime 8 s: job {first} ended and {second} replaced it "
        f"{time.monotonic() - started:.1f} s after the worker joined"
    )
    client = cluster.get_client()
    cluster.wait_for_workers(1, timeout=90)
    assert client.submit(sum, [4, 5]).result() == 9
