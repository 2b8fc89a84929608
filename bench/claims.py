"""Kept claims on a production-like pool: cold, warm and adapt's down-then-up (issue 28).

The pool negotiates every 60 s while these run (`production_like_pool()`
lays integration/pool/production-like.conf over the test pool and takes it
away after). Each contender's worker jobs keep their claims ``KEEP``
seconds (HTCondor's ``keep_claim_idle``): ours through
``gateway.htcondor.worker.keep-claim-idle``, dask-jobqueue with
``keep_claim_idle`` in ``job_extra_directives``, plain and as CHTC's
dask-chtc configures it (``JobQueueCHTC``), bare jobs in their submit
description. One round per contender and N (adapt and warm ``SAMPLES``
times in it):

1. **cold**: from a pool with no claim, a new cluster, ``scale(N)`` until N
   workers joined;
2. **adapt**: ``scale(0)`` until its jobs left the queue (what adapt does
   between computations), then ``scale(N)`` until N workers joined;
3. **warm**: the cluster shut down until its jobs left, a new cluster,
   ``scale(N)`` until N workers joined;
4. **idle slot-seconds**: after that cluster's shutdown, the slot-seconds
   its kept claims spend claimed and idle until the pool has no claim.

Each timed run also gives its phases: from the call to the jobs running
(negotiation, or a kept claim) and from running to the workers registered
(start-up), and how many jobs started on a kept claim: on a claim
(``PublicClaimId``) an earlier job of the round held. The schedd reuses a
kept claim without the negotiator and says so ("match ... switching to
job"); ``NumJobMatches`` and ``LastMatchTime`` are set either way.
"""

from __future__ import annotations

import getpass
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

import htcondor2
import measures
import phases
from dask_jobqueue import HTCondorCluster
from dask_jobqueue.htcondor import HTCondorJob
from distributed import Client, LocalCluster
from distributed.security import Security

from htcdaskgateway import HTCGateway, HTCGatewayCluster

KEEP = 60  # seconds each worker job's claim is kept, for every contender
CYCLE = 60  # NEGOTIATOR_INTERVAL of integration/pool/production-like.conf
KINDS = ("cold", "adapt", "warm")
# Adapt's down-then-up and the next cluster are timed this many times per
# round, in a row (each on the claims the one before kept): one sample each
# moved by up to 0.1 s at N=1 between rounds, a tenth of a second being
# what the contenders differ by there.
SAMPLES = 3


def pool_profile(name: str) -> None:
    """The test pool with ``integration/pool/<name>.conf`` laid over it ("test": none)."""
    exit_code, output = measures.in_pool(["/etc/htcdaskgateway/pool/pool-profile", name])
    if exit_code != 0:
        raise RuntimeError(f"pool-profile {name}: {output.decode()}")


@contextmanager
def production_like_pool() -> Iterator[None]:
    """HTCondor's shipped negotiation cycle (60 s) for the ``with`` block."""
    pool_profile("production-like")
    try:
        yield
    finally:
        pool_profile("test")


def unclaimed_pool(limit: float = KEEP + 3 * CYCLE) -> float:
    """Wait until no slot is claimed; the claimed-idle slot-seconds on the way."""
    collector = htcondor2.Collector()
    deadline, last, slot_seconds = time.monotonic() + limit, time.monotonic(), 0.0
    while True:
        slots = collector.query(htcondor2.AdType.Startd, projection=["State", "Activity"])
        now = time.monotonic()
        idle = sum(1 for s in slots if s.get("State") == "Claimed" and s.get("Activity") == "Idle")
        slot_seconds += idle * (now - last)
        last = now
        if slots and all(s.get("State") == "Unclaimed" for s in slots):
            return slot_seconds
        if now > deadline:
            raise TimeoutError(f"slots still claimed {limit:.0f} s after the last job ended")
        time.sleep(1.0)


class Contender(Protocol):
    name: str

    def start(self) -> None: ...  # a new cluster, no workers
    def scale(self, n: int) -> None: ...
    def workers(self) -> int: ...
    def jobs(self) -> str: ...  # constraint: the current cluster's worker jobs
    # Shut down; returns once its jobs left the queue: how many the bench removed.
    def stop(self) -> int: ...
    def close_workers(self) -> int: ...  # close every connected worker; how many


