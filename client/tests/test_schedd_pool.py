"""Several schedds as one: where jobs go, and every other call across all of them."""

from __future__ import annotations

import asyncio
import random

import pytest

from htcdaskgateway.errors import ScheddUnavailableError, SubmitError
from htcdaskgateway.jobs import JobId, JobSelector, JobStatus
from htcdaskgateway.naming import LEASE_ATTRIBUTE
from htcdaskgateway.schedd_pool import MIN_WEIGHT, ScheddPool, schedd_weight
from htcdaskgateway.settings import HTCondorSettings
from htcdaskgateway.submit import worker_job_description

from .fakes import ALICE, FakeSchedd

CLUSTER = "dask-gateway.abc123"
GATEWAY = "http://gateway.test:8000"
SELECTOR = JobSelector(ALICE, GATEWAY, CLUSTER, gateway_user="alice")
IDLE_AD = {"RecentDaemonCoreDutyCycle": 0.0, "ShadowsRunning": 0, "MaxJobsRunning": 100}
BUSY_AD = {"RecentDaemonCoreDutyCycle": 0.95, "ShadowsRunning": 90, "MaxJobsRunning": 100}


def make(ads: dict[str, dict], seed: int = 1, names=None):
    schedds = {name: FakeSchedd(name=name) for name in ads}
    listed = []

    async def list_schedds(constraint: str) -> list[dict]:
        listed.append(constraint)
        return [{"Name": name, **ad} for name, ad in ads.items()]

    pool = ScheddPool(
        None, names, None, 5.0, connect=schedds.__getitem__, list_schedds=list_schedds,
        rng=random.Random(seed),
    )  # fmt: skip
    return pool, schedds, listed


async def describe(member) -> dict[str, str]:
    return worker_job_description(
        HTCondorSettings.from_config(), CLUSTER, "tls://p:1", "/spool", "alice", GATEWAY,
        lease=60, schedd=member.name,
    )  # fmt: skip


def test_weight_follows_load():
    assert schedd_weight(IDLE_AD) == 1.0
    assert MIN_WEIGHT <= schedd_weight(BUSY_AD) < 0.3
    assert schedd_weight({}) == 1.0, "an ad without load figures counts as free"


def test_submissions_favour_the_schedd_with_room():
    pool, schedds, listed = make({"idle@pool": IDLE_AD, "busy@pool": BUSY_AD})

    async def scenario():
        for _ in range(200):
            await pool.submit(describe, 1)

    asyncio.run(scenario())
    idle, busy = len(schedds["idle@pool"].queue), len(schedds["busy@pool"].queue)
    assert idle + busy == 200
    assert idle > 3 * busy > 0, (idle, busy)
    assert len(listed) == 1, "the collector's list is reused"


def test_job_ids_and_worker_names_name_their_schedd():
    pool, schedds, _ = make({"s1@pool": IDLE_AD})
    (job_id,) = asyncio.run(pool.submit(describe, 1))
    assert job_id == "1.0@s1@pool" and job_id.schedd == "s1@pool" and job_id.local == "1.0"
    (description,) = schedds["s1@pool"].descriptions
    assert "--name htc-$(ClusterId).$(ProcId)@s1@pool" in description["arguments"]
    assert JobId("7.3@schedd2@host").sort_key == ("schedd2@host", 7, 3)


@pytest.mark.parametrize("failure", ["unavailable", "refuses"])
def test_a_schedd_that_fails_is_passed_over_and_the_next_takes_the_jobs(failure):
    pool, schedds, _ = make({"s1@pool": IDLE_AD, "s2@pool": IDLE_AD}, seed=3)
    order = asyncio.run(pool.submit_order())
    first, second = (schedds[m.name] for m in order)
    if failure == "unavailable":
        first.unavailable = True
    else:
        first.refuse_submits = 5
    job_ids = asyncio.run(pool.submit(describe, 2))
    assert {j.schedd for j in job_ids} == {second.name}
    # Cooled down: the next submissions go to the other one first.
    assert [m.name for m in asyncio.run(pool.submit_order())] == [second.name, first.name]


