"""A cluster whose jobs are spread over the pool's two schedds.

The test pool runs a second schedd (images/worker/pool); the other tests
leave it out with a schedd-constraint, these use both. One schedd is
stopped mid-run: new jobs go to the other, and the job table, a second
client and shutdown() still cover every job on both.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import htcondor2
import pytest

from conftest import CLUSTER_ATTRIBUTE, plain_gateway, stack_service, wait_for
from htcdaskgateway import HTCGateway

BOTH_SCHEDDS = {"schedd": None, "schedd-constraint": "true", "watch-interval": 1}


def jobs_by_schedd(cluster_name: str) -> dict[str, list]:
    """Every job of the cluster (workers and credentials) on each schedd that answers."""
    constraint = f'{CLUSTER_ATTRIBUTE} == "{cluster_name}"'
    projection = ["ClusterId", "ProcId", "JobStatus", "HTCDaskGatewayRole"]
    found = {}
    for location in htcondor2.Collector().locateAll(htcondor2.DaemonType.Schedd):
        schedd = htcondor2.Schedd(location)
        try:
            found[location["Name"]] = schedd.query(constraint, projection=projection)
        except htcondor2.HTCondorException:
            # A restarted schedd rejects the security session cached for the
            # one before it once; the second try makes a new one.
            found[location["Name"]] = schedd.query(constraint, projection=projection)
    return found


def schedd_daemon(name: str) -> str:
    """The pool master's name for the schedd daemon called ``name``."""
    return "SCHEDD2" if name.startswith("schedd2@") else "SCHEDD"


def master(command: str, name: str) -> None:
    result = stack_service("pool").exec_run([command, "-daemon", schedd_daemon(name)])
    assert result.exit_code == 0, result.output.decode()


def schedd_listed(name: str) -> bool:
    ads = htcondor2.Collector().query(htcondor2.AdType.Schedd, projection=["Name"])
    return name in {ad["Name"] for ad in ads}


@pytest.fixture
def both_schedds_up():
    names = [ad["Name"] for ad in htcondor2.Collector().query(htcondor2.AdType.Schedd)]
    assert len(names) == 2, names
    yield names
    for name in names:  # whatever happened, both run again for the next test
        if not schedd_listed(name):
            master("condor_on", name)
            wait_for(lambda n=name: schedd_listed(n), f"schedd {name} back", 60)


def test_one_schedd_stopped_mid_run_new_jobs_go_to_the_other_and_all_are_covered(
    new_cluster, both_schedds_up, record_figure
):
    cluster = new_cluster(htcondor=BOTH_SCHEDDS)
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=90)
    (first,) = {job.job_id.schedd for job in cluster.worker_jobs()}
    (other,) = set(both_schedds_up) - {first}

    master("condor_off", first)
    wait_for(lambda: not schedd_listed(first), f"schedd {first} to stop", 60)
    stopped = time.monotonic()
    try:
        cluster.scale(4)
        # The stopped schedd's two jobs are kept as last seen (not replaced
        # twice); the two new ones go to the schedd that answers.
        wait_for(
            lambda: (
                sum(
                    ad["JobStatus"] == 2 and "HTCDaskGatewayRole" not in ad
                    for ad in jobs_by_schedd(cluster.name).get(other, [])
                )
                == 2
            ),
            f"2 new worker jobs running on {other}",
            90,
        )
        record_figure(
            f"schedd stopped: 2 new jobs running on the other "
            f"{time.monotonic() - stopped:.1f} s later"
        )
        rows = cluster.job_table()
        assert len(rows) == 4, rows
        assert sum("not answering" in row["status"] for row in rows) == 2, rows
        assert {row["job"].split("@", 1)[1] for row in rows} == {first, other}
        client = cluster.get_client()
        assert client.submit(sum, [1, 2, 3]).result() == 6
    finally:
        master("condor_on", first)
    wait_for(lambda: schedd_listed(first), f"schedd {first} back", 60)

    # Back: its jobs count again, on both schedds; a second client sees them all.
    cluster.wait_for_workers(4, timeout=180)
    wait_for(lambda: len(cluster.worker_jobs()) == 4, "4 jobs in the table", 60)
    with HTCGateway(htcondor=BOTH_SCHEDDS) as gateway:
        with gateway.connect(cluster.name) as second:
            seen = second.worker_jobs()
        listed = {report.name: report for report in gateway.list_clusters()}
    assert {job.job_id.schedd for job in seen} == {first, other}
    assert len(seen) == 4
    assert sum(listed[cluster.name].jobs.values()) == 4

    cluster.shutdown()
    wait_for(
        lambda: not any(jobs_by_schedd(cluster.name).values()),
        "every job, workers and credentials, to leave both schedds",
        60,
    )


def spread_over_both(settings: dict) -> subprocess.Popen:
    """A client whose cluster's idle jobs are on both schedds; it reports the name, then waits.

    Each scale() step is one submission to a schedd picked at random
    (equal load here): 12 steps leave both unused with odds of 1 in 2048.
    """
    owned = settings.get("lease", 0) > 0
    code = f"""
        import time
        from htcdaskgateway import HTCGateway
        gateway = HTCGateway(htcondor={settings!r})
        cluster = gateway.new_cluster(shutdown_on_close={owned})
        for n in range(1, 13):
            cluster.scale(n)
            if len({{job.job_id.schedd for job in cluster.worker_jobs()}}) == 2:
                break
        print(cluster.name, flush=True)
        time.sleep(600)
    """
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def killed_once_spread(client: subprocess.Popen) -> str:
    name = client.stdout.readline().strip()
    assert name, client.stderr.read()
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    on = {schedd for schedd, ads in jobs_by_schedd(name).items() if ads}
    assert len(on) == 2, f"the cluster's jobs are on {on} only"
    return name


NEVER_STARTS = {"submit": {"requirements": "False"}}


def test_a_killed_owners_jobs_leave_both_schedds_with_its_lease(both_schedds_up, record_figure):
    killed = spread_over_both({**BOTH_SCHEDDS, **NEVER_STARTS, "lease": 10})
    name = killed_once_spread(killed)
    started = time.monotonic()
    wait_for(
        lambda: not any(jobs_by_schedd(name).values()),
        "every idle and credentials job of the killed owner to leave both schedds",
        10 + 30,
    )
    record_figure(
        f"killed owner's idle jobs on 2 schedds gone {time.monotonic() - started:.1f} s "
        "after SIGKILL (lease 10 s)"
    )


def test_cleanup_removes_an_orphans_jobs_from_both_schedds(both_schedds_up):
    killed = spread_over_both({**BOTH_SCHEDDS, **NEVER_STARTS, "lease": 0})
    name = killed_once_spread(killed)
    with plain_gateway() as plain:
        plain.stop_cluster(name)  # the gateway forgets it, HTCondor is not told
    with HTCGateway(htcondor=BOTH_SCHEDDS) as gateway:
        time.sleep(2)
        assert all(jobs_by_schedd(name).values()), "nothing removed them yet"
        removed = gateway.remove_orphaned_jobs()
    assert removed[name] >= 4, removed  # 2+ workers and a credentials job on each schedd
    wait_for(lambda: not any(jobs_by_schedd(name).values()), "cleanup to empty both", 15)