class WithClient:
    """A contender's current cluster and its client; scale() is the cluster's."""

    tag = ""

    def __init__(self) -> None:
        self.cluster: Any = None
        self.client: Client | None = None

    def scale(self, n: int) -> None:
        assert self.cluster is not None
        self.cluster.scale(n)

    def workers(self) -> int:
        assert self.client is not None
        try:
            return measures.connected(self.client)
        except OSError:
            # A dropped connection to the scheduler (see ``left_queued``):
            # the client dials again on the next call.
            return measures.connected(self.client)

    def jobs(self) -> str:
        return f'BenchRun == "{self.tag}"'

    def close_workers(self) -> int:
        assert self.client is not None
        addresses = list(self.client.scheduler_info(n_workers=-1)["workers"])
        if addresses:
            self.client.retire_workers(workers=addresses, close_workers=True)
        return len(addresses)


class Ours(WithClient):
    name = "ours"

    def __init__(self) -> None:
        super().__init__()
        self.gateway = HTCGateway(htcondor={"worker": {"keep-claim-idle": KEEP}})
        self.cluster: HTCGatewayCluster | None = None

    def start(self) -> None:
        self.cluster = self.gateway.new_cluster()
        self.client = self.cluster.get_client()

    def jobs(self) -> str:
        assert self.cluster is not None
        return measures.worker_jobs_of(self.cluster)

    def stop(self) -> int:
        assert self.cluster is not None and self.client is not None
        constraint = f'HTCDaskGatewayCluster == "{self.cluster.name}"'
        self.client.close()
        self.cluster.shutdown()
        measures.until_empty(constraint, "ours shutdown")
        self.cluster = self.client = None
        return 0


class JobQueue(WithClient):
    name = "jobqueue"

    def start(self) -> None:
        self.tag = uuid.uuid4().hex
        self.cluster: HTCondorCluster = measures.jobqueue_cluster(
            self.tag, keep_claim_idle=str(KEEP)
        )
        self.client = Client(self.cluster)

    def stop(self) -> int:
        assert self.cluster is not None and self.client is not None
        for close in (self.client.close, self.cluster.close):
            try:
                close()
            except (AssertionError, OSError) as exc:
                # SpecCluster's close can assert that one of dask-jobqueue's
                # job objects still runs, or lose its scheduler connection;
                # its jobs are then removed by ``left_queued``.
                print(f"  {self.name}: close failed ({exc!r})", file=sys.stderr, flush=True)
        left = left_queued(self, "dask-jobqueue shutdown")
        self.cluster = self.client = None
        return left


class TLSFromSandbox(HTCondorJob):
    """dask-chtc's ``CHTCJob``: the workers' TLS files are their own
    transferred input files, so dask-jobqueue passes them no security
    arguments of its own (which would name the client's paths)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["security"] = None
        super().__init__(*args, **kwargs)


class JobQueueCHTC(JobQueue):
    """dask-jobqueue with what dask-chtc adds that costs per worker on this
    pool: TLS (``protocol="tls://"``), its CA and certificate-with-key sent
    with every job as encrypted input files (``ca.pem``, ``cert.pem``) and
    named on the worker's command line; claims kept; dask-jobqueue's nanny,
    which ``CHTCCluster`` leaves on (two processes per worker: the nanny,
    and the worker it starts). Left out: its docker universe, the
    entrypoint's conda clone and its wait for a forwarded port, which would
    only make its workers slower here."""

    name = "jq-chtc"
    FILES = "/tmp/bench-chtc-tls"  # in the pool's container, where the shadows read them

    def __init__(self) -> None:
        super().__init__()
        self.security = Security.temporary()
        # Where dask-jobqueue writes the in-memory credentials for its jobs
        # (unused by ``TLSFromSandbox``'s workers); set by ``files_in_pool``.
        self.temp = ""

    @contextmanager
    def files_in_pool(self) -> Iterator[None]:
        """The workers' TLS files where the shadows read them, while the rounds run."""
        tls = self.security.get_tls_config_for_role("worker")
        measures.put_in_pool(self.FILES, {
            "ca.pem": tls["ca_file"].encode(),
            "cert.pem": (tls["cert"] + tls["key"]).encode(),
        }, owner=getpass.getuser())  # fmt: skip
        try:
            with tempfile.TemporaryDirectory(prefix="bench-chtc-") as self.temp:
                yield
        finally:
            measures.in_pool(["rm", "-rf", self.FILES])

    def start(self) -> None:
        self.tag = uuid.uuid4().hex
        files = f"{self.FILES}/ca.pem,{self.FILES}/cert.pem"
        self.cluster = measures.jobqueue_cluster(
            self.tag,
            extra_args=[
                "--tls-ca-file",
                "ca.pem",
                "--tls-cert",
                "cert.pem",
                "--tls-key",
                "cert.pem",
            ],
            options={
                "job_cls": TLSFromSandbox,
                "protocol": "tls://",
                "security": self.security,
                "shared_temp_directory": self.temp,
            },
            nanny=True,
            keep_claim_idle=str(KEEP),
            should_transfer_files="YES",
            transfer_input_files=files,
            encrypt_input_files=files,
            transfer_output_files='""',
        )
        self.client = Client(self.cluster)


