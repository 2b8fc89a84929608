"""Where the time from ``scale(N)`` to N connected workers goes.

For each job: when it was first in the queue, when it was first idle (for
ours: its input spooled, the hold released), when it first ran (the schedd
started its shadow), when it began executing (its input in the sandbox,
the starter about to run it: the pool's event log); for each worker: when
its process started (``psutil`` on the worker) and when the scheduler
registered it (the scheduler's "add-worker" event). The queue is
polled every ``POLL`` seconds from a thread, which adds load to the schedd:
phase runs are separate from the timed P1 runs. Everything here runs on
one machine, so all clocks are the same clock.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import htcondor2
import psutil
from distributed import Client

POLL = 0.02
PHASES = (
    "scale returned", "queued", "idle", "running", "executing", "process started", "registered",
)  # fmt: skip
# The pool's job event log as the analyst container mounts it
# (docker-compose.yml); the test pool writes its times to the millisecond.
EVENT_LOG = Path(os.environ.get("BENCH_POOL_EVENT_LOG", "/pool-log/EventLog"))
COLUMNS = (*PHASES, "worker cpu")


@dataclass
class QueueWatch:
    """First epoch second each job was seen queued, idle and running."""

    constraint: str
    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> QueueWatch:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def left(self) -> int:
        """How many of the jobs seen have since left the queue."""
        return sum(1 for times in list(self.seen.values()) if "left" in times)

    def _poll(self) -> None:
        schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
        while not self._stop.is_set():
            ads = schedd.query(self.constraint, projection=["ClusterId", "ProcId", "JobStatus"])
            now = time.time()
            queued = set()
            for ad in ads:
                job = f"{ad['ClusterId']}.{ad['ProcId']}"
                queued.add(job)
                times = self.seen.setdefault(job, {})
                times.setdefault("queued", now)
                state = {1: "idle", 2: "running"}.get(ad["JobStatus"])
                if state:
                    times.setdefault(state, now)
            for job in self.seen.keys() - queued:
                self.seen[job].setdefault("left", now)
            self._stop.wait(POLL)


def executing_times(jobs: Iterable[str]) -> list[float]:
    """Epoch seconds each of ``jobs`` ("cluster.proc") first began executing.

    From the pool's event log: its execute event is written once the job's
    input files are in its sandbox, as the starter runs the job. The test
    pool writes event times in UTC to the millisecond
    (integration/pool/test-pool.conf); a pool without its event log gives none.
    """
    wanted = set(jobs)
    first: dict[str, float] = {}
    # The log is rotated at 1 MB (EVENT_LOG_MAX_SIZE): a run's events may
    # span the rotated file and the current one.
    rotated = EVENT_LOG.with_name(EVENT_LOG.name + ".old")
    for path in (rotated, EVENT_LOG):
        if not path.exists():
            continue
        for event in htcondor2.JobEventLog(str(path)).events(stop_after=0):
            job = f"{event.cluster}.{event.proc}"
            if event.type == htcondor2.JobEventType.EXECUTE and job in wanted:
                stamp = datetime.fromisoformat(event["EventTime"])
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=UTC)
                first.setdefault(job, stamp.timestamp())
    return list(first.values())


def _create_time_offset() -> float:
    """What to add to psutil's process start times to get ``time.time()``'s clock.

    psutil derives them from the kernel's boot time, which it reads in whole
    seconds; every process of this machine (the containers share the
    kernel) is off by the same amount, measured here on a fresh process.
    """
    child = subprocess.Popen(["sleep", "5"])
    try:
        started = time.time()
        return started - psutil.Process(child.pid).create_time()
    finally:
        child.kill()
        child.wait()


def worker_times(client: Client) -> tuple[list[float], list[float], list[float]]:
    """Epoch seconds each worker's process started and was registered, and its CPU seconds."""

    def process_started_and_cpu() -> tuple[float, float]:
        import psutil

        process = psutil.Process()
        cpu = process.cpu_times()
        return process.create_time(), cpu.user + cpu.system

    offset = _create_time_offset()
    answers = list(client.run(process_started_and_cpu).values())
    started = [t + offset for t, _ in answers]
    cpu = [c for _, c in answers]
    registered = [
        stamp
        for stamp, message in client.get_events("all")
        if isinstance(message, dict) and message.get("action") == "add-worker"
    ]
    return started, registered, cpu


def breakdown(
    t0: float, returned: float, watch: QueueWatch, client: Client
) -> dict[str, float | None]:
    """Median seconds since ``t0`` (the scale call) at which each phase was reached.

    Also ``worker cpu``: the median CPU seconds a worker process had used
    by the time all had registered (its imports, start and registration).
    """
    started, registered, cpu = worker_times(client)
    per_phase: dict[str, list[float]] = {
        "queued": [t["queued"] for t in watch.seen.values() if "queued" in t],
        "idle": [t["idle"] for t in watch.seen.values() if "idle" in t],
        "running": [t["running"] for t in watch.seen.values() if "running" in t],
        "executing": executing_times(watch.seen),
        "process started": started,
        "registered": registered,
    }
    result: dict[str, float | None] = {"scale returned": returned - t0}
    for phase, stamps in per_phase.items():
        result[phase] = statistics.median(stamps) - t0 if stamps else None
    result["worker cpu"] = statistics.median(cpu) if cpu else None
    return result


def median_of(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Each phase's median over several runs (a phase missing in a run is left out)."""
    result: dict[str, float | None] = {}
    for column in COLUMNS:
        seen = [value for run in runs if (value := run.get(column)) is not None]
        result[column] = statistics.median(seen) if seen else None
    return result


def table(rows: dict[int, dict[str, dict[str, float | None]]]) -> str:
    """Median seconds since scale() at which each phase is reached, per N and contender."""
    lines = [
        "Phases of scale(N): median seconds since the call at which jobs/workers reached each",
        "(each run's median over its jobs, then the median over the runs);",
        "worker cpu: median CPU seconds of a worker process from its start to registration",
        f"{'N':>4} {'who':<9} " + " ".join(f"{phase:>15}" for phase in COLUMNS),
    ]
    for n, contenders in rows.items():
        for who, phases in contenders.items():
            cells = " ".join(
                f"{'-' if phases.get(p) is None else format(phases[p], '.2f'):>15}" for p in COLUMNS
            )
            lines.append(f"{n:>4} {who:<9} {cells}")
    return "\n".join(lines)
