"""Build the HTCondor submit description of a cluster's worker jobs.

Pure functions of the settings and the cluster: nothing here talks to
HTCondor, so the exact description can be previewed and tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .jobs import classad_string
from .naming import (
    CERT_FILE,
    CLUSTER_ATTRIBUTE,
    CREDENTIALS_ROLE,
    GATEWAY_ATTRIBUTE,
    GROUP_ATTRIBUTE,
    KEY_FILE,
    LEASE_ATTRIBUTE,
    ROLE_ATTRIBUTE,
    USER_ATTRIBUTE,
    checked_cluster_name,
    scheduler_sni,
    worker_name_template,
)
from .settings import HTCondorSettings, checked_group_name

CREDENTIAL_FILES = (CERT_FILE, KEY_FILE)


def worker_job_description(
    settings: HTCondorSettings,
    cluster_name: str,
    scheduler_address: str,
    credentials_dir: str,
    user: str,
    gateway_id: str,
    lease: int | None = None,
    schedd: str | None = None,
    group: str | None = None,
) -> dict[str, str]:
    """Submit commands for one worker job of ``cluster_name``, run for ``user``, on ``schedd``.

    ``group`` names the worker group the job belongs to (``GROUP_ATTRIBUTE``);
    None: the cluster's default group, whose jobs carry none.

    The credentials travel only as transferred input files, from
    ``credentials_dir``: the spool directory, on the schedd's host, of the
    cluster's credentials job (``credentials_job_description``). The
    description holds their paths, never their contents. ``lease``
    (seconds) is how long after it was queued the job, while idle or held,
    is removed by the schedd unless a client renews its lease; ``None``
    leaves that to a client holding the cluster's lease.
    """
    checked_cluster_name(cluster_name)
    worker = settings.worker
    arguments = [
        "--scheduler-address", scheduler_address,
        "--sni", scheduler_sni(cluster_name),
        "--name", worker_name_template(schedd),
        "--nthreads", str(worker.nthreads),
        "--memory-limit", str(worker.memory),
        "--death-timeout", f"{worker.death_timeout:g}",
    ]  # fmt: skip
    if worker.host:
        arguments += ["--host", worker.host]
    if worker.contact_address:
        arguments += ["--contact-address", worker.contact_address]
    if worker.lifetime:
        arguments += ["--lifetime", str(worker.lifetime)]
    if worker.dask_resources:
        arguments += ["--resources", " ".join(f"{k}={v:g}" for k, v in worker.dask_resources)]
    if worker.extra_args:
        arguments += ["--", *worker.extra_args]

    description = {
        "universe": worker.universe,
        "executable": worker.executable,
        "transfer_executable": "false",
        "arguments": quote_arguments(arguments),
        "should_transfer_files": "YES",
        # Nothing comes back: a worker's sandbox holds only its credentials
        # and dask's spill files. Naming no output files also spares every
        # job the starter's 1 s pause after input transfer, which it takes
        # only to tell changed output files apart by their mtimes (measured:
        # job running to worker connected 1.35 s -> 0.35 s).
        "transfer_output_files": '""',
        "when_to_transfer_output": "ON_EXIT",
        "leave_in_queue": "false",
        # A removed job's worker is killed outright. Its data has already
        # moved: the client retires workers through the scheduler before it
        # removes their jobs, and at shutdown the data is not needed. dask's
        # own SIGTERM handling adds nothing and can hang until the vacate
        # time runs out (measured: 5 of 10 workers killed only after 10 s).
        "kill_sig": "SIGKILL",
        # Bounds the wait if extra-directives choose a catchable kill_sig.
        "job_max_vacate_time": str(worker.kill_timeout),
        # The slot's claim outlives the job, for the next worker job of this
        # user and shape (0: HTCondor's default, the claim ends with it).
        "keep_claim_idle": str(worker.keep_claim_idle),
        # Not spooled: the shadow reads them from the credentials job's
        # spool when the job starts, so the job is idle the moment it is
        # queued (a spooled job waits on hold for the schedd's 1 s pause
        # after every spool).
        "transfer_input_files": ",".join(f"{credentials_dir}/{name}" for name in CREDENTIAL_FILES),
        # The shadow runs in the job's initial directory on the schedd's
        # host; the submitting machine's own working directory need not
        # exist there ("/" does everywhere, and nothing is written to it).
        "initialdir": "/",
        "request_cpus": str(worker.cores),
        # HTCondor counts memory in MiB and disk in KiB.
        "request_memory": str(math.ceil(worker.memory / 2**20)),
        "request_disk": str(math.ceil(worker.disk / 2**10)),
    }
    if worker.dask_config:
        # HTCondor's environment takes the arguments' quoting ("new" syntax).
        description["environment"] = quote_arguments(
            [f"{dask_environment_name(key)}={value}" for key, value in worker.dask_config]
        )
    if worker.image:
        image_command = "docker_image" if worker.universe == "docker" else "container_image"
        description[image_command] = worker.image
    if worker.gpus:
        # HTCondor assigns the slot's GPUs to the job and sets
        # CUDA_VISIBLE_DEVICES (and _CONDOR_AssignedGPUs) to their ids.
        description["request_gpus"] = str(worker.gpus)
        if worker.require_gpus:
            description["require_gpus"] = worker.require_gpus
    if settings.submit.requirements:
        description["requirements"] = f"({settings.submit.requirements})"
    if group is not None:
        description[f"MY.{GROUP_ATTRIBUTE}"] = classad_string(checked_group_name(group))
    return _owned_and_leased(description, settings, cluster_name, user, gateway_id, lease)


def credentials_job_description(
    settings: HTCondorSettings,
    cluster_name: str,
    credential_files: Sequence[Path],
    user: str,
    gateway_id: str,
    lease: int | None = None,
) -> dict[str, str]:
    """Submit commands for the job that carries ``cluster_name``'s credentials.

    It is submitted with its input spooled and never runs: the schedd keeps
    the files in the job's spool directory (the user's own, 0700) for the
    worker jobs to transfer from, and deletes them when the job leaves the
    queue, which it does with the cluster's worker jobs (same selection,
    same lease).
    """
    checked_cluster_name(cluster_name)
    description = {
        "universe": "vanilla",
        "executable": settings.worker.executable,
        "transfer_executable": "false",
        "should_transfer_files": "YES",
        "transfer_input_files": ",".join(str(p) for p in credential_files),
        "transfer_output_files": '""',
        # Spooled submissions otherwise stay queued after they end.
        "leave_in_queue": "false",
        f"MY.{ROLE_ATTRIBUTE}": classad_string(CREDENTIALS_ROLE),
    }
    description = _owned_and_leased(description, settings, cluster_name, user, gateway_id, lease)
    # Never matched, whatever the extra directives say: it only holds files.
    description["requirements"] = "false"
    return description


def _owned_and_leased(
    description: dict[str, str],
    settings: HTCondorSettings,
    cluster_name: str,
    user: str,
    gateway_id: str,
    lease: int | None,
) -> dict[str, str]:
    description.update(
        {
            "batch_name": settings.submit.batch_name.format(cluster_name=cluster_name),
            f"MY.{CLUSTER_ATTRIBUTE}": classad_string(cluster_name),
            f"MY.{USER_ATTRIBUTE}": classad_string(user),
            f"MY.{GATEWAY_ATTRIBUTE}": classad_string(gateway_id),
            "periodic_remove": _removal_expression(settings, lease),
        }
    )
    if lease:
        # QDate is the schedd's own clock at queueing: no skew with ours.
        # Renewals write the schedd's time as the client last measured it.
        description[f"MY.{LEASE_ATTRIBUTE}"] = f"QDate + {int(lease)}"
    description.update((f"MY.{name}", value) for name, value in settings.submit.attributes)
    # Settings refuse directives that would override the commands above
    # that matter (settings.PROTECTED_COMMANDS).
    description.update(settings.submit.extra_directives)
    return description


def _removal_expression(settings: HTCondorSettings, lease: int | None) -> str:
    # Idle and held jobs (a credentials job held while spooling too, if the
    # client died before sending the input) are removed once their lease is past; jobs with no
    # lease attribute (undefined) never are. Only those: the schedd
    # evaluates them on its own copy of the ad, which the lease renewals
    # edit. A running job's shadow keeps the copy it started with, so
    # running workers end through their scheduler instead (the lapsed
    # lease stops it, and workers exit with it).
    rule = f"(JobStatus == 1 || JobStatus == 5) && {LEASE_ATTRIBUTE} < time()"
    if lease:
        # Renewals reach only idle and held jobs, so a worker that ran for
        # longer than a lease carries the expiry of its idle days. Evicted
        # (preempted, its node drained) it is idle again with that expiry
        # long past: it gets a whole lease from its return before the rule
        # applies, and the next renewal reaches it first.
        rule += f" && time() - EnteredCurrentStatus > {int(lease)}"
    rules = [f"({rule})"]
    lifetime = settings.worker.lifetime
    if lifetime:
        # The worker retires itself at its lifetime; this removes a job that
        # failed to, once its retirement had kill-timeout seconds to finish.
        limit = lifetime + settings.worker.kill_timeout
        rules.append(f"(JobStatus == 2 && time() - EnteredCurrentStatus > {limit})")
    return " || ".join(rules)


def dask_environment_name(key: str) -> str:
    """The environment variable dask reads ``key`` from.

    >>> dask_environment_name("distributed.admin.tick.interval")
    'DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL'
    """
    return "DASK_" + key.upper().replace(".", "__").replace("-", "_")


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