class BareJobs(WithClient):
    """No tool: N stock ``dask worker`` jobs in one submit; removed to scale down."""

    name = "bare"

    def __init__(self) -> None:
        super().__init__()
        self.schedd = measures.schedd()

    def start(self) -> None:
        self.tag = uuid.uuid4().hex
        self.cluster = LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None)
        self.client = Client(self.cluster)

    def scale(self, n: int) -> None:
        assert self.cluster is not None
        if n == 0:
            self.schedd.act(htcondor2.JobAction.Remove, self.jobs(), "scaled to 0")
            return
        description = measures.bare_worker_jobs(self.cluster.scheduler_address)
        description["keep_claim_idle"] = str(KEEP)
        description["MY.BenchRun"] = f'"{self.tag}"'
        self.schedd.submit(description, count=n)

    def stop(self) -> int:
        assert self.cluster is not None and self.client is not None
        self.scale(0)
        measures.until_empty(self.jobs(), "bare jobs removed")
        self.client.close()
        self.cluster.close()
        self.cluster = self.client = None
        return 0


@dataclass
class Timed:
    seconds: float | None  # None: workers were lost on the way (``lost``)
    to_running: float | None  # median seconds from the call to a job running
    running_to_registered: float | None  # median start-up after that
    on_kept_claims: int  # jobs that started on a claim an earlier job held
    n: int
    lost: int = 0  # workers missing: their jobs left the queue, or the run stalled


def running_claims(constraint: str) -> set[str]:
    """The claims (``PublicClaimId``, its secret part elided) the running jobs hold."""
    ads = measures.schedd().query(constraint, projection=["PublicClaimId", "JobStatus"])
    return {
        str(ad["PublicClaimId"]) for ad in ads if ad.get("JobStatus") == 2 and "PublicClaimId" in ad
    }


# A run whose queued jobs all run, in which neither a worker joined nor a
# job was queued, started or left for this long, has stalled: seen once,
# when dask-jobqueue's cluster had lost its scheduler connection at the
# scale(0) before and queued 8 jobs of 10. An idle job may still wait for
# the negotiator (up to its 60 s cycle), so a run with one is not stalled.
STALLED_AFTER = 60.0


