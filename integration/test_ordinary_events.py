"""A facility's ordinary events, staged on the stack: none may cost live work.

- A proxy that restarts (issue 26, point 1): for a while the gateway's API
  answers Traefik's "404 page not found" to every request and the
  scheduler cannot be reached through the proxy, while the workers, on
  their own connections, stay. Forwarders in this process stand in for
  the proxy between the client and the gateway.
- A second client (point 2): `htcdaskgateway scale NAME 6`, or a second
  notebook's connect() object, changes the target while the notebook waits
  for its workers; the notebook neither undoes the new target (removing
  the new jobs) nor repeats it (submitting them again), on the way up and
  on the way down (6 -> 2 with running workers).
- An eviction (point 3): long-running workers vacated by the pool go back
  to idle and run again; they are not removed by a lease written while
  they were idle, and the cluster is not paused. The pool's negotiation is
  held for a while after the vacate, as between a production pool's
  cycles, so that the evicted jobs wait idle as they would there.
- A schedd missing from the collector's answers (point 5), as after a
  collector restart, while it runs on with the cluster's jobs: the client
  keeps it, submits nothing elsewhere in its place, and shutdown() still
  removes its jobs. The collector is made to refuse that schedd's ads
  (COLLECTOR_REQUIREMENTS) for as long as it takes.
- A notebook that closes without shutting down (point 13): the cluster's
  queued jobs and its credentials job (the key in the spool) leave the
  queue by themselves within ``detached-lease``, with no cleanup; those of
  a cluster that another client opened meanwhile stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import dask.config
import htcondor2
import pytest
from dask_gateway.client import ClusterStatus
from distributed import Client

from conftest import (
    CLUSTER_ATTRIBUTE,
    ROLE_ATTRIBUTE,
    TARGET,
    credentials_jobs,
    nothing_queued,
    queue,
    stack_service,
    wait_for,
)
from htcdaskgateway import HTCGateway

# Traefik's answer for a route it has not loaded (Go's http.NotFound).
TRAEFIK_404 = (
    b"HTTP/1.1 404 Not Found\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
    b"Content-Length: 19\r\n"
    b"\r\n"
    b"404 page not found\n"
)
OUTAGE_SECONDS = 15.0
# The outage lasts until the client has asked the API about its cluster
# and got the 404 (its lease loop does so once the scheduler does not
# answer), at most this long; it stays well within the client lease (60 s).
OUTAGE_LIMIT = 45.0
SETTLE_SECONDS = 30.0
LEASE_ATTRIBUTE = "HTCDaskGatewayLeaseExpiry"  # htcdaskgateway.naming


class Forwarder:
    """A TCP forwarder from a free port on 127.0.0.1 to ``host:port``, in its own thread.

    Modes: ``forward`` (bytes both ways, TLS passes through untouched),
    ``http-404`` (every HTTP request answered as Traefik answers one it has
    no route for) and ``closed`` (connections accepted and closed at once).
    A switch closes every open connection, as a restarting proxy does.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mode = "forward"
        self.answered_404: list[str] = []  # request lines answered with the 404
        self.refused = 0  # connections closed at once
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def switch(self, mode: str) -> None:
        assert mode in ("forward", "http-404", "closed"), mode

        async def switch() -> None:
            self.mode = mode
            for writer in list(self._open):
                writer.close()

        self._call(switch())

    def stop(self) -> None:
        async def stop() -> None:
            self._server.close()
            for writer in list(self._open):
                writer.close()

        with contextlib.suppress(Exception):
            self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        upstream = None
        try:
            if self.mode == "closed":
                self.refused += 1
            elif self.mode == "http-404":
                await self._answer_404(reader, writer)
            else:
                up_reader, upstream = await asyncio.open_connection(*self.target)
                self._open.add(upstream)
                await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._open.discard(end)
                    end.close()

    async def _answer_404(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keep-alive: every request on the connection
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            self.answered_404.append(lines[0])
            writer.write(TRAEFIK_404)
            await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def _host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "://" in address else "tcp://" + address)
    return parts.hostname, parts.port


