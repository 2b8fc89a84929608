"""Worker groups (issue 27) with the fakes: each group is its own jobs, shape and
target, kept at the scheduler plugin, seen and kept by a second client."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from htcdaskgateway.errors import SchedulerConnectionError, SettingError
from htcdaskgateway.jobs import JobStatus
from htcdaskgateway.naming import GROUP_ATTRIBUTE
from htcdaskgateway.runtime import start_runtime
from htcdaskgateway.scaling import ScalesByTarget
from htcdaskgateway.schedd_pool import ScheddPool
from htcdaskgateway.settings import HTCondorSettings
from htcdaskgateway.spec import DEFAULT_GROUP, ClusterSpec, WorkerGroupSpec
from htcdaskgateway.targets import ScaleTarget

from .conftest import make_credentials
from .fakes import FakeSchedd, FakeSchedulerLink

CLUSTER = "dask-gateway.groups1"
GATEWAY = "http://gateway.test:8000"
GPU = {"worker": {"gpus": 1, "memory": "8 GiB"}, "max-jobs": 4}


class Client(ScalesByTarget):
    """A cluster object's scaling API over a runtime built with the fakes."""

    def __init__(self, runtime, token: str, settings: HTCondorSettings) -> None:
        self._runtime, self._token, self.name = runtime, token, CLUSTER
        self.htcondor_settings = settings


async def open_client(schedd, link, token: str, settings: HTCondorSettings, gateway=None) -> Client:
    pool = ScheddPool(None, None, None, 5.0, connect=lambda name: schedd,
                      list_schedds=_listing(schedd), rng=random.Random(1))  # fmt: skip
    spec = ClusterSpec(CLUSTER, "alice", GATEWAY, "tls://proxy:8786", 60, settings)

    async def running() -> None:
        return None

    runtime = await start_runtime(
        spec, WorkerGroupSpec(DEFAULT_GROUP, settings), pool, tls=make_credentials(),
        scheduler_comm=None, token=token, lease=60, new=False, state=running,
        on_change=lambda: None, link=link, pods=None if gateway is None else gateway.calls(),
    )  # fmt: skip
    return Client(runtime, token, settings)


def _listing(schedd):
    async def list_schedds(constraint: str) -> list[dict]:
        return [{"Name": schedd.name}]

    return list_schedds


def groups_of(schedd) -> list[str]:
    """Each queued worker job's group ("default": no group attribute), sorted."""
    found = []
    for job in schedd.queue.values():
        if job.ad.get("HTCDaskGatewayRole") is None and job.status is not JobStatus.REMOVED:
            value = job.ad.get(GROUP_ATTRIBUTE)
            found.append("default" if value is None else str(value).strip('"'))
    return sorted(found)


def test_a_gpu_group_beside_the_default_one_is_kept_by_a_second_client_and_deleted():
    async def body():
        schedd, link = FakeSchedd(), FakeSchedulerLink()
        settings = HTCondorSettings.from_config()
        notebook = await open_client(schedd, link, "notebook", settings)
        other = await open_client(schedd, link, "other", settings)
        try:
            await notebook._set_target(ScaleTarget(2, 1000))
            spec = {"version": 1, "htcondor": GPU}
            await notebook._set_target(ScaleTarget(1, 4), "gpu", spec)
            assert groups_of(schedd) == ["default", "default", "gpu"]
            (gpu_job,) = [d for d in schedd.descriptions if "request_gpus" in d]
            assert gpu_job["request_gpus"] == "1" and gpu_job["request_memory"] == "8192"
            assert "--resources GPU=1" in gpu_job["arguments"]
            from htcdaskgateway.view import ShownWithJobs

            shown = ShownWithJobs._jobs_html(notebook)  # the widget's and repr's table
            assert "<b>Worker group gpu:</b>" in shown and shown.count("HTCondor jobs:") == 2
            # The second client hears of the group at its next renewal.
            await other._runtime.watcher.renew()
            assert set(other.worker_groups) == {"default", "gpu"}
            assert other.worker_groups["gpu"] == ScaleTarget(1, 4)
            assert other._group_settings("gpu")[0].worker.gpus == 1
            gpu_jobs = await other._runtime.groups["gpu"].tracker.refresh()
            assert len(gpu_jobs) == 1, "the group's jobs, and only those"
            # The other client, now the applier, keeps the group's count.
            await other._set_target(ScaleTarget(2, 4), "gpu")
            assert groups_of(schedd) == ["default", "default", "gpu", "gpu"]
            # Beyond the group's max-jobs: refused before anything is set.
            with pytest.raises(SettingError, match="max-jobs allows 4"):
                other.scale(5, worker_group="gpu")
            await other._delete_group("gpu")
            assert groups_of(schedd) == ["default", "default"], "the default group's jobs stay"
            await notebook._runtime.watcher.renew()
            assert set(notebook.worker_groups) == {"default"}
            with pytest.raises(SettingError, match="No worker group 'gpu'"):
                notebook.scale(1, worker_group="gpu")
        finally:
            for client in (notebook, other):
                await client._runtime.watcher.stop()

    asyncio.run(body())


