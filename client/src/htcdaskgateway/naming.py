"""Names shared by the client, the worker jobs and the scheduler plugin.

A worker is named after its HTCondor job and schedd
(``htc-<ClusterId>.<ProcId>@<schedd>``) so that a worker in the scheduler
and a job in the queue are one identity.
"""

import re

WORKER_NAME_PREFIX = "htc-"
# An HTCondor job id, "<ClusterId>.<ProcId>", with "@<schedd name>" where
# the schedd is known (jobs.JobId). Here, not in jobs.py: worker jobs import
# this module and have no dask_gateway.
JOB_ID = re.compile(r"(\d+)\.(\d+)(?:@(\S+))?")


def worker_name_template(schedd: str | None) -> str:
    """A worker's name as a submit macro, expanded by the schedd for each job:
    ``htc-<ClusterId>.<ProcId>@<schedd>`` (job ids are unique per schedd)."""
    local = WORKER_NAME_PREFIX + "$(ClusterId).$(ProcId)"
    return local if schedd is None else f"{local}@{schedd}"


# ClassAd attribute that ties a job to its gateway cluster.
CLUSTER_ATTRIBUTE = "HTCDaskGatewayCluster"
# ClassAd attribute naming the gateway whose cluster the job serves
# (gateway.htcondor.gateway-id): cleanup judges only its own gateway's jobs.
GATEWAY_ATTRIBUTE = "HTCDaskGatewayGateway"
# ClassAd attribute naming the gateway user the job works for.
USER_ATTRIBUTE = "HTCDaskGatewayUser"
# ClassAd attribute naming the worker group of a job (cluster.add_worker_group);
# jobs of the cluster's default group have none.
GROUP_ATTRIBUTE = "HTCDaskGatewayGroup"
# ClassAd attribute holding the epoch second the client lease ends; an idle
# job past it is removed by the schedd (see submit.py).
LEASE_ATTRIBUTE = "HTCDaskGatewayLeaseExpiry"
# ClassAd attribute marking a cluster's job that is not a worker; worker
# jobs have none. CREDENTIALS_ROLE: the job that carries the cluster's
# credentials in its spool for the worker jobs (credentials_job.py).
ROLE_ATTRIBUTE = "HTCDaskGatewayRole"
CREDENTIALS_ROLE = "credentials"
# File names of the cluster's credentials inside the job's sandbox.
CERT_FILE = "dask.crt"
KEY_FILE = "dask.pem"

_CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_htcondor_worker(name: object) -> bool:
    """Named ``htc-<job id>``: a worker of one of the cluster's jobs."""
    return job_id_of_worker(name) is not None


def worker_name(job_id: str) -> str:
    return WORKER_NAME_PREFIX + job_id


def job_id_of_worker(name: object) -> str | None:
    """The job id in an HTCondor worker's name, ``None`` for other workers.

    A worker that merely starts with the prefix (``htc-debug``, someone's
    test) is not one: it has no job to count, retire or remove.
    """
    if not isinstance(name, str) or not name.startswith(WORKER_NAME_PREFIX):
        return None
    job_id = name.removeprefix(WORKER_NAME_PREFIX)
    return job_id if JOB_ID.fullmatch(job_id) else None


def scheduler_sni(cluster_name: str) -> str:
    """The TLS server name the gateway's proxy routes to this cluster's scheduler."""
    return "daskgateway-" + cluster_name


def checked_cluster_name(name: str) -> str:
    # Cluster names go into ClassAd string literals and constraints; the
    # gateway only issues names of this shape, so anything else is refused.
    # fullmatch: "$" would let a trailing newline through.
    if not isinstance(name, str) or not _CLUSTER_NAME.fullmatch(name):
        # Imported here: worker jobs import this module, and errors.py
        # imports dask_gateway's client, which a worker never needs.
        from .errors import SettingError

        raise SettingError(f"Not a dask-gateway cluster name: {name!r}")
    return name
