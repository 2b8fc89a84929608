"""What the parts of a running cluster need of it, built once when it starts.

The cluster object builds one ``ClusterSpec`` and one ``WorkerGroupSpec``
per worker group and hands them down; the parts (``workers``, the
reconciler, the watcher) read them and never call back into the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import HTCondorSettings
from .targets import DEFAULT_GROUP

__all__ = ["DEFAULT_GROUP", "ClusterSpec", "WorkerGroupSpec", "gateway_id"]


@dataclass(frozen=True)
class WorkerGroupSpec:
    """One group of a cluster's workers: their shape, and what their jobs carry."""

    name: str
    settings: HTCondorSettings  # the cluster's, with the group's own worker.* and submit.*
    kind: str = "htcondor"  # or "pods": the gateway's own workers (pods.PodGroup)

    @property
    def max_jobs(self) -> int:
        return self.settings.max_jobs


@dataclass(frozen=True)
class ClusterSpec:
    """One running cluster, as its worker jobs and their watchers see it."""

    name: str
    user: str  # the gateway user the jobs work for
    gateway_id: str  # the name the jobs carry for their gateway
    scheduler_address: str  # what the workers dial: the gateway's proxy, from the execute nodes
    job_lease: int  # seconds the queued jobs' lease runs ahead; 0: none
    settings: HTCondorSettings


def gateway_id(settings: HTCondorSettings, address: str) -> str:
    """The configured ``gateway-id``, or the gateway's address."""
    return settings.gateway_id or address.rstrip("/")