def _until_joined(contender: Contender, n: int, watch: phases.QueueWatch) -> int:
    """Wait until ``n`` workers joined, or until every job still queued has
    its worker after some jobs left (a worker that ended at once ends its
    job, and nothing replaces it), or until the run stalled: how many
    workers are missing then."""
    started = last_change = time.monotonic()
    seen: tuple[int, int] = (-1, -1)
    while (joined := contender.workers()) < n:
        lost = watch.left()
        if lost and joined >= n - lost:
            return lost
        now = time.monotonic()
        jobs = list(watch.seen.values())
        state = (joined, sum(len(times) for times in jobs))
        waiting = any("running" not in times and "left" not in times for times in jobs)
        if state != seen or waiting:
            seen, last_change = state, now
        elif now - last_change > STALLED_AFTER:
            print(f"  {contender.name}: {joined} of {n} workers, nothing changed for "
                  f"{STALLED_AFTER:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
            return n - joined
        if now - started > measures.JOB_TIMEOUT:
            raise TimeoutError(f"{contender.name}: {joined} of {n} after {measures.JOB_TIMEOUT} s")
        time.sleep(phases.POLL)
    return 0


def timed_scale(contender: Contender, n: int, held_before: set[str]) -> Timed:
    """``scale(n)`` until n workers joined, with its phases; ``held_before``
    (the claims earlier jobs of the round held) gains this run's claims."""
    with phases.QueueWatch(contender.jobs()) as watch:
        t0 = time.time()
        started = time.monotonic()
        contender.scale(n)
        lost = _until_joined(contender, n, watch)
        seconds = time.monotonic() - started
    if lost:
        print(f"  {contender.name}: {lost} of {n} jobs left the queue before their workers "
              "stayed joined", file=sys.stderr, flush=True)  # fmt: skip
    claims = running_claims(contender.jobs())
    kept = len(claims & held_before)
    held_before |= claims
    running = [t["running"] - t0 for t in watch.seen.values() if "running" in t]
    to_running = statistics.median(running) if running else None
    start_up = max(0.0, seconds - to_running) if running and not lost else None
    return Timed(None if lost else seconds, to_running, start_up, kept, n, lost)


@dataclass
class Round:
    timed: dict[str, list[Timed]] = field(default_factory=lambda: {k: [] for k in KINDS})
    idle_slot_seconds: float = 0.0
    outlived_jobs: int = 0  # workers still connected after their jobs left
    left_queued: int = 0  # jobs the contender's scale(0) or shutdown did not remove


# dask-jobqueue's cluster asks its own scheduler to retire the workers
# before it removes their jobs; with the nanny (jq-chtc) that connection,
# in the benchmark's own process, was at times broken (a BrokenPipeError
# at scale(0), bench-20261207T062648), and the jobs stayed queued.
# Whatever a contender leaves queued this long after it was told to
# remove it, the bench removes and counts.
REMOVAL_WAIT = 30.0


def left_queued(contender: Contender, what: str) -> int:
    """Wait until the contender's jobs left the queue; remove those still
    there after ``REMOVAL_WAIT``: how many."""
    schedd, deadline = measures.schedd(), time.monotonic() + REMOVAL_WAIT
    while left := len(schedd.query(contender.jobs(), projection=["ClusterId"])):
        if time.monotonic() > deadline:
            break
        time.sleep(measures.POLL)
    if left:
        print(f"  {contender.name}: {left} jobs still queued {REMOVAL_WAIT:.0f} s after "
              f"{what}; removed by the bench", file=sys.stderr, flush=True)  # fmt: skip
        schedd.act(htcondor2.JobAction.Remove, contender.jobs(), "the contender left it queued")
        measures.until_empty(contender.jobs(), what)
    return left


# A worker whose job left is gone within a second, unless its process
# outlived the job: on this pool (no writable cgroup, so HTCondor tracks a
# job's processes by their parents) condor_rm kills dask-jobqueue's
# ``/bin/sh -c`` wrapper and orphans the ``dask worker`` under it, which
# stays connected (seen: at 4 of 5 scale-downs in one probe, for 300 s and
# more in a bench run).
# On a pool with cgroups HTCondor kills the whole job. Ours and the bare
# jobs run the worker as the job's own process.
OUTLIVED_AFTER = 10.0


def _until_no_worker(contender: Contender) -> int:
    """The scheduler has let go of the workers whose jobs left (adapt's next
    look); those that outlived their jobs are closed: how many."""
    outlived, deadline = 0, time.monotonic() + OUTLIVED_AFTER
    while contender.workers():
        now = time.monotonic()
        if not outlived and now > deadline:
            with suppress(OSError):  # a dropped scheduler connection: tried again
                outlived = contender.close_workers()
        if now > deadline + measures.JOB_TIMEOUT:
            raise TimeoutError(f"{contender.name}: workers still connected after scale(0)")
        time.sleep(measures.POLL)
    return outlived


def one_round(contender: Contender, n: int) -> Round:
    result = Round()
    unclaimed_pool()
    held: set[str] = set()
    contender.start()
    try:
        result.timed["cold"] = [timed_scale(contender, n, held)]
        for _ in range(SAMPLES):
            contender.scale(0)
            result.left_queued += left_queued(contender, "scale(0)")
            result.outlived_jobs += _until_no_worker(contender)
            result.timed["adapt"].append(timed_scale(contender, n, held))
    finally:
        result.left_queued += contender.stop()
    for _ in range(SAMPLES):
        contender.start()
        try:
            result.timed["warm"].append(timed_scale(contender, n, held))
        finally:
            result.left_queued += contender.stop()
    result.idle_slot_seconds = unclaimed_pool()
    return result


def run(sizes: list[int], repeats: int) -> dict[str, Any]:
    """Every round, per N and contender, taken in turn; JSON-ready."""
    chtc = JobQueueCHTC()
    contenders: list[Contender] = [Ours(), JobQueue(), chtc, BareJobs()]
    results: dict[str, Any] = {"keep_claim_idle": KEEP, "negotiator_interval": CYCLE}
    with production_like_pool(), chtc.files_in_pool():
        for n in sizes:
            rounds: dict[str, list[Round]] = {c.name: [] for c in contenders}
            for i in range(repeats):
                for contender in contenders:
                    print(f"  claims N={n}: {contender.name} ({i + 1}/{repeats})",
                          file=sys.stderr, flush=True)  # fmt: skip
                    rounds[contender.name].append(one_round(contender, n))
            results[str(n)] = {name: _summary(rs) for name, rs in rounds.items()}
    return results


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _summary(rounds: list[Round]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "idle_slot_seconds": _median([r.idle_slot_seconds for r in rounds]),
        "workers_outlived_jobs": sum(r.outlived_jobs for r in rounds),
        "jobs_left_queued": sum(r.left_queued for r in rounds),
    }
    for kind in KINDS:
        runs = [t for r in rounds for t in r.timed[kind]]
        out[kind] = {
            # Of the runs whose workers all joined: a run that lost some has no time.
            "median": _median([t.seconds for t in runs if t.seconds is not None]),
            "all": [t.seconds for t in runs],
            "lost": {
                "jobs": sum(t.lost for t in runs),
                "runs": sum(1 for t in runs if t.lost),
                "of": len(runs),
            },
            "to_running": _median([t.to_running for t in runs if t.to_running is not None]),
            "start_up": _median(
                [t.running_to_registered for t in runs if t.running_to_registered is not None]
            ),
            "on_kept_claims": f"{sum(t.on_kept_claims for t in runs)}/{sum(t.n for t in runs)}",
        }
    return out


def table(results: dict[str, Any]) -> str:
    lines = [
        f"Kept claims on a pool negotiating every {results['negotiator_interval']} s "
        f"(keep_claim_idle {results['keep_claim_idle']} s): median seconds to N workers;",
        "to running: call to jobs running (negotiation, or a kept claim); start-up: running to "
        "registered; kept: jobs started with no negotiator match",
        f"{'N':>3} {'contender':<9} "
        + " ".join(f"{kind + ' s':>8} {'to run':>7} {'start':>6} {'kept':>6}" for kind in KINDS)
        + f" {'idle slot-s':>11} {'per claim':>9}",
    ]
    for n, per in ((k, v) for k, v in results.items() if k.isdigit()):
        for name, row in per.items():
            cells = []
            for kind in KINDS:
                r = row[kind]
                cells.append(f"{_fmt(r['median']):>8} {_fmt(r['to_running']):>7} "
                             f"{_fmt(r['start_up']):>6} {r['on_kept_claims']:>6}")  # fmt: skip
            idle = row["idle_slot_seconds"]
            per_claim = None if idle is None else idle / int(n)  # the setting bounds this
            lines.append(f"{n:>3} {name:<9} " + " ".join(cells)
                         + f" {_fmt(idle):>11} {_fmt(per_claim):>9}")  # fmt: skip
        for name, row in per.items():
            for kind in KINDS:
                lost = row[kind].get("lost", {})
                if lost.get("jobs"):
                    lines.append(f"    N={n} {name} {kind}: {lost['jobs']} jobs ended as their "
                                 f"workers joined, in {lost['runs']} of {lost['of']} runs "
                                 "(left out of the median)")  # fmt: skip
            if row.get("jobs_left_queued"):
                lines.append(f"    N={n} {name}: {row['jobs_left_queued']} jobs left queued by "
                             "its scale(0) or shutdown (removed by the bench)")  # fmt: skip
            if row.get("workers_outlived_jobs"):
                lines.append(f"    N={n} {name}: {row['workers_outlived_jobs']} workers outlived "
                             "their removed jobs at scale(0) (closed by the bench)")  # fmt: skip
        for kind in ("warm", "adapt"):
            ours = per["ours"][kind]["median"]
            jqs = {name: row[kind]["median"] for name, row in per.items()
                   if name in ("jobqueue", "jq-chtc")}  # fmt: skip
            ratios = [f"ours/{name} {ours / jq:.2f}" for name, jq in jqs.items() if ours and jq]
            lines.append(f"    N={n} {kind}: " + ", ".join(ratios))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
