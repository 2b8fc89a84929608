"""The credentials job: spooled once per cluster, found again, replaced when gone,
never another user's, removed with the cluster's jobs."""

from __future__ import annotations

import asyncio

from htcdaskgateway.credentials_job import CredentialsSpool
from htcdaskgateway.jobs import JobSelector, JobStatus
from htcdaskgateway.naming import CREDENTIALS_ROLE, ROLE_ATTRIBUTE
from htcdaskgateway.settings import HTCondorSettings
from htcdaskgateway.submit import credentials_job_description, worker_job_description

from .conftest import make_credentials
from .fakes import ALICE, BOB, FakeSchedd

CLUSTER = "dask-gateway.abc123"
GATEWAY = "http://gateway.test:8000"
SETTINGS = HTCondorSettings.from_config()


def make(schedd: FakeSchedd) -> CredentialsSpool:
    async def selector() -> JobSelector:
        return JobSelector(await schedd.owner(), GATEWAY, CLUSTER, gateway_user="alice")

    def describe(files):
        # The files exist (0600) while the submit runs; the description names them.
        assert all(path.stat().st_mode & 0o777 == 0o600 for path in files)
        return credentials_job_description(
            SETTINGS, CLUSTER, files, user="alice", gateway_id=GATEWAY, lease=60
        )

    job = CredentialsSpool(schedd, selector, describe)
    job.tls = make_credentials()
    return job


def test_prepared_once_then_found_in_the_queue():
    schedd = FakeSchedd()
    credentials = make(schedd)

    async def scenario():
        credentials.prepare()
        credentials.prepare()  # already on its way
        first = await credentials.directory()
        second = await credentials.directory()
        return first, second

    first, second = asyncio.run(scenario())
    assert first == second == "/spool/1.0"
    assert schedd.submits == [1], "one credentials job for the cluster"
    (description,) = schedd.descriptions
    assert description["requirements"] == "false"
    assert "BEGIN" not in repr(description), "the description names files, not their contents"


def test_workers_name_its_spool_and_are_not_spooled():
    schedd = FakeSchedd()
    credentials = make(schedd)

    async def scenario():
        directory = await credentials.directory()
        description = worker_job_description(
            SETTINGS, CLUSTER, "tls://proxy:8786", directory, user="alice", gateway_id=GATEWAY
        )
        return await schedd.submit(description, 2)

    workers = asyncio.run(scenario())
    assert [schedd.queue[j].ad["Iwd"] for j in workers] == ["/", "/"]
    assert schedd.descriptions[1]["transfer_input_files"] == (
        "/spool/1.0/dask.crt,/spool/1.0/dask.pem"
    )


def test_its_own_job_is_used_at_once_while_on_its_spooling_hold():
    # The files are in the spool when the spool call returns; the schedd's
    # hold lasts a second more. Another client's job on that hold may still
    # be receiving its files: it is not used.
    schedd = FakeSchedd(spool_hold_looks=10**6)
    first, second = make(schedd), make(schedd)
    assert asyncio.run(first.directory()) == "/spool/1.0"
    assert asyncio.run(first.directory()) == "/spool/1.0"
    assert schedd.queue[next(iter(schedd.queue))].status is JobStatus.HELD
    assert asyncio.run(second.directory()) == "/spool/2.0"
    schedd.set_status(next(iter(schedd.queue)), JobStatus.IDLE)
    assert asyncio.run(make(schedd).directory()) == "/spool/1.0", "spooled: anyone's to use"


def test_removed_behind_the_clients_back_is_replaced():
    schedd = FakeSchedd()
    credentials = make(schedd)
    assert asyncio.run(credentials.directory()) == "/spool/1.0"
    asyncio.run(schedd.remove(["1.0"], "condor_rm by hand"))
    assert asyncio.run(credentials.directory()) == "/spool/2.0"


def test_another_users_credentials_job_for_the_same_cluster_is_never_used():
    schedd = FakeSchedd()
    schedd.add_foreign(
        BOB, CLUSTER, JobStatus.IDLE,
        **{ROLE_ATTRIBUTE: f'"{CREDENTIALS_ROLE}"', "HTCDaskGatewayGateway": f'"{GATEWAY}"'},
    )  # fmt: skip
    schedd.queue[next(iter(schedd.queue))].ad["Iwd"] = "/spool/bobs"
    assert asyncio.run(make(schedd).directory()) == "/spool/2.0"
    assert schedd.identity == ALICE


def test_removed_with_the_clusters_jobs_but_not_counted_as_a_worker():
    schedd = FakeSchedd()
    credentials = make(schedd)
    selector = JobSelector(ALICE, GATEWAY, CLUSTER, gateway_user="alice")

    async def scenario():
        directory = await credentials.directory()
        await schedd.submit(
            worker_job_description(SETTINGS, CLUSTER, "tls://p:1", directory, "alice", GATEWAY), 2
        )
        workers = await schedd.jobs(selector.constraint())
        removed = await schedd.remove(selector.every_job_constraint(), "shut down")
        return workers, removed

    workers, removed = asyncio.run(scenario())
    assert [str(job.job_id) for job in workers] == ["2.0", "2.1"]
    assert removed == 3
    assert not schedd.queue


def test_settle_waits_for_a_prepared_job_so_removal_finds_it():
    schedd = FakeSchedd()
    credentials = make(schedd)
    selector = JobSelector(ALICE, GATEWAY, CLUSTER, gateway_user="alice")

    async def scenario():
        credentials.prepare()
        await credentials.settle()
        return await schedd.remove(selector.every_job_constraint(), "start failed")

    assert asyncio.run(scenario()) == 1
    assert not schedd.queue
