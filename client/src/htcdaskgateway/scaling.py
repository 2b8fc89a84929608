"""scale(), adapt() and worker groups: targets set at the scheduler, per group.

A mixin of ``HTCGatewayCluster``: each call checks what it asks for
(``wanted``), sets the group's target at the scheduler plugin and lets the
group's reconciler act at once; the watcher keeps it from then on. A group
is added with its settings (``HTCondorSettings.for_group``), kept by the
scheduler with its target, so that ``connect()`` and the CLI see it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import dask.config
from dask_gateway import GatewayClusterError

from . import wanted
from .errors import SchedulerConnectionError, SettingError
from .pods import POD_KIND
from .settings import HTCondorSettings, checked_group_name
from .targets import DEFAULT_GROUP, TARGET_VERSION, AdaptTarget, ScaleTarget, Target, target_to_wire

logger = logging.getLogger(__name__)


class ScalesByTarget:
    """The scaling API of a cluster object (a ``GatewayCluster`` mixin)."""

    name: str | None
    htcondor_settings: HTCondorSettings
    gateway: Any
    _runtime: Any
    _token: str

    def scale(self, n: int, worker_group: str | None = None, **kwargs: Any) -> Any:
        """Scale a worker group (the cluster's own by default) to ``n`` jobs and hold it there.

        ``n`` counts the group's jobs, idle, running or held. The target is
        kept by the cluster's scheduler: whichever client has the cluster
        open keeps it, replacing jobs that end or are removed behind its
        back. Scaling down removes idle jobs first, then retires the
        workers whose loss costs least through the scheduler (their data
        moves) and only then removes their jobs. ``worker_group`` names a
        group added with ``add_worker_group()`` or an operator's preset
        (``gateway.htcondor.worker-groups``).
        """
        group = worker_group or DEFAULT_GROUP
        settings, spec = self._group_settings(group)
        target = wanted.scale_target(n, _call("scale()", worker_group), settings.max_jobs)
        return self.gateway.sync(self._set_target, target, group, spec, **kwargs)

    def adapt(
        self,
        minimum: int | None = None,
        maximum: int | None = None,
        active: bool = True,
        *,
        interval: str | float = "3s",
        wait_count: int = 3,
        target_duration: str | float = "5s",
        worker_group: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Scale a worker group between ``minimum`` and ``maximum`` jobs, following the load.

        The scheduler's adaptive target is checked every ``interval``; a
        worker is only removed after ``wait_count`` checks in a row found it
        unneeded. No ``maximum``: the group's ``max-jobs``. A group whose
        workers offer resources (``worker.gpus``, ``worker.resources``)
        follows the tasks that need them; the default group the rest.
        ``active=False`` stops adapting and keeps the current jobs. The
        policy is kept by the scheduler and applied by an open client of the
        cluster, until another ``scale()`` or ``adapt()`` of the group replaces it.
        """
        group = worker_group or DEFAULT_GROUP
        settings, spec = self._group_settings(group)
        target = wanted.adapt_target(
            minimum, maximum, interval=interval, wait_count=wait_count,
            target_duration=target_duration, max_jobs=settings.max_jobs,
        )  # fmt: skip
        return self.gateway.sync(
            self._set_target, target if active else None, group, spec, **kwargs
        )

    def adaptive(
        self,
        minimum: int | None = None,
        maximum: int | None = None,
        *,
        interval: str | float = "3s",
        wait_count: int = 3,
        target_duration: str | float = "5s",
    ) -> AdaptTarget:
        """The adaptive policy ``adapt()`` would set for the default group, checked but not set."""
        return wanted.adapt_target(
            minimum, maximum, interval=interval, wait_count=wait_count,
            target_duration=target_duration, max_jobs=self.htcondor_settings.max_jobs,
        )  # fmt: skip

    def scale_target(self, n: object, what: str) -> ScaleTarget:
        """The target ``scale(n)`` sets, checked against ``max-jobs``, which it carries."""
        return wanted.scale_target(n, what, self.htcondor_settings.max_jobs)

    def add_worker_group(
        self,
        name: str,
        n_workers: int = 0,
        *,
        kind: str = "htcondor",
        htcondor: Mapping[str, Any] | None = None,
        **worker: Any,
    ) -> Any:
        """Add a group of workers of their own shape, and scale it to ``n_workers``.

        The shape is any ``gateway.htcondor.worker.*`` setting as a keyword
        (``gpus=1, memory="16 GiB"``), or ``htcondor={"worker": ...,
        "submit": ..., "max-jobs": ...}``, on top of an operator's preset
        of the same name if there is one. Scale it with ``scale(n,
        worker_group=name)`` or ``adapt(..., worker_group=name)``.

        ``kind="pods"``: the gateway's own workers instead, pods beside the
        scheduler in Kubernetes, as the operator set them up and capped
        them (the chart's ``cluster.podWorkers``); at most one such group.
        """
        checked_group_name(name)
        if name == DEFAULT_GROUP:
            raise SettingError(f"{DEFAULT_GROUP!r} is the cluster's own group; name another")
        if kind == POD_KIND:
            return self._add_pod_group(name, n_workers, htcondor, worker)
        if kind != "htcondor":
            raise SettingError(f"add_worker_group(kind=...) is 'htcondor' or 'pods', got {kind!r}")
        preset = dict(self.htcondor_settings.worker_groups).get(name, {})
        overrides = dask.config.merge(
            dict(preset), dict(htcondor or {}), {"worker": worker} if worker else {}
        )
        settings = self.htcondor_settings.for_group(name, overrides)  # checked before anything
        target = wanted.scale_target(n_workers, f"add_worker_group({name!r})", settings.max_jobs)
        spec = {"version": TARGET_VERSION, "htcondor": overrides}
        return self.gateway.sync(self._set_target, target, name, spec)

    def _add_pod_group(
        self, name: str, n: int, htcondor: Mapping[str, Any] | None, worker: Mapping[str, Any]
    ) -> Any:
        if htcondor or worker:
            raise SettingError("a pod group's shape is the operator's (cluster.podWorkers)")
        runtime = self._runtime
        deleted = set() if runtime is None else runtime.watcher.deleted_groups
        specs = [] if runtime is None else runtime.group_specs.values()
        others = [g.name for g in specs if g.kind == POD_KIND and g.name not in {name, *deleted}]
        if others:
            raise SettingError(f"cluster {self.name} has a pod group already: {others[0]}")
        max_jobs = self.htcondor_settings.max_jobs
        target = wanted.scale_target(n, f"add_worker_group({name!r}, kind='pods')", max_jobs)
        spec = {"version": TARGET_VERSION, "kind": POD_KIND}
        return self.gateway.sync(self._set_target, target, name, spec)

    def delete_worker_group(self, name: str) -> Any:
        """Remove a named group's jobs (retiring its workers) and the group."""
        checked_group_name(name)
        return self.gateway.sync(self._delete_group, name)

    @property
    def worker_groups(self) -> dict[str, Target | None]:
        """Each worker group's target (the default group's included), as last seen."""
        runtime = self._runtime
        if runtime is None:
            return {}
        deleted = runtime.watcher.deleted_groups
        return {name: r.target for name, r in runtime.groups.items() if name not in deleted}

    def _group_settings(self, group: str) -> tuple[HTCondorSettings, dict[str, Any] | None]:
        """A group's settings, and what to add it with if the scheduler may not know it."""
        if group == DEFAULT_GROUP:
            return self.htcondor_settings, None
        checked_group_name(group)
        runtime = self._runtime
        known = runtime is not None and group in runtime.group_specs
        if known and group not in runtime.watcher.deleted_groups:
            return runtime.group_specs[group].settings, None
        presets = dict(self.htcondor_settings.worker_groups)
        if group in presets:
            spec = {"version": TARGET_VERSION, "htcondor": presets[group]}
            return self.htcondor_settings.for_group(group, presets[group]), spec
        choice = f"; the presets are {', '.join(presets)}" if presets else ""
        raise SettingError(
            f"No worker group {group!r} in cluster {self.name}: add it with "
            f"add_worker_group({group!r}, ...){choice}"
        )

    def _running_watcher(self) -> Any:
        runtime = self._runtime
        if runtime is None:
            raise GatewayClusterError(f"Cluster {self.name} is not running; it cannot be scaled")
        watcher = runtime.watcher
        if watcher.stopped_reason is not None:
            raise GatewayClusterError(
                f"Cluster {self.name} was {watcher.stopped_reason}; it cannot be scaled "
                "(start a new cluster)"
            )
        return watcher

    async def _set_target(
        self, target: Target | None, group: str = DEFAULT_GROUP, spec: dict[str, Any] | None = None
    ) -> None:
        watcher = self._running_watcher()
        # OSError covers what a dropped or silent connection raises here:
        # distributed's CommClosedError, refused connections, TimeoutError.
        try:
            reply = await watcher.link.set_target(
                self._token, target_to_wire(target), watcher.apply_ttl, group, spec
            )
        except OSError as exc:
            raise self._dropped("stored the new target", exc) from exc
        watcher.follow(reply)
        reconciler = watcher.groups.get(group)
        if reconciler is None:
            raise SettingError(f"Worker group {group!r} cannot be used by this client")
        if target is not None:
            await self._act_now(reconciler, group)
        watcher.wake()

    def _dropped(self, before: str, exc: OSError) -> SchedulerConnectionError:
        return SchedulerConnectionError(
            f"The connection to cluster {self.name}'s scheduler (through the gateway's "
            f"proxy) dropped before it {before} ({exc!r}); nothing changed: try again "
            "(a proxy or scheduler restart takes seconds)"
        )

    async def _act_now(self, reconciler: Any, group: str) -> None:
        """Apply a stored target at once; a dropped scheduler connection is
        not an error here: the target is kept and the watcher applies it."""
        try:
            await reconciler.step(raise_errors=True)
        except OSError as exc:
            logger.info(
                "Cluster %s: the target of group %s is stored; applying it waits for the "
                "scheduler connection (%r)", self.name, group, exc,
            )  # fmt: skip

    async def _delete_group(self, name: str) -> None:
        watcher = self._running_watcher()
        try:
            reply = await watcher.link.delete_group(self._token, name, watcher.apply_ttl)
        except OSError as exc:
            raise self._dropped(f"removed worker group {name!r}", exc) from exc
        watcher.follow(reply)
        reconciler = watcher.groups.get(name)
        if reconciler is not None:
            await self._act_now(reconciler, name)
        watcher.wake()


def _call(what: str, worker_group: str | None) -> str:
    return what if worker_group is None else f"{what[:-1]}worker_group={worker_group!r})"
