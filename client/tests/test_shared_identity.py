"""Hub users who share one HTCondor identity (one submit token for the hub,
or every notebook as the same Unix user): the schedd's ``User`` is the same
for all of them, so only the gateway user tells their jobs apart."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from dask_gateway.auth import BasicAuth, JupyterHubAuth

from htcdaskgateway import HTCGateway
from htcdaskgateway.cluster import HTCGatewayCluster
from htcdaskgateway.jobs import JobId, JobSelector, JobTracker
from htcdaskgateway.settings import HTCondorSettings
from htcdaskgateway.submit import credentials_job_description, worker_job_description

from .fakes import ALICE, FakeSchedd

GATEWAY = "gateway-under-test"
SETTINGS = HTCondorSettings.from_config({"gateway-id": GATEWAY})
ALICES_LIVE = "dask-gateway.alice1"
ALICES_DEAD = "dask-gateway.alice0"
BOBS_LIVE = "dask-gateway.bob1"


def queue_cluster(schedd: FakeSchedd, cluster: str, user: str, workers: int) -> list[JobId]:
    """A cluster's credentials job and worker jobs, as its client submits them."""
    credentials = credentials_job_description(
        SETTINGS, cluster, [], user=user, gateway_id=GATEWAY, lease=60
    )
    worker = worker_job_description(
        SETTINGS, cluster, "tls://scheduler.invalid:8786", "/spool", user=user,
        gateway_id=GATEWAY, lease=60,
    )  # fmt: skip
    return schedd.add(credentials, 1, schedd.identity) + schedd.add(
        worker, workers, schedd.identity
    )


def gateway_of(user: str, schedd: FakeSchedd, live: list[str]) -> HTCGateway:
    """``user``'s gateway object: the gateway lists only that user's clusters."""
    gateway = object.__new__(HTCGateway)
    gateway._asynchronous = True  # nothing to close at garbage collection
    gateway.htcondor_settings = SETTINGS
    gateway.schedd = schedd
    gateway.address = None
    gateway.auth = BasicAuth(username=user, password="unused")

    async def clusters(status: object = None) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=name) for name in live]

    gateway._clusters = clusters
    return gateway


def test_cleanup_leaves_the_live_cluster_of_another_gateway_user_with_the_same_identity():
    schedd = FakeSchedd(identity=ALICE)  # the hub's one HTCondor identity
    queue_cluster(schedd, ALICES_LIVE, "alice", 1)
    orphans = queue_cluster(schedd, ALICES_DEAD, "alice", 2)
    bobs = queue_cluster(schedd, BOBS_LIVE, "bob", 2)

    removed = asyncio.run(gateway_of("alice", schedd, [ALICES_LIVE])._remove_orphaned_jobs())

    assert removed == {ALICES_DEAD: 3}, "alice's cleanup judged bob's live cluster orphaned"
    assert all(job in schedd.queue for job in bobs)
    assert not any(job in schedd.queue for job in orphans)


def test_a_tracker_and_a_removal_see_only_their_gateway_users_jobs():
    # Cluster names are public in the queue; bob tags a job with alice's.
    schedd = FakeSchedd(identity=ALICE)
    alices = queue_cluster(schedd, ALICES_LIVE, "alice", 2)
    bobs = queue_cluster(schedd, ALICES_LIVE, "bob", 1)
    tracker = JobTracker(schedd, GATEWAY, ALICES_LIVE, user="alice")

    async def body() -> None:
        assert {job.job_id for job in await tracker.refresh()} == set(alices[1:])
        selector = await tracker.selector()
        assert await schedd.remove(selector.every_job_constraint(), "shutdown") == 3

    asyncio.run(body())
    assert all(job in schedd.queue for job in bobs)


def test_every_constraint_names_the_gateway_user_as_a_classad_string():
    selector = JobSelector(ALICE, GATEWAY, ALICES_LIVE, gateway_user='ev"il')
    for constraint in (
        selector.constraint(),
        selector.credentials_constraint(),
        selector.every_job_constraint(),
        selector.for_cluster(BOBS_LIVE).every_job_constraint(),
    ):
        assert 'HTCDaskGatewayUser == "ev\\"il"' in constraint
    assert selector.for_cluster(BOBS_LIVE).gateway_user == 'ev"il'


@pytest.mark.parametrize(
    ("auth", "hub_user"),
    [
        (BasicAuth(username="alice", password="x"), None),
        (JupyterHubAuth(api_token="x"), "bob"),
        (JupyterHubAuth(api_token="x"), None),
    ],
)
def test_the_gateway_selects_the_user_its_clusters_mark_their_jobs_with(
    monkeypatch, auth, hub_user
):
    if hub_user is None:
        monkeypatch.delenv("JUPYTERHUB_USER", raising=False)
    else:
        monkeypatch.setenv("JUPYTERHUB_USER", hub_user)
    gateway = gateway_of("unused", FakeSchedd(), [])
    gateway.auth = auth
    marked = HTCGatewayCluster.user.fget(SimpleNamespace(gateway=gateway))
    assert gateway.user == marked
    selector = asyncio.run(gateway._jobs_selector())
    assert selector.gateway_user == marked