def _jobs(name: str) -> dict[str, int]:
    """The cluster's worker jobs in the queue: "ClusterId.ProcId" -> JobStatus."""
    return {
        f"{ad['ClusterId']}.{ad['ProcId']}": ad["JobStatus"]
        for ad in queue(name, ["ClusterId", "ProcId", "JobStatus"])
    }


def _removals(name: str, job_ids: set[str] | None = None) -> dict[str, str]:
    """Why the schedd's history says the cluster's removed jobs were removed."""
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    ads = schedd.history(
        f'HTCDaskGatewayCluster == "{name}" && JobStatus == 3',
        projection=["ClusterId", "ProcId", "RemoveReason"],
    )
    removed = {f"{ad['ClusterId']}.{ad['ProcId']}": str(ad.get("RemoveReason")) for ad in ads}
    return {k: v for k, v in removed.items() if job_ids is None or k in job_ids}


@pytest.mark.skipif(TARGET != "compose", reason="the API forwarder speaks plain HTTP")
def test_a_proxy_restart_404_and_scheduler_cut_keeps_the_cluster_and_its_jobs(
    gateway, record_figure
):
    api_address = dask.config.get("gateway.address")
    proxy_address = dask.config.get("gateway.proxy-address")
    api = Forwarder(*_host_port(api_address))
    proxy = Forwarder(*_host_port(proxy_address))
    through = HTCGateway(
        address=f"http://127.0.0.1:{api.port}",
        proxy_address=f"tls://127.0.0.1:{proxy.port}",
        htcondor={
            # The workers dial the real proxy, so they stay connected; the
            # jobs carry the real gateway's id (cleanup finds them).
            "scheduler-address": "tls://" + proxy_address.split("://")[-1],
            "gateway-id": api_address.rstrip("/"),
        },
    )
    cluster = client = None
    try:
        cluster = through.new_cluster()
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=120)
        # The analysis' own client dials the real proxy: its data must not
        # depend on the client-side forwarders, only on the workers.
        real = cluster.scheduler_address.replace(
            f"127.0.0.1:{proxy.port}", proxy_address.split("://")[-1]
        )
        client = Client(real, security=cluster.security, set_as_default=False)
        parts = client.scatter([list(range(i * 100, (i + 1) * 100)) for i in range(10)])
        assert all(client.who_has(parts).values()), "the data is not on the workers"
        before = _jobs(cluster.name)
        assert sorted(before.values()) == [2, 2], before

        # The proxy restarts: the API answers 404, the scheduler is cut off.
        api.switch("http-404")
        proxy.switch("closed")
        began = time.monotonic()
        report_path = f"/api/v1/clusters/{cluster.name}"
        while time.monotonic() - began < OUTAGE_LIMIT:
            asked = any(report_path in line for line in api.answered_404)
            if asked and time.monotonic() - began >= OUTAGE_SECONDS:
                break
            time.sleep(0.2)
        outage = time.monotonic() - began
        api.switch("forward")
        proxy.switch("forward")
        record_figure(
            f"proxy outage staged for {outage:.1f} s: {len(api.answered_404)} API requests "
            f"answered 404 ({sum(report_path in x for x in api.answered_404)} for the "
            f"cluster's report), {proxy.refused} scheduler connections closed"
        )
        time.sleep(SETTLE_SECONDS)

        problems = []
        after = _jobs(cluster.name)
        if after != before:
            problems.append(
                f"worker jobs before the outage {before}, {SETTLE_SECONDS:.0f} s after it "
                f"{after}; removals: {_removals(cluster.name, set(before))}"
            )
        try:
            # Builtins only: the scheduler cannot import this test module.
            total = client.submit(sum, client.map(sum, parts)).result(timeout=60)
        except Exception as exc:
            problems.append(f"the persisted data did not compute: {exc!r}")
        else:
            if total != sum(range(1000)):
                problems.append(f"the persisted data summed to {total}")
        status = gateway.get_cluster(cluster.name).status
        if status is not ClusterStatus.RUNNING:
            problems.append(f"the gateway reports the cluster {status.name}")
        try:
            cluster.scale(3)
            cluster.wait_for_workers(3, timeout=120)
        except Exception as exc:
            problems.append(f"scale(3) after the outage failed: {exc!r}")
        assert not problems, (
            f"after a {outage:.1f} s proxy outage (API 404 x{len(api.answered_404)}, "
            "scheduler cut):\n" + "\n".join(problems)
        )
    finally:
        api.switch("forward")
        proxy.switch("forward")
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.shutdown()
        through.close()
        api.stop()
        proxy.stop()
        if cluster is not None:
            wait_for(lambda: nothing_queued(cluster.name), f"jobs of {cluster.name} to leave", 30)


