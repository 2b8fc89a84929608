"""The parts of one open, running cluster, built once by ``start_runtime``.

The cluster object hands down a ``ClusterSpec`` and a ``WorkerGroupSpec``;
this module builds the HTCondor workers (``workers``), the job tracker and
the reconciler of the group, and the watcher that keeps them current, and
checks that the scheduler loads the plugin. None of them holds the
cluster object: what they need of the gateway is ``gateway_state``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dask_gateway import GatewayClusterError
from dask_gateway.client import ClusterStatus

from . import view
from .errors import HTCondorError, SettingError
from .jobs import JobTracker
from .pods import POD_KIND, PodGroup
from .reconciler import GroupReconciler, Reconciler
from .schedd_pool import ScheddPool
from .scheduler_link import SchedulerLink
from .spec import ClusterSpec, WorkerGroupSpec
from .targets import TargetFormatError, check_wire_group_spec
from .watch import Watcher
from .workers import GroupWorkers, HTCondorWorkers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PodCalls:
    """The gateway's calls for one cluster's own workers (dask-gateway's scale and adapt)."""

    scale: Callable[[int], Awaitable[Any]]
    adapt: Callable[[int, int], Awaitable[Any]]


@dataclass
class ClusterRuntime:
    """One running cluster's workers, their reconciler and the watcher that keeps them."""

    spec: ClusterSpec
    workers: HTCondorWorkers
    reconciler: Reconciler
    watcher: Watcher
    # Each worker group's shape, the default group's included.
    group_specs: dict[str, WorkerGroupSpec]

    @property
    def tracker(self) -> JobTracker:
        """The default group's jobs."""
        return self.reconciler.tracker

    @property
    def groups(self) -> dict[str, GroupReconciler]:
        """Every worker group's reconciler, the default group's included."""
        return self.watcher.groups

    def failure_message(self) -> str | None:
        """What the last jobs that ended without serving say, if they keep doing so."""
        tracker = self.tracker
        if not tracker.failures_in_a_row or not tracker.failures:
            return None
        last = tracker.failures[-1]
        return view.failure_message(
            last, last.job_id in tracker.joined, self.spec.scheduler_address,
            self.spec.settings.worker.death_timeout,
        )  # fmt: skip


async def gateway_state(gateway: Any, name: str) -> str | None:
    """What the gateway reports of cluster ``name``: None while it runs or starts.

    Asked when the scheduler does not answer (shut down by another client,
    its lease lapsed, the gateway's idle timeout, its pod deleted); the
    watcher decides when the answers prove it gone (``GoneEvidence``).
    """
    try:
        report = await gateway._cluster_report(name)
    except ValueError:  # 404: the gateway, or a proxy not yet routing to it
        return "gone"
    if report.status in (ClusterStatus.PENDING, ClusterStatus.RUNNING):
        return None
    return str(report.status.name)


async def start_runtime(
    spec: ClusterSpec,
    group: WorkerGroupSpec,
    schedd: ScheddPool,
    *,
    tls: tuple[str, str] | None,
    scheduler_comm: Any,
    token: str,
    lease: int,
    new: bool,
    state: Callable[[], Awaitable[str | None]],
    on_change: Callable[[], None],
    link: SchedulerLink | None = None,
    pods: PodCalls | None = None,
) -> ClusterRuntime:
    """Build the parts of a running cluster and start watching it.

    ``lease`` is the client lease this object holds (0: none), ``new``
    whether the cluster was just made (its credentials are spooled at once).
    ``link``: the scheduler as ``scheduler_comm`` reaches it, unless given.
    ``pods``: the gateway's scale and adapt of this cluster, for a pod group.
    """
    workers = HTCondorWorkers(spec, schedd, tls)
    if new:
        workers.prepare()
    link = link or SchedulerLink(scheduler_comm)
    refused: set[str] = set()
    group_specs: dict[str, WorkerGroupSpec] = {}

    def reconciler_of(group: WorkerGroupSpec) -> Reconciler:
        group_specs[group.name] = group
        tracker = JobTracker(schedd, spec.gateway_id, spec.name, user=spec.user, group=group.name)
        resources = dict(group.settings.worker.dask_resources)
        return Reconciler(tracker, link, GroupWorkers(workers, group), token,
                          group=group.name, resources=resources)  # fmt: skip

    def make_group(name: str, wire: Any) -> GroupReconciler | None:
        """A named group seen at the scheduler; None if its settings do not work here."""
        try:
            checked = check_wire_group_spec(wire)
            if checked.get("kind") == POD_KIND:
                if pods is None:
                    raise SettingError("this client cannot ask the gateway for pod workers")
                group_specs[name] = WorkerGroupSpec(name, spec.settings, kind=POD_KIND)
                return PodGroup(name, link, pods.scale, pods.adapt, token, spec.settings.max_jobs)
            settings = spec.settings.for_group(name, checked["htcondor"])
        except (SettingError, TargetFormatError) as exc:
            if name not in refused:
                refused.add(name)
                logger.warning("Worker group %s of %s is left to other clients: %s",
                               name, spec.name, exc)  # fmt: skip
            return None
        return reconciler_of(WorkerGroupSpec(name, settings))

    reconciler = reconciler_of(group)

    async def remove_remaining(reason: str) -> None:
        try:
            await workers.remove_all(f"cluster {spec.name} {reason}")
        except HTCondorError:
            # Gone all the same; its workers exit without their scheduler and
            # the jobs' lease removes those that never started.
            logger.exception("Could not remove the remaining jobs of %s", spec.name)

    watcher = Watcher(
        spec.name, token, link, reconciler, lease, spec.settings.watch_interval,
        state, remove_remaining, on_change, job_lease=spec.job_lease, make_group=make_group,
    )  # fmt: skip
    try:
        reply = await watcher.renew()
    except (ValueError, TypeError) as exc:  # the scheduler has no such handler
        reply = {"error": str(exc)}
    # Every reply of the plugin names the applier; a scheduler without the
    # plugin answers nothing (or an error), and would retire every HTCondor
    # worker seconds after it joins.
    if "applier" not in reply and "controller" not in reply:
        raise GatewayClusterError(
            f"The scheduler of {spec.name} does not load htcdaskgateway.scheduler_plugin; "
            f"the gateway's scheduler_cmd must preload it (its reply: {reply or 'none'})"
        )
    watcher.start()
    return ClusterRuntime(spec, workers, reconciler, watcher, group_specs)
