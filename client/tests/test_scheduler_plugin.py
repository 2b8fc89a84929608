"""The scheduler plugin in a real, in-process dask scheduler with real workers."""

import asyncio

from distributed import Scheduler, Worker
from distributed.core import rpc

from htcdaskgateway import dial_back, scheduler_plugin
from htcdaskgateway.scheduler_plugin import KeepHTCondorWorkers

TWO = {"kind": "scale", "n": 2, "cap": 10, "version": 1}
THREE = {"kind": "scale", "n": 3, "cap": 10, "version": 1}


async def _scheduler_with_workers(*names):
    scheduler = await Scheduler(host="127.0.0.1", port=0, dashboard_address=None)
    plugin = KeepHTCondorWorkers()
    scheduler.add_plugin(plugin)
    await plugin.start(scheduler)
    workers = [
        await Worker(scheduler.address, name=name, host="127.0.0.1", nthreads=1) for name in names
    ]
    return scheduler, workers


async def _close(scheduler, workers):
    for worker in workers:
        await worker.close()
    await scheduler.close()


def test_htcondor_workers_only_close_when_the_client_asks():
    async def run():
        scheduler, workers = await _scheduler_with_workers("htc-1.0", "htc-1.1", "pod-1")
        try:
            # What dask-gateway's own preload asks: only the non-HTCondor worker.
            assert scheduler.workers_to_close(n=3, attribute="name") == ["pod-1"]
            async with rpc(scheduler.address) as comm:
                names = await comm.htcdaskgateway_workers_to_close(n=2)
                assert len(names) == 2
                # With no work, the adaptive target counts HTCondor workers as closable.
                assert await comm.htcdaskgateway_adaptive_target() == 0
            assert scheduler.workers_to_close(n=3, attribute="name") == ["pod-1"]
        finally:
            await _close(scheduler, workers)

    asyncio.run(run())


def test_the_gateways_own_preload_closes_only_its_workers_above_its_count():
    """A pod group of 2 scaled to 1 beside an HTCondor worker: dask-gateway's
    preload (the real one, its heartbeat) retires one pod worker, not both."""
    from dask_gateway.scheduler_preload import GatewaySchedulerService

    class Gateway:
        token = "t"

        def __init__(self) -> None:
            self.sent: list[dict] = []

        async def heartbeat(self, msg):
            self.sent.append(msg)

    async def run():
        scheduler, workers = await _scheduler_with_workers()
        service = GatewaySchedulerService(scheduler, gateway=Gateway(), heartbeat_period=0)
        service.api_address = "http://127.0.0.1:0"  # its API server is not started here
        try:
            for name in ("htc-1.0", "pod-1", "pod-2"):
                workers.append(await Worker(scheduler.address, name=name, host="127.0.0.1",
                                            nthreads=1))  # fmt: skip
            service.count = 2
            await service.heartbeat()
            assert len(scheduler.workers) == 3, "at its count: nothing closed"
            service.count = 1
            await service.heartbeat()
            names = sorted(str(ws.name) for ws in scheduler.workers.values())
            assert len(names) == 2 and "htc-1.0" in names, names
            assert len(service.gateway.sent[-1]["closing_workers"]) == 1
        finally:
            await _close(scheduler, workers)

    asyncio.run(run())


def _with_lease_scheduler(monkeypatch, body) -> None:
    """Run ``body(scheduler, comm)`` against a scheduler with the plugin."""
    monkeypatch.setattr(scheduler_plugin, "LEASE_CHECK_PERIOD", 0.05)

    async def run():
        scheduler, workers = await _scheduler_with_workers()
        try:
            async with rpc(scheduler.address) as comm:
                await body(scheduler, comm)
        finally:
            await _close(scheduler, workers)

    asyncio.run(run())


def test_lapsed_lease_closes_the_scheduler(monkeypatch):
    async def body(scheduler, comm):
        reply = await comm.htcdaskgateway_renew(token="a", ttl=0.3)
        assert reply == {"applier": None, "controller": None, "target": None, "generation": 0}
        await comm.htcdaskgateway_set_target(token="a", target=TWO,
                                             apply_ttl=5)  # fmt: skip
        for _ in range(4):  # renewed in time: still running
            await asyncio.sleep(0.15)
            reply = await comm.htcdaskgateway_renew(token="a", ttl=0.3)
            assert reply == {"applier": "a", "controller": "a", "target": TWO,
                             "generation": 1}  # fmt: skip
        assert scheduler.status.name == "running"
        await asyncio.sleep(0.6)  # no renewal: the lease lapses
        assert scheduler.status.name in ("closing", "closed")

    _with_lease_scheduler(monkeypatch, body)