# -- point 2: a second client sets the target -------------------------------

# Seconds each new target must hold: more than a renewal period of the
# notebook (watch-interval, 10 s by default), during which it used to act
# on the target it last read.
HOLD_SECONDS = 15.0
SCALED_DOWN = "scaled down to"  # the start of the client's removal reason (reconciler.py)


def _every_worker_job(name: str) -> dict[str, tuple[int, str]]:
    """Every worker job ever queued for the cluster, in the queue or the history.

    "ClusterId.ProcId" -> (JobStatus, RemoveReason). The queue is read
    first, then the history: a job that leaves in between is in the second.
    """
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    constraint = f'{CLUSTER_ATTRIBUTE} == "{name}" && {ROLE_ATTRIBUTE} =?= undefined'
    projection = ["ClusterId", "ProcId", "JobStatus", "RemoveReason"]
    ads = [*schedd.query(constraint, projection=projection)]
    ads += schedd.history(constraint, projection=projection)
    return {
        f"{ad['ClusterId']}.{ad['ProcId']}": (ad["JobStatus"], str(ad.get("RemoveReason", "")))
        for ad in ads
    }


@contextlib.contextmanager
def notebook_waiting(cluster, n: int):
    """The notebook in ``cluster.wait_for_workers(n)`` while inside, again as soon as it returns.

    A thread of the test process stands in for the notebook's cell: while
    a wait runs, the cluster object looks at the jobs every second (and
    acts on them when it is the applier). Yields the errors of the waits.
    """
    stop = threading.Event()
    waiting = threading.Event()
    errors: list[BaseException] = []

    def wait() -> None:
        while not stop.is_set():
            waiting.set()
            try:
                cluster.wait_for_workers(n, timeout=60)
            except Exception as exc:
                errors.append(exc)
                return
            stop.wait(0.5)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    try:
        waiting.wait(10)
        yield errors
    finally:
        stop.set()
        thread.join(90)


