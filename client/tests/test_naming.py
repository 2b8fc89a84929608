"""Worker names: only ``htc-<job id>`` is one of ours; anything else is a stray."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from htcdaskgateway.jobs import JobId
from htcdaskgateway.naming import is_htcondor_worker, job_id_of_worker, worker_name
from htcdaskgateway.scheduler_link import SchedulerLink
from htcdaskgateway.scheduler_plugin import KeepHTCondorWorkers

STRAYS = ["htc-debug", "htc-", "htc-12", "htc-1.2.3", "htc-1.0@", "htc-1.0@a b", "htc-.0", "pod-1"]


@pytest.mark.parametrize("job_id", ["12.0", "3.41@schedd.pool.test", "7.1@alice@submit.pool.test"])
def test_a_workers_name_gives_back_its_job_id(job_id):
    name = worker_name(job_id)
    assert is_htcondor_worker(name)
    assert job_id_of_worker(name) == job_id
    assert JobId(job_id_of_worker(name)) == job_id


@pytest.mark.parametrize("name", [*STRAYS, None, 5])
def test_a_name_that_is_not_htc_and_a_job_id_is_not_an_htcondor_worker(name):
    assert job_id_of_worker(name) is None
    assert not is_htcondor_worker(name)


class StrayComm:
    """A scheduler comm whose workers include strays named like ours."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    async def identity(self, n_workers: int = 0) -> dict:
        return {"workers": {f"tcp://10.0.0.{i}:1": {"name": n} for i, n in enumerate(self.names)}}

    async def htcdaskgateway_workers_to_close(self, n: int) -> list[str]:
        return self.names[:n]


def test_a_stray_worker_named_like_ours_does_not_break_the_look_or_scale_down():
    link = SchedulerLink(StrayComm(["htc-debug", "htc-3.0@schedd", "htc-", "pod-1"]))
    assert asyncio.run(link.joined_jobs()) == {JobId("3.0@schedd")}
    assert asyncio.run(link.jobs_to_close(4)) == [JobId("3.0@schedd")]


def test_a_stray_worker_named_like_ours_is_not_kept_from_the_gateways_retirement():
    plugin = KeepHTCondorWorkers(unattended_timeout=0)
    workers = [SimpleNamespace(name=name) for name in ("htc-debug", "htc-1.0@schedd", "pod-1")]
    kept_back = plugin.valid_workers_downscaling(None, workers)
    assert [ws.name for ws in kept_back] == ["htc-debug", "pod-1"]