def test_released_lease_does_not_close_the_scheduler(monkeypatch):
    async def body(scheduler, comm):
        await comm.htcdaskgateway_renew(token="a", ttl=0.2)
        await comm.htcdaskgateway_renew(token="a", ttl=0)
        await asyncio.sleep(0.5)
        assert scheduler.status.name == "running"

    _with_lease_scheduler(monkeypatch, body)


def test_the_target_outlives_its_setter_and_the_applier_role_passes_on(monkeypatch):
    async def body(scheduler, comm):
        await comm.htcdaskgateway_renew(token="notebook", apply_ttl=0.2)
        state = await comm.htcdaskgateway_set_target(token="cli", target=THREE, apply_ttl=5)
        assert state["applier"] == "cli"
        # While the CLI applies it, the notebook only watches.
        state = await comm.htcdaskgateway_renew(token="notebook", apply_ttl=0.2)
        assert state["applier"] == "cli"
        await comm.htcdaskgateway_release(token="cli")  # the CLI exits
        state = await comm.htcdaskgateway_renew(token="notebook", apply_ttl=0.2)
        assert state == {"applier": "notebook", "controller": "notebook", "target": THREE,
                         "generation": 1}  # fmt: skip
        # A silent applier loses the role to the next client that asks.
        await asyncio.sleep(0.3)
        state = await comm.htcdaskgateway_renew(token="other", apply_ttl=0.2)
        assert state["applier"] == "other"

    _with_lease_scheduler(monkeypatch, body)


def test_versions_reports_the_scheduler_and_each_joined_worker_through_the_link():
    from htcdaskgateway.scheduler_link import SchedulerLink
    from htcdaskgateway.versions import local_versions, mismatch_message

    async def run():
        scheduler, workers = await _scheduler_with_workers("htc-1.0", "htc-2.0")
        try:
            async with rpc(scheduler.address) as comm:
                reply = await SchedulerLink(comm).versions()
            assert set(reply["workers"]) == {"htc-1.0", "htc-2.0"}
            mine = local_versions()
            assert reply["scheduler"]["distributed"] == mine["distributed"]
            assert reply["workers"]["htc-1.0"]["python"] == mine["python"]
            assert mismatch_message(mine, reply["scheduler"], reply["workers"]) is None
        finally:
            await _close(scheduler, workers)

    asyncio.run(run())


def _with_unattended_timeout(monkeypatch, seconds, body) -> None:
    import dask.config

    with dask.config.set({"gateway.htcondor.unattended-timeout": seconds}):
        _with_lease_scheduler(monkeypatch, body)


def test_a_cluster_left_unattended_stops_itself(monkeypatch):
    async def body(scheduler, comm):
        await asyncio.sleep(1.0)
        assert scheduler.status.name in ("closing", "closed")

    _with_unattended_timeout(monkeypatch, 0.5, body)


def test_an_open_cluster_object_or_a_connected_client_keeps_it(monkeypatch):
    from distributed import Client

    async def body(scheduler, comm):
        await asyncio.sleep(0.3)
        for _ in range(6):  # an open cluster object calls in on its own
            await comm.htcdaskgateway_renew(token="notebook")
            await asyncio.sleep(0.2)
        assert scheduler.status.name == "running"
        async with Client(scheduler.address, asynchronous=True):
            await asyncio.sleep(1.2)  # connected, computing nothing
            assert scheduler.status.name == "running"
        await asyncio.sleep(1.2)  # everyone left
        assert scheduler.status.name in ("closing", "closed")

    _with_unattended_timeout(monkeypatch, 0.5, body)


def test_a_worker_the_scheduler_cannot_dial_back_is_reported_until_it_leaves(monkeypatch):
    """Issue 30, point 2: a worker that gives the scheduler an address
    nothing answers on (a wrong worker.host or contact-address) joins all
    the same; the plugin dials it and tells every client, by name."""
    import socket

    monkeypatch.setattr(dial_back, "PROBE_TIMEOUT", 1.0)

    async def run():
        with socket.socket() as closed:  # a port nothing listens on
            closed.bind(("127.0.0.1", 0))
            dead = f"tcp://127.0.0.1:{closed.getsockname()[1]}"
        scheduler, workers = await _scheduler_with_workers("htc-1.0")
        astray = await Worker(scheduler.address, name="htc-1.1", host="127.0.0.1",
                              contact_address=dead, nthreads=1)  # fmt: skip
        try:
            async with rpc(scheduler.address) as comm:
                for _ in range(50):
                    state = await comm.htcdaskgateway_renew(token="t")
                    if "unreachable" in state:
                        break
                    await asyncio.sleep(0.1)
                assert set(state["unreachable"]) == {"htc-1.1"}
                assert state["unreachable"]["htc-1.1"].startswith(dead)
                await astray.close()
                for _ in range(50):
                    state = await comm.htcdaskgateway_renew(token="t")
                    if "unreachable" not in state:
                        break
                    await asyncio.sleep(0.1)
                assert "unreachable" not in state
        finally:
            await _close(scheduler, workers)

    asyncio.run(run())