def test_no_schedd_takes_the_jobs_is_an_error():
    pool, schedds, _ = make({"s1@pool": IDLE_AD, "s2@pool": IDLE_AD})
    for schedd in schedds.values():
        schedd.refuse_submits = 1
    with pytest.raises(SubmitError, match="fake refusal"):
        asyncio.run(pool.submit(describe, 1))


def test_queries_leases_and_removals_cover_every_schedd():
    pool, schedds, _ = make({"s1@pool": IDLE_AD, "s2@pool": IDLE_AD})
    s1, s2 = schedds.values()

    async def scenario():
        await s1.submit(await describe(s1), 2)
        await s2.submit(await describe(s2), 1)
        seen = await pool.jobs(SELECTOR.constraint())
        await pool.renew_lease(SELECTOR.every_job_constraint(), 60)
        leases = [j.ad.eval(LEASE_ATTRIBUTE) for s in (s1, s2) for j in s.queue.values()]
        by_id = await pool.remove([seen[0].job_id, seen[2].job_id], "scaled down")
        by_constraint = await pool.remove(SELECTOR.every_job_constraint(), "shut down")
        return seen, leases, by_id, by_constraint

    seen, leases, by_id, by_constraint = asyncio.run(scenario())
    assert [str(j.job_id) for j in seen] == ["1.0@s1@pool", "1.1@s1@pool", "1.0@s2@pool"]
    assert all(isinstance(lease, int) for lease in leases) and len(leases) == 3
    assert (by_id, by_constraint) == (2, 1)
    assert not s1.queue and not s2.queue


def test_an_unreachable_schedds_jobs_are_kept_as_last_seen():
    # Not seen is not gone: a reconciler must neither replace them nor
    # count them twice when the schedd answers again.
    pool, schedds, _ = make({"s1@pool": IDLE_AD, "s2@pool": IDLE_AD})
    s1, s2 = schedds.values()

    async def scenario():
        await s1.submit(await describe(s1), 1)
        await s2.submit(await describe(s2), 2)
        await pool.jobs(SELECTOR.constraint())
        s2.set_status(JobId("1.0@s2@pool"), JobStatus.RUNNING)
        s2.unavailable = True
        stale = await pool.jobs(SELECTOR.constraint())
        unreachable = dict(pool.unreachable)
        s2.unavailable = False
        fresh = await pool.jobs(SELECTOR.constraint())
        return stale, unreachable, fresh

    stale, unreachable, fresh = asyncio.run(scenario())
    assert [str(j.job_id) for j in stale] == ["1.0@s1@pool", "1.0@s2@pool", "1.1@s2@pool"]
    assert stale[1].status is JobStatus.IDLE, "as last seen"
    assert list(unreachable) == ["s2@pool"]
    assert fresh[1].status is JobStatus.RUNNING and not pool.unreachable


def test_every_schedd_unreachable_is_an_error_and_removal_reports_a_partial_one():
    pool, schedds, _ = make({"s1@pool": IDLE_AD, "s2@pool": IDLE_AD})
    s1, s2 = schedds.values()
    asyncio.run(s1.submit(asyncio.run(describe(s1)), 1))
    s2.unavailable = True
    with pytest.raises(ScheddUnavailableError, match="Not every schedd removed"):
        asyncio.run(pool.remove(SELECTOR.every_job_constraint(), "shut down"))
    assert not s1.queue, "the schedd that answered removed its share"
    s1.unavailable = True
    with pytest.raises(ScheddUnavailableError, match="No schedd could"):
        asyncio.run(pool.jobs(SELECTOR.constraint()))


def test_configured_names_narrow_the_collectors_list():
    pool, _, listed = make({"s1@pool": IDLE_AD}, names=("s1@pool",))
    asyncio.run(pool.members())
    assert listed == ['(true) && (Name == "s1@pool")']