@contextlib.contextmanager
def scaled_by(scaler: str, name: str, n: int):
    """The cluster scaled to ``n`` by another client: the CLI, or a second notebook.

    The second notebook (a cluster object of ``connect()`` in this process)
    stays open while inside: two objects watch the cluster. Yields what
    the CLI wrote on stderr (warnings).
    """
    if scaler == "cli":
        done = subprocess.run(
            ["htcdaskgateway", "scale", name, str(n)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"scaled to {n} worker jobs" in done.stdout, done.stdout
        yield done.stderr
        return
    with HTCGateway() as gateway, gateway.connect(name) as second:
        second.scale(n)
        yield ""


def _held(name: str, submitted: set[str], running: int, what: str) -> int:
    """Check for HOLD_SECONDS that the cluster's worker jobs stay put; returns the checks made.

    The jobs ever submitted are ``submitted`` and no other, ``running`` of
    them run and the others were retired by a scale-down: removed by it, or
    ended as their worker closed.
    """
    until = time.monotonic() + HOLD_SECONDS
    checks = 0
    while True:
        every = _every_worker_job(name)
        active = {job: status for job, (status, _) in every.items() if status in (1, 2, 5)}
        ended = {job: every[job] for job in set(every) - set(active)}
        problems = []
        if set(every) != submitted:
            problems.append(
                f"{len(every)} worker jobs submitted in all, not {len(submitted)}: new "
                f"{sorted(set(every) - submitted)}"
            )
        if sorted(active.values()) != [2] * running:
            problems.append(f"active jobs {active}, not {running} running")
        not_retired = {
            job: (status, reason)
            for job, (status, reason) in ended.items()
            if status != 4 and not reason.startswith(SCALED_DOWN)
        }
        if len(ended) != len(submitted) - running or not_retired:
            problems.append(
                f"{len(ended)} jobs left the queue, not the {len(submitted) - running} "
                f"retired: {ended}"
            )
        assert not problems, f"{what}, check {checks + 1}:\n" + "\n".join(problems)
        checks += 1
        if time.monotonic() >= until:
            return checks
        time.sleep(1)


@pytest.mark.parametrize("scaler", ["cli", "second notebook"])
def test_a_target_set_by_another_client_is_neither_undone_nor_repeated_by_the_notebook(
    new_cluster, scaler, record_figure
):
    notebook = new_cluster()
    name = notebook.name
    notebook.scale(2)
    first = set(_every_worker_job(name))
    assert len(first) == 2, first

    def running() -> int:
        return sum(status == 2 for status in _jobs(name).values())

    with notebook_waiting(notebook, 2) as errors:
        # 2 -> 6 while the notebook, the applier of 2, waits for its workers.
        began = time.monotonic()
        with scaled_by(scaler, name, 6) as warned:
            wait_for(lambda: running() == 6 or len(_every_worker_job(name)) > 6,
                     "6 running worker jobs", 120)  # fmt: skip
            up = time.monotonic() - began
            submitted = set(_every_worker_job(name))
            assert len(submitted) == 6 and first < submitted, (
                f"{scaler} scaled 2 -> 6: {len(submitted)} worker jobs submitted in all: "
                f"{_every_worker_job(name)}"
            )
            checks = _held(name, submitted, 6, f"{scaler} scaled 2 -> 6")
        # The notebook applies the target again (the scaler let go), then the
        # scaler retires 4 of the 6 running workers.
        let_go = time.monotonic()
        wait_for(lambda: notebook._watcher.is_applier,  # private, as in test_faults
                 "the notebook to apply the target again", 60)  # fmt: skip
        back = time.monotonic() - let_go
        if warned.strip():
            # Not this test's point, but it delays the notebook: the CLI's
            # applier role, unreleased, lapses only after its apply_ttl.
            record_figure(f"the CLI's scale 6 warned ({back:.0f} s until the notebook applied "
                          f"again): {warned.strip().splitlines()[0]}")  # fmt: skip
        began = time.monotonic()
        with scaled_by(scaler, name, 2):
            wait_for(lambda: len(_jobs(name)) <= 2 or len(_every_worker_job(name)) > 6,
                     "4 worker jobs retired", 120)  # fmt: skip
            down = time.monotonic() - began
            checks += _held(name, submitted, 2, f"{scaler} scaled 6 -> 2")
    assert not errors, f"the notebook's wait_for_workers(2) failed: {errors!r}"
    record_figure(
        f"{scaler} scaled a 2-job cluster to 6 while the notebook waited: 6 running {up:.1f} s "
        f"later; the notebook applying again {back:.1f} s after it let go; 6 -> 2: 4 retired "
        f"{down:.1f} s later; each held {HOLD_SECONDS:.0f} s "
        f"({checks} checks): 6 jobs submitted in all, none removed but the 4 retired"
    )


LEASE = 10
RECOVERY_SECONDS = 90.0
# The test pool negotiates every second, so a vacated job may start again
# before the schedd's periodic check (every second too) sees it idle; a
# production pool negotiates every 20-300 s. Negotiation is held this long
# after the vacate, as between two cycles of such a pool.
NEGOTIATION_PAUSE = 20.0


@contextlib.contextmanager
def negotiation_paused():
    """No new match in the pool while inside (its negotiator stopped), then back."""
    pool = stack_service("pool")

    def negotiators() -> list[str]:
        answer = pool.exec_run(["condor_status", "-negotiator", "-af", "Name"])
        return answer.output.decode().split()

    stopped = pool.exec_run(["condor_off", "-daemon", "negotiator"])
    try:
        assert stopped.exit_code == 0, stopped.output.decode()
        wait_for(lambda: not negotiators(), "the negotiator to stop", 30)
        yield
    finally:
        started = pool.exec_run(["condor_on", "-daemon", "negotiator"])
        assert started.exit_code == 0, started.output.decode()
        wait_for(negotiators, "the negotiator to be back", 60)


def _lease_past(ad) -> int | None:
    """Seconds the job's lease expiry is past, on the schedd's clock; None if it has none."""
    try:
        now = ad.get("ServerTime") or time.time()
        return round(float(now) - float(ad.eval(LEASE_ATTRIBUTE)))
    except (KeyError, TypeError, ValueError):
        return None


def test_evicted_long_running_workers_run_again_and_the_cluster_is_not_paused(
    new_cluster, record_figure
):
    cluster = new_cluster(htcondor={"lease": LEASE})
    cluster.scale(3)
    cluster.wait_for_workers(3, timeout=120)
    client = cluster.get_client()
    # The jobs run long past the lease written while they were idle.
    time.sleep(2 * LEASE + 5)
    projection = ["ClusterId", "ProcId", "JobStatus", "GlobalJobId", LEASE_ATTRIBUTE, "ServerTime"]
    ads = queue(cluster.name, projection)
    assert sorted(ad["JobStatus"] for ad in ads) == [2, 2, 2], [ad.printOld() for ad in ads]
    lapsed = [_lease_past(ad) for ad in ads]
    record_figure(f"running workers before the eviction: their job lease past by {lapsed} s")
    vacated = {f"{ad['ClusterId']}.{ad['ProcId']}" for ad in ads}
    old_workers = set(client.scheduler_info(n_workers=-1)["workers"])
    assert len(old_workers) == 3, old_workers

    schedd_name = ads[0]["GlobalJobId"].split("#")[0]
    schedd = htcondor2.Schedd(
        htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, schedd_name)
    )
    with negotiation_paused():
        result = schedd.act(htcondor2.JobAction.Vacate, sorted(vacated))
        vacated_at = time.monotonic()
        assert result.get("TotalSuccess") == 3, result.printOld()
        time.sleep(NEGOTIATION_PAUSE)
        idle = _jobs(cluster.name)
    record_figure(f"the vacated jobs {NEGOTIATION_PAUSE:.0f} s later, negotiation held: {idle}")

    def new_workers() -> set[str]:
        return set(client.scheduler_info(n_workers=-1)["workers"]) - old_workers

    deadline = vacated_at + RECOVERY_SECONDS
    while len(new_workers()) < 3 and time.monotonic() < deadline:
        time.sleep(1)
    recovered = len(new_workers()) >= 3
    took = time.monotonic() - vacated_at

    problems = []
    if recovered:
        record_figure(f"3 vacated workers back in the scheduler {took:.1f} s after the vacate")
    else:
        problems.append(
            f"{len(new_workers())} of 3 workers back {RECOVERY_SECONDS:.0f} s after the vacate"
        )
    by_policy = {
        job: reason
        for job, reason in _removals(cluster.name, vacated).items()
        if "PeriodicRemove" in reason
    }
    if by_policy:
        problems.append(f"vacated jobs removed by the lease (periodic_remove): {by_policy}")
    tracker = cluster._tracker  # the client's own view: private, as in test_faults
    if tracker is not None and tracker.paused:
        problems.append(
            f"the cluster is paused after {tracker.failures_in_a_row} failures in a row: "
            f"{[failure.describe() for failure in tracker.failures]}"
        )
    jobs = _jobs(cluster.name)
    if len(jobs) != 3:
        problems.append(f"the target is 3 jobs, the queue holds {jobs}")
    print(f"jobs after the eviction: {jobs} (vacated: {sorted(vacated)})")
    assert not problems, "after condor_vacate_job of 3 running workers:\n" + "\n".join(problems)


# -- point 5: a schedd missing from the collector's answers ------------------

# The cluster may use both of the pool's schedds (test_several_schedds.py).
BOTH_SCHEDDS = {"schedd": None, "schedd-constraint": "true", "watch-interval": 1}
# The pool's second schedd, the one the other suites leave out (docker-compose.yml):
# the one left out of the collector's answers here, so that clients of the
# first (other suites, the Kubernetes rig) see no change.
SECOND_SCHEDD = 'HTCDaskGatewayTestSchedd == "second"'
UNLISTED_CONFIG = "/etc/condor/config.d/95-test-unlisted-schedd.conf"
# Seconds the collector refuses the schedd at most, should this process die
# before it puts the schedd back (a watchdog in the pool container does).
UNLISTED_AT_MOST = 600
# The cluster's lease: the credentials job on each schedd lapses this long
# after its last renewal.
UNLISTED_LEASE = 10
# Seconds the cluster is watched once its client has listed the schedds
# without the missing one: more than the lease, many looks (watch-interval 1).
UNLISTED_HOLD = 15.0
# Seconds between the test client's collector queries (DISCOVERY_TTL).
REDISCOVERY = 15.0
# The pool's job event log (docker-compose.yml mounts the pool's logs), in
# UTC to the millisecond (integration/pool/test-pool.conf).
EVENT_LOG = Path("/pool-log/EventLog")
ABORTED = re.compile(
    r"^009 \((?P<cluster>\d+)\.(?P<proc>\d+)\.\d+\) (?P<when>\S+ \S+)Z Job was aborted\.\n"
    r"(?P<reason>(?:\t.*\n)*)",
    re.MULTILINE,
)


def _schedd_listed(name: str) -> bool:
    ads = htcondor2.Collector().query(
        htcondor2.AdType.Schedd, f'Name == "{name}"', projection=["Name"]
    )
    return bool(ads)


def _pool_shell(script: str, detach: bool = False) -> str:
    result = stack_service("pool").exec_run(["sh", "-c", script], detach=detach)
    if detach:
        return ""
    assert result.exit_code == 0, result.output.decode()
    return result.output.decode()


@contextlib.contextmanager
def unlisted(name: str):
    """The collector leaves the schedd ``name`` out of every answer while inside; it runs on.

    The schedd advertises itself every second (SCHEDD_INTERVAL of the test
    pool): its ad is invalidated once the collector refuses its updates
    (COLLECTOR_REQUIREMENTS, set in a config file of the pool's own), as a
    restarted collector lacks a schedd's ad until that schedd's next update.
    """
    mark = uuid.uuid4().hex
    refuse = f'COLLECTOR_REQUIREMENTS = MyType =!= "Scheduler" || Name =!= "{name}"'
    restore = (
        f"if grep -qs {mark} {UNLISTED_CONFIG}; then rm -f {UNLISTED_CONFIG}; fi; "
        f"rm -f /tmp/unlisted-{mark}.ad; condor_reconfig -daemon collector"
    )
    invalidate = (
        "printf '%s\\n' 'MyType = \"Query\"' 'TargetType = \"Scheduler\"' "
        f"'Requirements = Name == \"{name}\"' > /tmp/unlisted-{mark}.ad && "
        f"condor_advertise INVALIDATE_SCHEDD_ADS /tmp/unlisted-{mark}.ad"
    )

    def gone() -> bool:
        _pool_shell(invalidate)
        time.sleep(2)  # two of the schedd's update intervals
        return not _schedd_listed(name)

    try:
        _pool_shell(
            f"printf '%s\\n' '# {mark}' '{refuse}' > {UNLISTED_CONFIG} && "
            "condor_reconfig -daemon collector"
        )
        # Gone as soon as the file is (or is another run's); else puts it back.
        _pool_shell(
            f"for _ in $(seq {UNLISTED_AT_MOST}); do grep -qs {mark} {UNLISTED_CONFIG} || exit 0; "
            f"sleep 1; done; {restore}",
            detach=True,
        )
        wait_for(gone, f"the collector to leave schedd {name} out", 30, interval=0)
        yield
    finally:
        _pool_shell(restore)
        wait_for(lambda: _schedd_listed(name), f"schedd {name} listed again", 60)


def _on_schedd(location, name: str) -> dict[str, tuple[int, str]]:
    """The cluster's jobs on one schedd, reached at ``location`` whatever the collector says.

    "ClusterId.ProcId" -> (JobStatus, role: "worker" or "credentials").
    """
    schedd = htcondor2.Schedd(location)
    projection = ["ClusterId", "ProcId", "JobStatus", ROLE_ATTRIBUTE]
    ads = schedd.query(f'{CLUSTER_ATTRIBUTE} == "{name}"', projection=projection)
    return {
        f"{ad['ClusterId']}.{ad['ProcId']}": (
            ad["JobStatus"],
            str(ad.get(ROLE_ATTRIBUTE, "worker")),
        )
        for ad in ads
    }


def _aborted_since(since: float) -> dict[str, list[str]]:
    """Jobs removed since ``since`` (epoch seconds): "ClusterId.ProcId" -> the reasons given.

    Read from the pool's event log, which both schedds write: the second
    schedd's history is not kept (its HISTORY names a directory that does
    not exist), and a removal's reason tells the client's removals from
    the lease's (PeriodicRemove).
    """
    text = ""
    for path in (EVENT_LOG.with_name(EVENT_LOG.name + ".old"), EVENT_LOG):  # rotated at 1 MB
        with contextlib.suppress(FileNotFoundError):
            text += path.read_text(errors="replace") + "\n"
    aborted: dict[str, list[str]] = {}
    for match in ABORTED.finditer(text):
        when = datetime.strptime(match["when"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
        if when.timestamp() >= since:
            job = f"{int(match['cluster'])}.{int(match['proc'])}"
            aborted.setdefault(job, []).append(match["reason"].strip())
    return aborted


def test_a_schedd_missing_from_the_collectors_answers_keeps_its_jobs_and_shutdown_reaches_them(
    new_cluster, record_figure, monkeypatch
):
    # The client asks the collector again DISCOVERY_TTL (60 s) after its
    # last answer; the test's client sooner, so the wait is not a minute.
    monkeypatch.setattr("htcdaskgateway.schedd_pool.DISCOVERY_TTL", REDISCOVERY)
    started = time.time() - 1
    locations = {
        ad["Name"]: ad for ad in htcondor2.Collector().locateAll(htcondor2.DaemonType.Schedd)
    }
    (missing,) = [
        ad["Name"]
        for ad in htcondor2.Collector().query(
            htcondor2.AdType.Schedd, SECOND_SCHEDD, projection=["Name"]
        )
    ]
    (other,) = set(locations) - {missing}
    cluster = new_cluster(htcondor={**BOTH_SCHEDDS, "lease": UNLISTED_LEASE})
    # Each scale() step is one submission to a schedd picked at random.
    for n in range(1, 13):
        cluster.scale(n)
        if any(job.job_id.schedd == missing for job in cluster.worker_jobs()):
            break
    else:
        pytest.fail(f"12 submissions and none went to {missing}")
    cluster.wait_for_workers(n, timeout=120)

    def jobs(schedd: str, role: str = "worker") -> dict[str, int]:
        found = _on_schedd(locations[schedd], cluster.name)
        return {job: status for job, (status, its_role) in found.items() if its_role == role}

    on_missing, on_other = jobs(missing), jobs(other)
    credentials = set(jobs(missing, "credentials"))
    assert on_missing and set(on_missing.values()) == {2}, on_missing
    assert credentials, f"no credentials job on {missing}"
    in_table = {f"{job}@{missing}" for job in on_missing}

    problems: dict[str, str] = {}  # the first of each kind
    try:
        with unlisted(missing):
            began = time.monotonic()
            wait_for(
                lambda: cluster.schedd._discovered_at > began,  # private, as in test_faults
                "the client to ask the collector for the schedds again",
                REDISCOVERY + 15,
            )
            relisted = time.monotonic()
            while time.monotonic() - relisted < UNLISTED_HOLD:
                time.sleep(1)
                rows = {row["job"]: row["status"] for row in cluster.job_table()}
                if not in_table <= set(rows):
                    problems.setdefault("table", f"the job table lacks {missing}'s jobs: {rows}")
                if jobs(other) != on_other:
                    problems.setdefault(
                        "other", f"{other}'s worker jobs were {on_other}, then {jobs(other)}"
                    )
                if jobs(missing) != on_missing:
                    problems.setdefault(
                        "missing",
                        f"{missing}'s worker jobs were {on_missing}, then {jobs(missing)}",
                    )
                if set(jobs(missing, "credentials")) != credentials:
                    problems.setdefault("credentials", f"{missing}'s credentials job left")
            shut = time.monotonic()
            cluster.shutdown()
            while True:
                left = {s: _on_schedd(locations[s], cluster.name) for s in locations}
                took = time.monotonic() - shut
                if not any(left.values()) or took > 60:
                    break
                time.sleep(0.5)
            hidden = time.monotonic() - began
    finally:
        # Whatever this client left on the schedd it lost, as cleanup would.
        for location in locations.values():
            with contextlib.suppress(htcondor2.HTCondorException):
                htcondor2.Schedd(location).act(
                    htcondor2.JobAction.Remove,
                    f'{CLUSTER_ATTRIBUTE} == "{cluster.name}"',
                    ("test: left behind by shutdown()", None),
                )
    if any(left.values()):
        problems["left"] = f"{took:.0f} s after shutdown() the cluster's jobs are queued: {left}"
    aborted = _aborted_since(started)
    by_shutdown = f"cluster {cluster.name} shut down"
    not_by_shutdown = {
        job: aborted.get(job, ["not removed"])
        for job in [*on_missing, *credentials]
        if not any(reason.startswith(by_shutdown) for reason in aborted.get(job, []))
    }
    if not_by_shutdown:
        problems["shutdown"] = f"{missing}'s jobs not removed by shutdown(): {not_by_shutdown}"
    record_figure(
        f"schedd {missing} ({len(on_missing)} of {n} running workers) left out of the "
        f"collector's answers for {hidden:.0f} s: the client listed the schedds again "
        f"{relisted - began:.0f} s in, watched {UNLISTED_HOLD:.0f} s more; shutdown() emptied "
        f"both schedds in {took:.1f} s"
    )
    assert not problems, (
        "a schedd missing from the collector's answers, still running:\n"
        + "\n".join(problems.values())
    )


# -- 13: a cluster nobody holds takes its key material out of the queue -----


def test_a_cluster_closed_without_shutdown_takes_its_key_out_and_a_reopened_one_keeps_it(
    gateway, record_figure
):
    detached = 8
    # Worker jobs that stay idle (no slot of the test pool has the memory),
    # beside each cluster's credentials job: what a lease must clear.
    settings = {"detached-lease": detached, "worker": {"memory": "400 GiB"}}
    left = gateway.new_cluster(shutdown_on_close=False, htcondor=settings)
    kept = gateway.new_cluster(shutdown_on_close=False, htcondor=settings)
    names = (left.name, kept.name)
    reopened = None
    try:
        for cluster in (left, kept):
            cluster.scale(2)
        wait_for(lambda: all(len(queue(name, every_job=True)) == 3 for name in names),
                 "2 idle worker jobs and a credentials job in each cluster", 60)  # fmt: skip
        assert all(credentials_jobs(name) for name in names)
        left.close()
        kept.close()
        closed = time.monotonic()
        reopened = gateway.connect(kept.name)  # another notebook opens this one
        wait_for(lambda: nothing_queued(left.name),
                 f"its jobs to leave ({detached} s lease)", detached + 30)  # fmt: skip
        record_figure(
            f"closed without shutdown (detached-lease {detached} s): its 2 idle jobs and its "
            f"credentials job left the queue {time.monotonic() - closed:.1f} s after close()"
        )
        # Three detached leases on, the reopened cluster has all of its jobs.
        time.sleep(max(0.0, 3 * detached - (time.monotonic() - closed)))
        assert len(queue(kept.name, every_job=True)) == 3, "the reopened cluster lost jobs"
        assert gateway.get_cluster(kept.name).status is ClusterStatus.RUNNING
    finally:
        if reopened is not None:
            reopened.shutdown()
        for name in names:
            with contextlib.suppress(Exception):
                gateway.stop_cluster(name)
    wait_for(lambda: all(nothing_queued(name) for name in names), "every job to leave", 30)