# -- worker groups (issue 27) --------------------------------------------------

GPU_SPEC = {"version": 1, "htcondor": {"worker": {"gpus": 1}}}


def test_each_group_keeps_its_own_target_generation_and_settings():
    import pytest

    from htcdaskgateway.targets import TargetFormatError

    plugin = KeepHTCondorWorkers()
    with pytest.raises(TargetFormatError, match="no worker group 'gpu'"):
        plugin.set_target("a", TWO, 30, group="gpu")
    state = plugin.set_target("a", TWO, 30, group="gpu", spec=GPU_SPEC)
    assert state["groups"]["gpu"] == {
        "spec": GPU_SPEC, "target": TWO, "generation": 1, "deleted": False,
    }  # fmt: skip
    assert state["target"] is None and state["generation"] == 0, "the default group is apart"
    plugin.set_target("b", THREE, 30)
    # The same settings again are fine; others are refused while it exists.
    plugin.set_target("a", THREE, 30, group="gpu", spec=GPU_SPEC)
    other = {"version": 1, "htcondor": {"worker": {"gpus": 2}}}
    with pytest.raises(TargetFormatError, match="exists with other settings"):
        plugin.set_target("a", TWO, 30, group="gpu", spec=other)
    assert plugin.confirm("a", 2, group="gpu")["confirmed"]
    assert not plugin.confirm("a", 1, group="gpu")["confirmed"], "an older generation"
    state = plugin.delete_group("a", "gpu", 30)
    assert state["groups"]["gpu"]["deleted"] and state["groups"]["gpu"]["target"]["n"] == 0
    with pytest.raises(TargetFormatError, match="no worker group 'gpu'"):
        plugin.set_target("a", TWO, 30, group="gpu")
    # Added again after its deletion, with other settings.
    state = plugin.set_target("a", TWO, 30, group="gpu", spec=other)
    assert state["groups"]["gpu"]["spec"] == other and not state["groups"]["gpu"]["deleted"]


def test_bad_group_names_and_settings_are_refused_where_they_are_stored():
    import pytest

    from htcdaskgateway.targets import TargetFormatError

    plugin = KeepHTCondorWorkers()
    for name in ("GPU", "", "a" * 33, "-x", None):
        with pytest.raises(TargetFormatError, match="not a worker group name"):
            plugin.set_target("a", TWO, 30, group=name, spec=GPU_SPEC)
    for spec in ({"htcondor": {}}, {"version": 1, "htcondor": {}, "x": 1},
                 {"version": 1, "htcondor": {"k": "x" * 20000}}):  # fmt: skip
        with pytest.raises(TargetFormatError):
            plugin.set_target("a", TWO, 30, group="gpu", spec=spec)


def test_a_groups_adaptive_target_follows_the_tasks_that_need_what_it_offers():
    """Two GPU tasks wait with no GPU worker; unrestricted work does not count."""

    async def run():
        scheduler, workers = await _scheduler_with_workers("htc-1.0")
        from distributed import Client

        client = await Client(scheduler.address, asynchronous=True)
        plugin = next(p for p in scheduler.plugins.values() if isinstance(p, KeepHTCondorWorkers))
        try:
            gpu_tasks = [client.submit(sum, [i], resources={"GPU": 1}, pure=False)
                         for i in range(2)]  # fmt: skip
            plain = client.submit(sum, [1, 2])
            assert await plain == 3
            for _ in range(50):
                if len(scheduler.unrunnable) == 2:
                    break
                await asyncio.sleep(0.05)
            assert plugin.adaptive_target(resources={"GPU": 1}) == 2
            assert plugin.adaptive_target(resources={"GPU": 2}) == 1, "two tasks per worker"
            assert plugin.adaptive_target(resources={"FPGA": 1}) == 0
            # The scheduler keeps its idle worker for the waiting GPU tasks;
            # the default group's target does not.
            assert scheduler.adaptive_target() == 1
            assert plugin.adaptive_target() == 0
            del gpu_tasks
        finally:
            await client.close()
            await _close(scheduler, workers)

    asyncio.run(run())
