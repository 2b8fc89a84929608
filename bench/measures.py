"""One measurement each: the pool's floor, ours and dask-jobqueue's, side by side.

Every function returns seconds (and, where plotted, a timeline of
``(seconds since start, count)``) and leaves no job behind.
"""

from __future__ import annotations

import io
import os
import random
import statistics
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dask
import htcondor2
import numpy as np
import phases
import psutil
from dask.utils import parse_bytes
from dask_jobqueue import HTCondorCluster
from distributed import Client, LocalCluster

from htcdaskgateway import HTCGateway, HTCGatewayCluster

POLL = 0.1  # seconds between looks at the queue or the scheduler
# P2's look at the queue: its target (0.1 s) is the size of POLL, so a
# coarser look would measure the look, not the call.
P2_POLL = 0.005
# A notebook user's next cell: the cluster has started its own
# background work (ours spools the cluster's credentials once) before
# scale() is called. The first call right after new_cluster() is
# measured too, apart (``p2_ours(settle=0)``).
SETTLE = 1.0
_PHASE = random.Random(14)
# Job sizes of all three contenders; ours takes them from the analyst
# container's dask config (docker-compose.yml), which says the same.
WORKER_MEMORY = "1 GiB"
WORKER_DISK = "100 MiB"
JOB_TIMEOUT = 300.0
# Every measure here but claims.py's starts from a pool with no claim
# (cold_pool()): ours keeps none after its jobs, as dask-jobqueue by
# default, so that the next run does not wait for kept claims to lapse.
NO_KEPT_CLAIMS: dict[str, Any] = {"worker": {"keep-claim-idle": 0}}


@dataclass
class Run:
    seconds: float
    timeline: list[tuple[float, int]] = field(default_factory=list)
    cpu_seconds: float = 0.0  # the whole machine's busy CPU seconds over ``seconds``


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot.

    /proc/stat is not namespaced: every container of the stack (schedd,
    shadows, starters, workers, scheduler, proxy, client) shares this
    kernel, so the difference over a run is all the work that run caused.
    """
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, stat.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


@contextmanager
def timed() -> Iterator[Run]:
    """A Run whose seconds and busy CPU seconds cover the ``with`` block."""
    run = Run(0.0)
    started, busy = time.monotonic(), busy_cpu_seconds()
    try:
        yield run
    finally:
        run.seconds = time.monotonic() - started
        run.cpu_seconds = busy_cpu_seconds() - busy


def schedd() -> htcondor2.Schedd:
    return htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))


def _count(constraint: str, status: int | None = None) -> int:
    ads = schedd().query(constraint, projection=["JobStatus"])
    return sum(1 for ad in ads if status is None or ad["JobStatus"] == status)


def until(count: Callable[[], int], n: int, what: str, poll: float = POLL) -> Run:
    """Poll ``count`` from now until it reaches ``n``; the timeline is kept."""
    started = time.monotonic()
    timeline = [(0.0, count())]
    while timeline[-1][1] < n:
        if time.monotonic() - started > JOB_TIMEOUT:
            raise TimeoutError(f"{what}: {timeline[-1][1]} of {n} after {JOB_TIMEOUT} s")
        time.sleep(poll)
        timeline.append((time.monotonic() - started, count()))
    return Run(time.monotonic() - started, timeline)


def until_empty(constraint: str, what: str) -> float:
    started = time.monotonic()
    while _count(constraint):
        if time.monotonic() - started > JOB_TIMEOUT:
            raise TimeoutError(f"{what}: jobs still queued after {JOB_TIMEOUT} s")
        time.sleep(POLL)
    return time.monotonic() - started


def cold_pool() -> None:
    """Wait until no slot is claimed, so that the next run starts from a cold pool.

    The schedd keeps a removed job's claim for a moment and starts another
    job of the same user on it without negotiating: a run right after
    another would measure that reuse (measured: floor N=1 0.5 s instead of
    1.6 s), and only for whichever contender came next.
    """
    collector = htcondor2.Collector()
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        slots = collector.query(htcondor2.AdType.Startd, projection=["State"])
        if slots and all(slot.get("State") == "Unclaimed" for slot in slots):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("slots still claimed after the previous run")
        time.sleep(POLL)
    time.sleep(1.0)  # the startd's ad reaches the collector every UPDATE_INTERVAL (1 s)
    # Negotiation runs in 1 s cycles: a run that starts at a fixed time after
    # the one before would meet the cycle at the same phase each time, early
    # for one contender and late for another. A random wait gives each the
    # same spread of phases.
    time.sleep(_PHASE.uniform(0.0, 1.0))


@contextmanager
def schedd_asked(constraint: str) -> Iterator[None]:
    """Ask the schedd about the run's jobs every POLL seconds, as the floor's wait does.

    An idle schedd runs its queue scan (which sends the submitter's ad and
    the reschedule to the negotiator) late after a submit, as if its timers
    were in whole seconds; a schedd that is asked something wakes on time.
    Measured here, bare jobs nobody asks about ran 1.05 or 2.05 s after
    submit (6 of 6), and 0.1-0.9 s when the queue was polled. The floor
    must poll the queue to see its jobs run, while ours and dask-jobqueue
    are timed at their scheduler: each P1 run of theirs gets the same
    question about its jobs, so that no contender's schedd sleeps longer.
    The run's clock starts once the asker is asking: its own start (a
    Python process importing the bindings, 0.3-0.5 s) is no contender's.
    """
    # A process of its own: dask-jobqueue's scheduler runs in this one, and
    # the bindings' calls would take turns with it for the GIL.
    asker = subprocess.Popen(
        [sys.executable, "-c", _ASK_SCHEDD, constraint, str(POLL)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert asker.stdout is not None
        asker.stdout.readline()  # its first question is answered: it is asking
        yield
    finally:
        asker.terminate()
        asker.wait()


_ASK_SCHEDD = """
import sys, time
import htcondor2
schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
constraint, poll = sys.argv[1], float(sys.argv[2])
schedd.query(constraint, projection=["JobStatus"])
print("asking", flush=True)
while True:
    time.sleep(poll)
    schedd.query(constraint, projection=["JobStatus"])
