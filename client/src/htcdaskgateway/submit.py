"""Build the HTCondor submit description of a cluster's worker jobs.

Pure functions of the settings and the cluster: nothing here talks to
HTCondor, so the exact description can be previewed and tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .naming import (
    CLUSTER_ATTRIBUTE,
    WORKER_NAME_TEMPLATE,
    checked_cluster_name,
    scheduler_sni,
)
from .settings import HTCondorSettings


def worker_job_description(
    settings: HTCondorSettings,
    cluster_name: str,
    scheduler_address: str,
    credential_files: Sequence[Path],
) -> dict[str, str]:
    """Submit commands for one worker job of ``cluster_name``.

    The credentials travel only as transferred input files; the description
    itself holds their paths on the submitting side, never their contents.
    """
    checked_cluster_name(cluster_name)
    worker = settings.worker
    arguments = [
        "--scheduler-address", scheduler_address,
        "--sni", scheduler_sni(cluster_name),
        "--name", WORKER_NAME_TEMPLATE,
        "--nthreads", str(worker.nthreads),
        "--memory-limit", str(worker.memory),
        "--death-timeout", f"{worker.death_timeout:g}",
    ]  # fmt: skip
    if worker.host:
        arguments += ["--host", worker.host]
    if worker.extra_args:
        arguments += ["--", *worker.extra_args]

    description = {
        "universe": "vanilla",
        "executable": worker.executable,
        "transfer_executable": "false",
        "arguments": quote_arguments(arguments),
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT_OR_EVICT",
        # Spooled (remote) submissions otherwise stay in the queue after they
        # end, waiting for their output to be fetched; workers have none.
        "leave_in_queue": "false",
        # A worker asked to stop while it is still registering can hang in
        # its graceful close; bound the wait before HTCondor kills it.
        "job_max_vacate_time": str(worker.kill_timeout),
        "transfer_input_files": ",".join(str(p) for p in credential_files),
        "request_cpus": str(worker.cores),
        # HTCondor counts memory in MiB and disk in KiB.
        "request_memory": str(math.ceil(worker.memory / 2**20)),
        "request_disk": str(math.ceil(worker.disk / 2**10)),
        "batch_name": settings.submit.batch_name.format(cluster_name=cluster_name),
        f"MY.{CLUSTER_ATTRIBUTE}": f'"{cluster_name}"',
    }
    description.update(settings.submit.extra_directives)
    return description


def quote_arguments(args: Sequence[str]) -> str:
    """Quote ``args`` in HTCondor's "new" argument syntax.

    >>> quote_arguments(["--name", "a b", "it's", 'say "hi"'])
    '"--name \\'a b\\' \\'it\\'\\'s\\' \\'say ""hi""\\'"'
    """
    quoted = []
    for arg in args:
        arg = arg.replace('"', '""')
        if not arg or any(c in arg for c in " \t'"):
            arg = "'" + arg.replace("'", "''") + "'"
        quoted.append(arg)
    return '"' + " ".join(quoted) + '"'
