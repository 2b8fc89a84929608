"""The soak: a running analysis on the compose stack while a facility's ordinary events hit it.

    python integration/soak.py --minutes 60        (in the analyst container; `make soak`)

One cluster, as an analyst runs it: persisted data on HTCondor workers,
computations checked against results known in advance, scale and adapt
changes from the notebook (this process) and from the CLI, and a second
client process connected to the same cluster. Meanwhile, one at a time and
at random, the events a production pool has every day: the schedd and the
collector restarted, the pool paused, the gateway's API server and its
proxy restarted, workers evicted and killed, the second client SIGKILLed
and a new one connecting. After each, the time until the cluster is back at
its target counts as that event's recovery.

At the end it shuts the cluster down and prints: computations checked,
wrong results, lost results (raised or not back in time), live clusters
stopped, jobs or credentials left in the queue, the worst recovery and the
events by kind. Exit status 1 if any of the counts that must be 0 is not.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import dask.array as da
import docker
import htcondor2
from dask_gateway.client import ClusterStatus
from distributed import Client
from distributed.client import FutureCancelledError
from docker.models.containers import Container

from htcdaskgateway import HTCGateway, HTCGatewayCluster

COMPOSE_PROJECT = "htcdaskgateway"
CLUSTER_ATTRIBUTE = "HTCDaskGatewayCluster"
# Seconds a computation may take before it counts as lost: through a
# paused pool, a restarted proxy (every worker replaced) and a slow start.
RESULT_DEADLINE = 300.0
# Seconds an event gets to be over (its workers back) before the next one.
RECOVERY_LIMIT = 300.0
# Seconds, at most, between two events; and between two scale changes.
EVENT_GAP = (15.0, 40.0)
SCALE_GAP = (30.0, 90.0)
# Settings of the soak's cluster: short timeouts so that lost workers are
# noticed and replaced within the run.
HTCONDOR = {"worker": {"death-timeout": 20}}
# The persisted data: 16 chunks of 2 MB, spread over the workers.
SHAPE, CHUNKS = (1000, 1000), 250


def stack_service(name: str) -> Container:
    labels = [f"com.docker.compose.project={COMPOSE_PROJECT}", f"com.docker.compose.service={name}"]
    (container,) = docker.from_env().containers.list(filters={"label": labels})
    return container


def run_in(service: str, command: str) -> str:
    result = stack_service(service).exec_run(["sh", "-c", command])
    if result.exit_code != 0:
        raise RuntimeError(f"{service}: {command!r} exited {result.exit_code}: {result.output!r}")
    return result.output.decode()


def schedd() -> htcondor2.Schedd:
    return htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))


def jobs_of(cluster_name: str, tries: int = 60) -> list:
    """Every job of the cluster still queued (workers and credentials), asked of the schedd.

    Asked again, once a second, while the schedd or collector restarts.
    """
    constraint = f'{CLUSTER_ATTRIBUTE} == "{cluster_name}"'
    for attempt in range(tries):
        try:
            return list(schedd().query(constraint, projection=["ClusterId", "ProcId", "JobStatus"]))
        except htcondor2.HTCondorException:
            if attempt == tries - 1:
                raise
            time.sleep(1)
    return []


@dataclass
class Report:
    checked: int = 0
    wrong: int = 0
    lost: int = 0
    clusters_stopped: int = 0
    left_in_queue: int = 0
    events: collections.Counter = field(default_factory=collections.Counter)
    recoveries: dict[str, float] = field(default_factory=dict)  # kind -> worst seconds
    not_recovered: int = 0
    second_client_checked: int = 0
    second_client_wrong: int = 0
    rerun: int = 0  # computations run again after the notebook's connection broke
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def recovered(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.events[kind] += 1
            self.recoveries[kind] = max(self.recoveries.get(kind, 0.0), seconds)

    @property
    def failed(self) -> bool:
        return bool(
            self.wrong or self.lost or self.clusters_stopped or self.left_in_queue
            or self.not_recovered or self.second_client_wrong
        )  # fmt: skip

    def lines(self, minutes: float) -> list[str]:
        worst = max(self.recoveries.items(), key=lambda kv: kv[1], default=("none", 0.0))
        return [
            f"soak: {minutes:g} minutes",
            f"computations checked: {self.checked} (second client: {self.second_client_checked})",
            f"wrong results: {self.wrong + self.second_client_wrong}",
            f"lost results: {self.lost}",
            f"computations run again after the proxy cut the notebook's connection: {self.rerun}",
            f"live clusters stopped: {self.clusters_stopped}",
            f"jobs or credentials left in the queue after teardown: {self.left_in_queue}",
            f"events not recovered from within {RECOVERY_LIMIT:.0f} s: {self.not_recovered}",
            f"worst time back to the target: {worst[1]:.1f} s (after {worst[0]})",
            "events: " + ", ".join(f"{k} {n}" for k, n in sorted(self.events.items())),
            "worst recovery by event: "
            + ", ".join(f"{k} {s:.1f} s" for k, s in sorted(self.recoveries.items())),
            *self.notes,
        ]


class SecondClient:
    """Another process connected to the cluster (``gateway.connect``), computing too."""

    def __init__(self, cluster_name: str, report: Report) -> None:
        self.cluster_name = cluster_name
        self.report = report
        self.process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        command = [sys.executable, __file__, "--second-client", self.cluster_name]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            result = json.loads(line)
            with self.report.lock:
                self.report.second_client_checked += 1
                self.report.second_client_wrong += not result["right"]

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def second_client(cluster_name: str) -> None:
    """The second client's life: connect, compute and check, until terminated."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with HTCGateway() as gateway:
        cluster = gateway.connect(cluster_name, htcondor=HTCONDOR)
        client = cluster.get_client()
        rng = random.Random()
        while True:
            n = rng.randrange(10, 10_000)
            try:
                value = client.submit(sum, range(n), pure=False).result(timeout=RESULT_DEADLINE)
            except Exception:
                continue  # its own losses are not the analysis's: the driver counts those
            print(json.dumps({"right": value == n * (n - 1) // 2}), flush=True)
            time.sleep(rng.uniform(1, 5))


class Soak:
    def __init__(self, minutes: float, seed: int) -> None:
        self.minutes = minutes
        self.rng = random.Random(seed)
        self.report = Report()
        self.gateway = HTCGateway()
        self.cluster: HTCGatewayCluster | None = None
        self.client: Client | None = None
        self.data: da.Array | None = None
        self.wanted = 3  # workers the current target asks for, at least
        self.stop = threading.Event()

    # -- the analysis ---------------------------------------------------------

    def run(self) -> Report:
        cluster = self.cluster = self.gateway.new_cluster(htcondor=HTCONDOR)
        print(f"soak: cluster {cluster.name}", flush=True)
        second = SecondClient(cluster.name, self.report)
        try:
            cluster.scale(self.wanted)
            client = self.client = cluster.get_client()
            cluster.wait_for_workers(self.wanted, timeout=300)
            sample = da.random.RandomState(26).random_sample(SHAPE, chunks=CHUNKS)
            expected = float(sample.sum().compute(scheduler="sync"))
            self._persist()
            second.start()
            events = threading.Thread(target=self._events, args=(second,), daemon=True)
            events.start()
            ends = time.monotonic() + self.minutes * 60
            next_scale = time.monotonic() + self.rng.uniform(*SCALE_GAP)
            while time.monotonic() < ends and not self.report.clusters_stopped:
                self._check(lambda: float(client.compute(self.data.sum()).result(
                    RESULT_DEADLINE)), expected)  # fmt: skip
                n = self.rng.randrange(10, 100_000)
                self._check(partial(self._sum_of_range, n), n * (n - 1) // 2)
                self._still_running()
                if time.monotonic() > next_scale:
                    try:
                        self._change_scale()
                    except Exception as exc:
                        # A change made while the schedd restarts fails at
                        # once, as it tells the analyst; the target is tried
                        # again at the next change.
                        self.report.notes.append(f"a scale change failed: {exc!r}")
                    next_scale = time.monotonic() + self.rng.uniform(*SCALE_GAP)
                time.sleep(self.rng.uniform(0.5, 3))
            self.stop.set()
            events.join(RECOVERY_LIMIT + 120)
        finally:
            self.stop.set()
            second.stop()
            self._teardown()
        return self.report

    def _check(self, compute: Callable[[], object], expected: object) -> None:
        for attempt in (1, 2, 3):
            try:
                value = compute()
                break
            except FutureCancelledError as exc:
                # The notebook's own connection to its scheduler goes through
                # the proxy too: when it breaks, distributed cancels every
                # future of the client ("re-run your work"), as an analyst
                # then does: once the client is connected again, persist
                # again and run again. Counted apart; a third failure is a loss.
                if attempt == 3 or not self._connection_broke(exc):
                    self._lost(exc)
                    return
                self.report.rerun += 1
                self._reconnected()
                self._persist()
            except Exception as exc:
                self._lost(exc)
                return
        self.report.checked += 1
        if value != expected:
            self.report.wrong += 1
            self.report.notes.append(f"wrong: {value!r} instead of {expected!r}")

    def _sum_of_range(self, n: int) -> object:
        assert self.client is not None
        return self.client.submit(sum, range(n), pure=False).result(RESULT_DEADLINE)

    def _connection_broke(self, exc: FutureCancelledError) -> bool:
        """Whether the computation was cancelled because the client's connection broke.

        Broken during a computation, its future says so. Broken between two,
        the scheduler dropped the client and forgot the keys it had
        persisted, and the next graph on them is cancelled for "lost
        dependencies", whether or not the client noticed the break: the
        scheduler forgets a key a client wants only when that client goes
        (a worker's loss is recomputed, never forgotten). A 60-minute run
        counted 46 of these as lost after 20 reruns, the client's own
        futures still "finished".
        """
        return exc.reason in ("scheduler-connection-lost", "lost dependencies")

    def _reconnected(self) -> None:
        """Wait (up to a minute) until the notebook's client is connected again."""
        assert self.client is not None
        deadline = time.monotonic() + 60
        while self.client.status != "running" and time.monotonic() < deadline:
            time.sleep(0.5)

    def _lost(self, exc: BaseException) -> None:
        self.report.lost += 1
        self.report.notes.append(f"lost: {type(exc).__name__}: {exc}")

    def _persist(self) -> None:
        assert self.client is not None
        self.data = self.client.persist(
            da.random.RandomState(26).random_sample(SHAPE, chunks=CHUNKS)
        )

    def _still_running(self) -> None:
        assert self.cluster is not None
        watcher = self.cluster._watcher
        stopped = watcher is None or watcher.stopped_reason is not None
        try:
            status = self.gateway.get_cluster(self.cluster.name).status
        except Exception:
            status = None  # the API restarting: not evidence
        if stopped or status in (ClusterStatus.STOPPED, ClusterStatus.FAILED):
            self.report.clusters_stopped += 1
            reason = watcher.stopped_reason if watcher else "no watcher"
            self.report.notes.append(f"the cluster stopped: {reason}; gateway: {status}")

    def _change_scale(self) -> None:
        assert self.cluster is not None
        n = self.rng.choice([2, 3, 4])
        how = self.rng.choice(["scale", "adapt", "cli"])
        # A change that fails (the schedd restarting) may still have set its
        # target: until one succeeds, recovery waits for the lower of both.
        self.wanted = min(self.wanted, n)
        if how == "scale":
            self.cluster.scale(n)
        elif how == "adapt":
            self.cluster.adapt(minimum=n, maximum=4)
        else:
            cli = subprocess.run(["htcdaskgateway", "scale", self.cluster.name, str(n)],
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
            if cli.returncode != 0:
                raise RuntimeError(f"htcdaskgateway scale exited {cli.returncode}: "
                                   f"{cli.stderr.strip()[-300:]}")  # fmt: skip
        self.wanted = n
        print(f"soak: {how} to {n}", flush=True)

    # -- the events ---------------------------------------------------------

    def _events(self, second: SecondClient) -> None:
        kinds: dict[str, Callable[[], None]] = {
            "schedd restarted": lambda: run_in("pool", "condor_restart -daemon schedd"),
            "collector restarted": lambda: run_in("pool", "condor_restart -daemon collector"),
            "pool paused": self._pause_pool,
            "gateway API restarted": lambda: run_in("gateway", "kill $(cat /run/gateway/api.pid)"),
            "proxy restarted": lambda: run_in("gateway", "kill $(cat /run/gateway/proxy.pid)"),
            "worker evicted": self._evict_worker,
            "worker killed": self._kill_worker,
            "second client SIGKILLed": lambda: (second.kill(), second.start()),
        }
        while not self.stop.wait(self.rng.uniform(*EVENT_GAP)):
            kind = self.rng.choice(sorted(kinds))
            print(f"soak: {kind}", flush=True)
            began = time.monotonic()
            try:
                kinds[kind]()
            except Exception as exc:
                self.report.notes.append(f"{kind} could not be staged: {exc!r}")
                continue
            self._wait_recovered(kind, began)

    def _running_worker_jobs(self) -> list[str]:
        assert self.cluster is not None
        return [
            f"{ad['ClusterId']}.{ad['ProcId']}"
            for ad in jobs_of(self.cluster.name)
            if ad["JobStatus"] == 2
        ]

    def _pause_pool(self) -> None:
        pool = stack_service("pool")
        pool.pause()
        try:
            time.sleep(self.rng.uniform(5, 30))
        finally:
            pool.unpause()

    def _evict_worker(self) -> None:
        running = self._running_worker_jobs()
        if running:
            schedd().act(htcondor2.JobAction.Vacate, [self.rng.choice(running)])

    def _kill_worker(self) -> None:
        running = self._running_worker_jobs()
        if running:
            name = f"htc-{self.rng.choice(running)}@"
            script = (
                "import os, sys\n"
                "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
                "    try: line = open(f'/proc/{pid}/cmdline').read()\n"
                "    except OSError: continue\n"
                "    if sys.argv[1] in line and 'dask' in line: os.kill(int(pid), 9)\n"
            )
            stack_service("pool").exec_run(["python3", "-c", script, name])

    def _wait_recovered(self, kind: str, began: float) -> None:
        assert self.cluster is not None
        client = self.cluster.get_client()
        deadline = began + RECOVERY_LIMIT
        while time.monotonic() < deadline:
            try:
                workers = len(client.scheduler_info(n_workers=-1)["workers"])
            except Exception:
                workers = 0
            if workers >= self.wanted:
                self.report.recovered(kind, time.monotonic() - began)
                return
            time.sleep(0.5)
        self.report.not_recovered += 1
        self.report.notes.append(f"not back at {self.wanted} workers {RECOVERY_LIMIT:.0f} s "
                                 f"after {kind}")  # fmt: skip

    # -- the end ------------------------------------------------------------

    def _teardown(self) -> None:
        cluster = self.cluster
        if cluster is None:
            return
        cluster.shutdown()
        deadline = time.monotonic() + 120
        while jobs_of(cluster.name) and time.monotonic() < deadline:
            time.sleep(1)
        left = jobs_of(cluster.name)
        self.report.left_in_queue = len(left)
        if left:
            schedd().act(htcondor2.JobAction.Remove, f'{CLUSTER_ATTRIBUTE} == "{cluster.name}"')
        self.gateway.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--second-client", metavar="CLUSTER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.second_client:
        second_client(args.second_client)
        return 0
    print(f"soak: seed {args.seed}", flush=True)
    report = Soak(args.minutes, args.seed).run()
    lines = report.lines(args.minutes)
    print("\n".join(lines), flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 1 if report.failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