"""


def _bare_jobs(executable: str, arguments: str, batch_name: str) -> htcondor2.Submit:
    """Jobs of a worker's size that run ``executable`` with no tool around them."""
    return htcondor2.Submit(
        {
            "executable": executable,
            "arguments": arguments,
            "transfer_executable": "false",
            "request_cpus": "1",
            "request_memory": str(parse_bytes(WORKER_MEMORY) // 2**20),  # MiB
            "request_disk": str(parse_bytes(WORKER_DISK) // 1024),  # KiB
            "batch_name": batch_name,
            # The execute node has no copy of the submitter's working directory.
            "initialdir": "/tmp",
            "leave_in_queue": "false",
        }
    )


@contextmanager
def _removed_after(what: str) -> Iterator[Callable[[htcondor2.Submit, int], str]]:
    """A function that submits jobs in one transaction (their constraint); all removed after."""
    queue = schedd()
    submitted: list[str] = []

    def submit(description: htcondor2.Submit, n: int) -> str:
        submitted.append(f"ClusterId == {queue.submit(description, count=n).cluster()}")
        return submitted[-1]

    try:
        yield submit
    finally:
        for constraint in submitted:
            queue.act(htcondor2.JobAction.Remove, constraint, "benchmark done")
            until_empty(constraint, f"{what} cleanup")


def floor(n: int) -> Run:
    """Submit ``n`` bare sleep jobs (same size as a worker) until all are running."""
    cold_pool()
    with _removed_after("floor") as submit, timed() as run:
        jobs = submit(_bare_jobs("/bin/sleep", "600", "bench-floor"), n)
        run.timeline = until(lambda: _count(jobs, status=2), n, "floor").timeline
    return run


BARE_WORKERS_BATCH = "bench-bare-workers"


def bare_worker_jobs(scheduler_address: str) -> htcondor2.Submit:
    """Jobs that each run a stock ``dask worker`` for ``scheduler_address`` (no tool)."""
    arguments = (
        f"-m distributed.cli.dask_worker {scheduler_address} --no-nanny "
        f"--nthreads 1 --memory-limit {parse_bytes(WORKER_MEMORY)} --host 127.0.0.1 "
        "--no-dashboard --death-timeout 60 --name bare-$(Cluster).$(Process)"
    )
    return _bare_jobs(sys.executable, arguments, BARE_WORKERS_BATCH)


def bare_workers(n: int) -> Run:
    """Submit ``n`` stock ``dask worker`` jobs in one transaction until all joined a bare scheduler.

    No tool at all: the least any tool that starts dask workers on this
    pool can take. The scheduler runs in this process, as dask-jobqueue's
    does; the workers are the same process as dask-jobqueue's (no nanny,
    loopback, the same Python) and the run gets the same schedd asker.
    """
    with (
        LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        description = bare_worker_jobs(cluster.scheduler_address)
        cold_pool()
        # The clock starts before the asker knows the jobs' cluster: it asks
        # about this batch, which only this run's jobs carry.
        with (
            _removed_after("bare workers") as submit,
            schedd_asked(f'JobBatchName == "{BARE_WORKERS_BATCH}"'),
            timed() as run,
        ):
            submit(description, n)
            run.timeline = until(lambda: connected(client), n, "bare workers").timeline
        return run


def worker_jobs_of(cluster: HTCGatewayCluster) -> str:
    """Constraint matching the cluster's worker jobs (not its credentials job)."""
    return f'HTCDaskGatewayCluster == "{cluster.name}" && HTCDaskGatewayRole =?= undefined'


def connected(client: Client) -> int:
    return len(client.scheduler_info(n_workers=-1)["workers"])


@contextmanager
def ours(**htcondor: object) -> Iterator[HTCGatewayCluster]:
    with HTCGateway(htcondor=dask.config.merge(NO_KEPT_CLAIMS, htcondor)) as gateway:
        cluster = gateway.new_cluster()
        try:
            yield cluster
        finally:
            constraint = f'HTCDaskGatewayCluster == "{cluster.name}"'
            cluster.shutdown()
            until_empty(constraint, "ours cleanup")


def jobqueue_cluster(
    tag: str,
    extra_args: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
    nanny: bool = False,
    **extra_directives: str,
) -> HTCondorCluster:
    """dask-jobqueue's cluster on the same pool, its jobs tagged ``BenchRun == tag``.

    ``extra_args`` go to each ``dask worker``, ``options`` to ``HTCondorCluster``.
    Without ``nanny`` each worker is one process, as ours.
    """
    return HTCondorCluster(
        cores=1,
        memory=WORKER_MEMORY,
        disk=WORKER_DISK,
        # Loopback and the same Python as ours.
        nanny=nanny,
        scheduler_options={"host": "127.0.0.1", "dashboard_address": None},
        worker_extra_args=["--host", "127.0.0.1", "--no-dashboard", *extra_args],
        **(options or {}),
        job_extra_directives={
            "initialdir": "/tmp",
            "leave_in_queue": "false",
            "MY.BenchRun": f'"{tag}"',
            **extra_directives,
        },
    )


@contextmanager
def jobqueue(**extra_directives: str) -> Iterator[tuple[HTCondorCluster, str]]:
    """A dask-jobqueue cluster on the same pool, and a constraint matching its jobs."""
    tag = uuid.uuid4().hex
    cluster = jobqueue_cluster(tag, **extra_directives)
    constraint = f'BenchRun == "{tag}"'
    try:
        yield cluster, constraint
    finally:
        try:
            cluster.close()
        except AssertionError as exc:
            # SpecCluster's close sometimes finds one of dask-jobqueue's job
            # objects still "running" and asserts (seen once in a phases run
            # at N=30); its jobs are then removed here, so the next run
            # starts from an empty pool as the others do.
            print(f"  dask-jobqueue's close failed ({exc!r}); removing its jobs", file=sys.stderr)
            schedd().act(htcondor2.JobAction.Remove, constraint, "benchmark done")
        until_empty(constraint, "dask-jobqueue cleanup")


def p1_ours(n: int) -> Run:
    with ours() as cluster:
        client = cluster.get_client()
        jobs = worker_jobs_of(cluster)
        cold_pool()
        with schedd_asked(jobs), timed() as run:
            cluster.scale(n)
            run.timeline = until(lambda: connected(client), n, "ours").timeline
        client.close()
        return run


def p1_jobqueue(n: int) -> Run:
    with jobqueue() as (cluster, jobs), Client(cluster) as client:
        cold_pool()
        with schedd_asked(jobs), timed() as run:
            cluster.scale(n)
            run.timeline = until(lambda: connected(client), n, "dask-jobqueue").timeline
        return run


NEVER_STARTS = "False"


def p2_ours(n: int, settle: float = SETTLE) -> float:
    """Wall time of ``scale(n)`` until all n jobs are in the queue (none can start).

    ``settle`` seconds pass between ``new_cluster()`` and the call.
    """
    with ours(submit={"requirements": NEVER_STARTS}) as cluster:
        constraint = worker_jobs_of(cluster)
        time.sleep(settle)
        started = time.monotonic()
        cluster.scale(n)
        until(lambda: _count(constraint), n, "ours queued", P2_POLL)
        return time.monotonic() - started


def p2_floor(n: int) -> float:
    """Submit ``n`` bare jobs that cannot start in one transaction until all are queued."""
    description = _bare_jobs("/bin/sleep", "600", "bench-p2-floor")
    description["requirements"] = NEVER_STARTS
    with _removed_after("p2 floor") as submit:
        started = time.monotonic()
        jobs = submit(description, n)
        until(lambda: _count(jobs), n, "p2 floor", P2_POLL)
        return time.monotonic() - started


def import_floor(times: int) -> list[tuple[float, float]]:
    """Wall and CPU seconds of a fresh ``python -c "import distributed"`` inside a worker job.

    The least any dask worker process spends before it can even start,
    in the workers' own environment (their Python, their job's sandbox).
    """

    def timed_import() -> tuple[float, float]:  # nested: the worker cannot import this module
        import resource
        import subprocess
        import sys
        import time

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import distributed"], check=True)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    with ours() as cluster:
        cluster.scale(1)
        client = cluster.get_client()
        client.wait_for_workers(1, timeout=JOB_TIMEOUT)
        (worker,) = client.scheduler_info(n_workers=-1)["workers"]
        tries = [client.run(timed_import, workers=[worker])[worker] for _ in range(times)]
        client.close()
        return [(float(wall), float(cpu)) for wall, cpu in tries]


def p2_jobqueue(n: int) -> float:
    with jobqueue(requirements=NEVER_STARTS) as (cluster, constraint):
        time.sleep(SETTLE)
        started = time.monotonic()
        cluster.scale(n)  # returns at once; the condor_submit calls run after it
        until(lambda: _count(constraint), n, "dask-jobqueue queued", P2_POLL)
        return time.monotonic() - started


def _pool_container() -> Any:
    import docker

    (pool,) = docker.from_env().containers.list(
        filters={"label": "com.docker.compose.service=pool"}
    )
    return pool


def in_pool(command: list[str]) -> tuple[int, bytes]:
    """Run ``command`` in the pool's container (via the docker API): exit code, output."""
    result = _pool_container().exec_run(command)
    return result.exit_code, result.output


def put_in_pool(directory: str, files: dict[str, bytes], owner: str) -> None:
    """Write ``files`` (name -> content) into ``directory`` in the pool, readable
    by ``owner`` alone (the user whose jobs' shadows read them)."""
    ids = [int(in_pool(["id", flag, owner])[1]) for flag in ("-u", "-g")]
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        folder = tarfile.TarInfo(directory.strip("/"))
        folder.type, folder.mode = tarfile.DIRTYPE, 0o700
        folder.uid, folder.gid = ids
        tar.addfile(folder)
        for name, content in files.items():
            entry = tarfile.TarInfo(f"{directory.strip('/')}/{name}")
            entry.size, entry.mode = len(content), 0o600
            entry.uid, entry.gid = ids
            tar.addfile(entry, io.BytesIO(content))
    _pool_container().put_archive("/", archive.getvalue())


def _pool_bytes(path: str) -> int:
    """Bytes under ``path`` in the pool's container (the schedd's spool)."""
    _, output = in_pool(["du", "-sb", path])
    return int(output.split()[0])


def _rss_mb(*processes: psutil.Process) -> float:
    return sum(p.memory_info().rss for p in processes) / 2**20


def p6_ours(n: int) -> dict[str, float]:
    """Facility scale: ``scale(n)`` of jobs that stay idle, the watcher's look at them,
    ``scale(0)``, ``shutdown()``; client memory and schedd spool around it."""
    me = psutil.Process()
    with ours(submit={"requirements": NEVER_STARTS}, **{"max-jobs": n}) as cluster:
        constraint = worker_jobs_of(cluster)
        cluster.scale(1)  # the client's helper process and credentials job exist from here
        until(lambda: _count(constraint), 1, "first job queued")
        cluster.scale(0)
        until_empty(constraint, "first job removed")
        helpers = [
            c for c in me.children(recursive=True) if "helper_process" in " ".join(c.cmdline())
        ]
        rss_before = _rss_mb(me, *helpers)
        spool_before = _pool_bytes("/var/spool/condor")

        started = time.monotonic()
        cluster.scale(n)
        returned = time.monotonic() - started
        until(lambda: _count(constraint), n, f"{n} queued")
        queued = time.monotonic() - started
        spool_after = _pool_bytes("/var/spool/condor")

        looks = []
        for _ in range(5):
            t0 = time.monotonic()
            jobs = cluster.worker_jobs()  # what the watcher does every watch-interval
            looks.append(time.monotonic() - t0)
        if len(jobs) != n:
            raise AssertionError(f"the watcher saw {len(jobs)} of {n} jobs")
        rss_full = _rss_mb(me, *helpers)

        started = time.monotonic()
        cluster.scale(0)
        until_empty(constraint, f"scale(0) of {n}")
        emptied = time.monotonic() - started
        rss_after = _rss_mb(me, *helpers)
        started = time.monotonic()
    shut = time.monotonic() - started
    return {
        "n": n,
        "scale_returned_s": returned,
        "all_queued_s": queued,
        "watcher_look_s": statistics.median(looks),
        "scale0_empty_s": emptied,
        "shutdown_s": shut,
        "client_rss_before_mb": rss_before,
        "client_rss_at_n_mb": rss_full,
        "client_rss_after_mb": rss_after,
        "spool_bytes_per_job": (spool_after - spool_before) / n,
    }


@dataclass
class DataPath:
    throughput_mb_s: float
    round_trip_ms: float


def _data_path(client: Client, megabytes: int, chunk_mb: int, round_trips: int) -> DataPath:
    chunks = [np.random.bytes(chunk_mb * 2**20) for _ in range(megabytes // chunk_mb)]
    started = time.monotonic()
    futures = client.scatter(chunks, direct=False)
    back = client.gather(futures, direct=False)
    elapsed = time.monotonic() - started
    if back != chunks:
        raise AssertionError("data came back different")
    del futures
    latencies = []
    for i in range(round_trips):
        t0 = time.monotonic()
        if client.submit(int.__add__, i, 1, pure=False).result() != i + 1:
            raise AssertionError("wrong result")
        latencies.append(time.monotonic() - t0)
    return DataPath(2 * megabytes / elapsed, 1000 * statistics.median(latencies))


def p3(megabytes: int, chunk_mb: int, round_trips: int) -> tuple[DataPath, DataPath]:
    """The same scheduler and worker, reached through the gateway's proxy and directly."""
    with ours() as cluster:
        cluster.scale(1)
        proxied = cluster.get_client()
        cluster.wait_for_workers(1, timeout=JOB_TIMEOUT)
        direct_address = proxied.scheduler_info()["address"]
        through_proxy = _data_path(proxied, megabytes, chunk_mb, round_trips)
        with Client(direct_address, security=cluster.security) as direct:
            straight = _data_path(direct, megabytes, chunk_mb, round_trips)
        proxied.close()
        return through_proxy, straight


def p4_ours(n: int) -> float:
    """``shutdown()`` until the queue holds none of the cluster's jobs."""
    with HTCGateway(htcondor=NO_KEPT_CLAIMS) as gateway:
        cluster = gateway.new_cluster()
        constraint = f'HTCDaskGatewayCluster == "{cluster.name}"'
        cluster.scale(n)
        cluster.wait_for_workers(n, timeout=JOB_TIMEOUT)
        started = time.monotonic()
        cluster.shutdown()
        until_empty(constraint, "ours shutdown")
        return time.monotonic() - started


def p4_jobqueue(n: int) -> float:
    with jobqueue() as (cluster, constraint), Client(cluster) as client:
        cluster.scale(n)
        client.wait_for_workers(n, timeout=JOB_TIMEOUT)
        started = time.monotonic()
        client.close()
        cluster.close()
        until_empty(constraint, "dask-jobqueue shutdown")
        return time.monotonic() - started


def phases_ours(n: int) -> dict[str, float | None]:
    """``scale(n)`` with the queue watched: when jobs and workers reach each phase."""
    with ours() as cluster:
        client = cluster.get_client()
        cold_pool()
        with phases.QueueWatch(worker_jobs_of(cluster)) as watch:
            t0 = time.time()
            cluster.scale(n)
            returned = time.time()
            until(lambda: connected(client), n, "ours")
        result = phases.breakdown(t0, returned, watch, client)
        client.close()
        return result


def phases_jobqueue(n: int) -> dict[str, float | None]:
    with jobqueue() as (cluster, constraint), Client(cluster) as client:
        cold_pool()
        with phases.QueueWatch(constraint) as watch:
            t0 = time.time()
            cluster.scale(n)
            returned = time.time()
            until(lambda: connected(client), n, "dask-jobqueue")
        return phases.breakdown(t0, returned, watch, client)
