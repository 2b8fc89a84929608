"""Scheduler preload: keep the workers that join from HTCondor.

dask-gateway's own scheduler preload retires workers above the count the
gateway asked for, which is 0 for HTCondor-backed clusters, so every job's
worker would be closed seconds after joining. It picks its victims with
``Scheduler.workers_to_close``, which asks every plugin's
``valid_workers_downscaling``; this plugin withholds the HTCondor workers
there. They leave only when the client retires them or removes their job.

Load it in the gateway's ``scheduler_cmd``:
``["dask", "scheduler", "--preload", "htcdaskgateway.scheduler_plugin"]``.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from .naming import is_htcondor_worker


class KeepHTCondorWorkers(SchedulerPlugin):
    name = "htcdaskgateway-keep-htcondor-workers"

    def valid_workers_downscaling(self, scheduler: Any, workers: list[Any]) -> list[Any]:
        return [ws for ws in workers if not is_htcondor_worker(ws.name)]


def dask_setup(scheduler: Any) -> None:
    scheduler.add_plugin(KeepHTCondorWorkers())