def test_an_operators_preset_is_added_by_name_and_an_unknown_group_is_refused():
    settings = HTCondorSettings.from_config({"worker-groups": {"gpu": GPU}})
    client = Client(None, "t", settings)
    group_settings, spec = client._group_settings("gpu")
    assert group_settings.max_jobs == 4 and spec == {"version": 1, "htcondor": GPU}
    with pytest.raises(SettingError, match=r"No worker group 'big'.*presets are gpu"):
        client._group_settings("big")
    with pytest.raises(SettingError, match="Not a worker group name"):
        client._group_settings("Big")


def test_a_group_whose_settings_this_client_refuses_is_left_to_others(caplog):
    async def body():
        schedd, link = FakeSchedd(), FakeSchedulerLink()
        settings = HTCondorSettings.from_config()
        refusing = await open_client(schedd, link, "refusing", settings)
        try:
            # Stored by another client (the plugin checks only its form).
            bad = {"version": 1, "htcondor": {"submit": {"attributes": {"Cmd": '"/bin/sh"'}}}}
            link.plugin.set_target("someone", {"kind": "scale", "n": 1, "cap": 9, "version": 1},
                                   30, group="odd", spec=bad)  # fmt: skip
            with caplog.at_level(logging.WARNING):
                for _ in range(3):
                    await refusing._runtime.watcher.renew()
            assert "odd" not in refusing._runtime.groups
            said = [r for r in caplog.records if "Worker group odd" in r.getMessage()]
            assert len(said) == 1 and "Cmd" in said[0].getMessage()
            assert groups_of(schedd) == [], "nothing submitted for it"
        finally:
            await refusing._runtime.watcher.stop()

    asyncio.run(body())


class FakeGateway:
    """The gateway's scale and adapt of one cluster, recorded."""

    def __init__(self) -> None:
        self.calls_made: list[tuple] = []

    def calls(self):
        from htcdaskgateway.runtime import PodCalls

        async def scale(n: int) -> None:
            self.calls_made.append(("scale", n))

        async def adapt(minimum: int, maximum: int) -> None:
            self.calls_made.append(("adapt", minimum, maximum))

        return PodCalls(scale, adapt)


def test_a_pod_group_hands_its_target_to_the_gateway_once_and_beside_htcondor_jobs():
    from htcdaskgateway.targets import AdaptTarget

    async def body():
        schedd, link = FakeSchedd(), FakeSchedulerLink()
        settings = HTCondorSettings.from_config()
        gateway, seen_by_other = FakeGateway(), FakeGateway()
        notebook = await open_client(schedd, link, "notebook", settings, gateway)
        other = await open_client(schedd, link, "other", settings, seen_by_other)
        try:
            await notebook._set_target(ScaleTarget(1, 1000))
            await notebook._set_target(ScaleTarget(2, 1000), "pods", {"version": 1, "kind": "pods"})
            assert gateway.calls_made == [("scale", 2)]
            assert groups_of(schedd) == ["default"], "no HTCondor job for pods"
            for _ in range(3):  # looks of both clients: nothing handed again
                await notebook._runtime.watcher.renew()
                await notebook._runtime.groups["pods"].step()
                await other._runtime.watcher.renew()
                await other._runtime.groups["pods"].step(act=False)
            assert gateway.calls_made == [("scale", 2)] and seen_by_other.calls_made == []
            link.pods = {"dask-worker-a", "dask-worker-b"}
            await notebook._runtime.groups["pods"].step()
            assert notebook._runtime.groups["pods"].connected == link.pods
            await notebook._set_target(AdaptTarget(0, 4, 3.0, 3, 5.0), "pods")
            assert gateway.calls_made[-1] == ("adapt", 0, 4)
            with pytest.raises(SettingError, match="has a pod group already: pods"):
                notebook._add_pod_group("more", 1, None, {})
            with pytest.raises(SettingError, match="operator"):
                notebook._add_pod_group("pods", 1, None, {"memory": "1 GiB"})
            await notebook._delete_group("pods")
            assert gateway.calls_made[-1] == ("scale", 0)
        finally:
            for client in (notebook, other):
                await client._runtime.watcher.stop()

    asyncio.run(body())


def test_a_connection_dropped_while_scaling_says_so_and_a_stored_target_is_still_applied():
    async def body():
        schedd, link = FakeSchedd(), FakeSchedulerLink()
        notebook = await open_client(schedd, link, "notebook", HTCondorSettings.from_config())
        try:
            await notebook._set_target(ScaleTarget(3, 1000))
            assert groups_of(schedd) == ["default"] * 3
            # Dropped before the scheduler stored it: a clear error, nothing changed.
            link.unreachable = True
            with pytest.raises(SchedulerConnectionError, match="nothing changed: try again"):
                await notebook._set_target(ScaleTarget(1, 1000))
            link.unreachable = False
            assert link.plugin.targets["default"]["n"] == 3
            # Stored, then dropped while choosing which workers to close (the
            # proxy cut in stop 33's soak): no error; the watcher applies it.
            queue = schedd.queue.items()
            link.workers = {j for j, job in queue if "HTCDaskGatewayRole" not in job.ad}
            for job_id in link.workers:
                schedd.queue[job_id].status = JobStatus.RUNNING
            link.fail_next("jobs_to_close")
            await notebook._set_target(ScaleTarget(1, 1000))
            assert link.plugin.targets["default"]["n"] == 1
            await notebook._runtime.groups[DEFAULT_GROUP].step()
            assert groups_of(schedd) == ["default"]
        finally:
            await notebook._runtime.watcher.stop()

    asyncio.run(body())
