"""The ``htcdaskgateway`` command: clusters and their HTCondor jobs from a shell.

Uses the same dask config as ``HTCGateway()`` (gateway address, auth,
``gateway.htcondor.*``).
"""

from __future__ import annotations

import time

import click
from dask_gateway import GatewayClusterError
from dask_gateway.client import ClusterStatus

from ._version import __version__
from .errors import HTCondorError, SettingError
from .gateway import HTCGateway
from .jobs import JobStatus, WorkerJob, count_by_status
from .targets import AdaptTarget, ScaleTarget, Target

# `status` shows at most this many of a cluster's jobs that ended this recently.
ENDED_SHOWN = 5
RECENT = 3600


def describe_target(target: Target | None) -> str:
    if isinstance(target, ScaleTarget):
        return f"scale {target.n}"
    if isinstance(target, AdaptTarget):
        return f"adapt {target.minimum}-{target.maximum}"
    return "no target"


def _counts(jobs: list[WorkerJob]) -> str:
    counts = count_by_status(jobs)
    return f"{counts['idle']:>4} {counts['running']:>7} {counts['held']:>4}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "-V", "--version", prog_name="htcdaskgateway", message="%(prog)s %(version)s"
)
def main() -> None:
    """Dask Gateway clusters whose workers are HTCondor jobs."""


@main.command("list")
def list_clusters() -> None:
    """Your running clusters with their idle, running and held jobs."""
    with HTCGateway() as gateway:
        clusters = sorted(gateway.list_clusters(), key=lambda report: report.name)
    if not clusters:
        click.echo("no running clusters")
        return
    click.echo(f"{'NAME':<34} {'STATUS':<8} IDLE RUNNING HELD")
    for report in clusters:
        jobs = report.jobs
        counts = f"{jobs['idle']:>4} {jobs['running']:>7} {jobs['held']:>4}"
        click.echo(f"{report.name:<34} {report.status.name:<8} {counts}")


@main.command()
@click.argument("name")
def status(name: str) -> None:
    """A cluster's state and each of its jobs, with why it is held or idle."""
    with HTCGateway() as gateway:
        report = gateway.get_cluster(name)
        jobs = gateway.worker_jobs().get(name, [])
        idle_reasons: dict[tuple[str | None, int], str | None] = {}
        for job in jobs:
            submission = job.job_id.schedd, job.job_id.cluster
            if job.status is JobStatus.IDLE and submission not in idle_reasons:
                idle_reasons[submission] = gateway.sync(gateway.schedd.explain_idle, job.job_id)
        selector = gateway.sync(gateway._jobs_selector, name)
        ended = gateway.sync(
            gateway.schedd.history, selector.constraint(), time.time() - RECENT, ENDED_SHOWN
        )
        targets: dict[str, Target | None] = {}
        if report.status is ClusterStatus.RUNNING:
            # The targets are kept by the cluster's scheduler, not the gateway.
            with gateway.connect(name) as cluster:
                targets = cluster.worker_groups
    click.echo(f"cluster {name}: {report.status.name}")
    click.echo(f"jobs: idle/running/held {_counts(jobs)}")
    for group in sorted(set(targets) | {job.group for job in jobs}):
        counts = _counts([job for job in jobs if job.group == group])
        click.echo(f"  group {group:<10} {describe_target(targets.get(group)):<12} {counts}")
    for job in jobs:
        reason = job.hold_reason
        if job.status is JobStatus.IDLE:
            reason = idle_reasons.get((job.job_id.schedd, job.job_id.cluster))
        click.echo(
            f"  {job.job_id:<12} {job.group:<10} {job.status.name.lower()}"
            + (f"  ({reason})" if reason else "")
        )
    if ended:
        click.echo(f"ended in the last {RECENT // 60} minutes (newest first):")
        for done in ended:
            click.echo(f"  {done.describe()}")


@main.command()
@click.argument("name")
@click.argument("n", type=click.IntRange(min=0))
@click.option(
    "--group", "-g", default=None, help="a worker group of the cluster (default: its own)"
)
def scale(name: str, n: int, group: str | None) -> None:
    """Scale cluster NAME (or its worker group) to N worker jobs, and keep it there.

    The target is kept by the cluster's scheduler: an open client of the
    cluster (a notebook) replaces jobs lost later.
    """
    with HTCGateway() as gateway, gateway.connect(name) as cluster:
        cluster.scale(n, worker_group=group)
    where = f"cluster {name}" + (f", group {group}" if group else "")
    click.echo(f"{where}: scaled to {n} worker jobs (the cluster keeps this target)")


@main.command()
@click.argument("name")
def shutdown(name: str) -> None:
    """Remove cluster NAME's jobs and stop it at the gateway."""
    with HTCGateway() as gateway:
        gateway.connect(name).shutdown()
    click.echo(f"cluster {name}: shut down")


@main.command()
def cleanup() -> None:
    """Remove the jobs of clusters the gateway no longer runs."""
    with HTCGateway() as gateway:
        removed = gateway.remove_orphaned_jobs()
    for name, count in removed.items():
        click.echo(f"cluster {name}: removed {count} jobs")
    click.echo(f"{sum(removed.values())} orphaned jobs removed")


def run() -> None:
    try:
        main(standalone_mode=True)
    except (HTCondorError, SettingError, GatewayClusterError, ValueError) as exc:
        raise SystemExit(f"htcdaskgateway: {exc}") from None
