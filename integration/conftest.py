"""End-to-end fixtures: the real client against the compose stack or the rig.

Runs in the analyst container, which has the client, the pool's address and
alice's token. E2E_TARGET selects the gateway the same test files drive:
"compose" (`make e2e`: the gateway's local backend in a container) or
"k8s" (`make e2e-k8s`: the chart on the Kubernetes rig, integration/k8s;
kubectl and helm then reach the rig). Nothing is mocked; if the stack is not
up, the tests fail rather than skip.
"""

from __future__ import annotations

import gc
import json
import os
import ssl
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import docker
import htcondor2
import pytest
from dask_gateway import GatewayClusterError
from dask_gateway.auth import JupyterHubAuth
from docker.models.containers import Container

from htcdaskgateway import HTCGateway, HTCGatewayCluster
from htcdaskgateway.compat import ClosingOnceGateway, trust_api_ca
from htcdaskgateway.settings import HTCondorSettings

T = TypeVar("T")
CLUSTER_ATTRIBUTE = "HTCDaskGatewayCluster"
ROLE_ATTRIBUTE = "HTCDaskGatewayRole"
COMPOSE_PROJECT = "htcdaskgateway"  # docker-compose.yml's name

TARGET = os.environ.get("E2E_TARGET", "compose")
if TARGET not in ("compose", "k8s"):
    raise ValueError(f"E2E_TARGET must be 'compose' or 'k8s', not {TARGET!r}")
# Suites that reach into the compose gateway's containers, or measure the
# compose stack, run there only; test_k8s_* need the rig.
collect_ignore_glob = (
    ["test_k8s_*.py"]
    if TARGET == "compose"
    else ["test_faults.py", "test_load.py", "test_bench_smoke.py", "test_soak.py"]
)


_FIGURES: list[str] = []
# Seconds each new_cluster() of the new_cluster fixture took: the gateway
# starting a scheduler (a local process in compose, a pod on the rig).
_NEW_CLUSTER_SECONDS: list[float] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    figures = list(_FIGURES)
    if _NEW_CLUSTER_SECONDS:
        times = sorted(_NEW_CLUSTER_SECONDS)
        figures.append(
            f"new_cluster() on the {TARGET} gateway, {len(times)} clusters: median "
            f"{statistics.median(times):.2f} s, min {times[0]:.2f} s, max {times[-1]:.2f} s"
        )
    if figures:
        terminalreporter.section("figures measured by this run")
        for line in figures:
            terminalreporter.write_line(line)


@pytest.fixture
def record_figure() -> Callable[[str], None]:
    """Report a measurement in the run's summary (figures, not asserted)."""
    return _FIGURES.append


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)
    # The soak restarts the stack's services: after every other test.
    items.sort(key=lambda item: item.path.name == "test_soak.py")


def wait_for(check: Callable[[], T], what: str, timeout: float = 60, interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last: {result!r}")
        time.sleep(interval)


def queue(cluster_name: str, projection: list[str] | None = None, every_job: bool = False) -> list:
    """The cluster's worker jobs in the schedd's queue, read independently of the client.

    ``every_job``: its credentials job too (the one that holds the
    cluster's certificate and key in its spool for the worker jobs).
    """
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    constraint = f'{CLUSTER_ATTRIBUTE} == "{cluster_name}"'
    if not every_job:
        constraint += f" && {ROLE_ATTRIBUTE} =?= undefined"
    return schedd.query(constraint, projection=projection or [])


def worker_name_of(ad) -> str:
    """The dask worker name of the job in ``ad``: ``htc-<ClusterId>.<ProcId>@<schedd>``.

    ``ad`` needs ClusterId, ProcId and GlobalJobId (``<schedd>#<id>#<time>``).
    """
    return f"htc-{ad['ClusterId']}.{ad['ProcId']}@{ad['GlobalJobId'].split('#')[0]}"


def nothing_queued(cluster_name: str) -> bool:
    """No job of the cluster is left in the queue: no worker, no credentials job."""
    return not queue(cluster_name, every_job=True)


def credentials_jobs(cluster_name: str, projection: list[str] | None = None) -> list:
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    constraint = f'{CLUSTER_ATTRIBUTE} == "{cluster_name}" && {ROLE_ATTRIBUTE} == "credentials"'
    return schedd.query(constraint, projection=projection or [])


def condor_q_long(cluster_name: str) -> str:
    """`condor_q -l` of the cluster's jobs, as an analyst would look at them."""
    constraint = f'{CLUSTER_ATTRIBUTE} == "{cluster_name}"'
    return subprocess.run(
        ["condor_q", "-l", "-constraint", constraint], check=True, capture_output=True, text=True
    ).stdout


def condor_history_long(cluster_name: str) -> str:
    """The schedd's history of the cluster's jobs, every attribute (as `condor_history -l`)."""
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    ads = schedd.history(f'{CLUSTER_ATTRIBUTE} == "{cluster_name}"', projection=[])
    return "\n\n".join(ad.printOld() for ad in ads)


@pytest.fixture(scope="session")
def stack_ready() -> None:
    try:
        htcondor2.Collector().query(htcondor2.AdTypes.Schedd, projection=["Name"])
    except Exception as exc:
        pytest.fail(f"The HTCondor pool is not reachable ({exc}); start it with `make up`")


@pytest.fixture
def gateway(stack_ready: None) -> Iterator[HTCGateway]:
    gw = HTCGateway()
    yield gw
    gw.close()
    # dask-gateway's Gateway.__del__ stops its loop runner under
    # distributed's class-wide LoopRunner lock. If garbage collection runs
    # it inside the next test's new IO-loop thread, that thread waits for
    # the lock its creator holds and the new Gateway fails to start after
    # 10 s. Collect here, between tests, so that cannot happen.
    gc.collect()


def plain_gateway() -> ClosingOnceGateway:
    """A gateway client that knows nothing of HTCondor, trusting the configured API CA."""
    gateway = ClosingOnceGateway()
    settings = HTCondorSettings.from_config()
    if settings.api_ca:
        trust_api_ca(gateway, settings.api_ca)
    return gateway


@pytest.fixture
def new_cluster(gateway: HTCGateway) -> Iterator[Callable[[], HTCGatewayCluster]]:
    """Start clusters; at teardown shut them down and check nothing is left."""
    clusters: list[HTCGatewayCluster] = []

    def start(**kwargs: object) -> HTCGatewayCluster:
        started = time.monotonic()
        try:
            cluster = gateway.new_cluster(**kwargs)
        except GatewayClusterError as exc:
            if TARGET != "k8s":
                raise
            # The client only has "see logs"; the controller's log says why.
            raise GatewayClusterError(f"{exc}\n{scheduler_exits()}") from exc
        _NEW_CLUSTER_SECONDS.append(time.monotonic() - started)
        clusters.append(cluster)
        return cluster

    yield start
    for cluster in clusters:
        cluster.shutdown()
    for cluster in clusters:
        wait_for(lambda c=cluster: nothing_queued(c.name), f"jobs of {cluster.name} to leave", 30)


# -- the multi-tenant gateway (JupyterHub auth) and the stack's services ----


def hub_token(user: str) -> str:
    """The user's JupyterHub API token, made fresh by the stack's hub at start."""
    return Path(os.environ["HUB_TOKEN_DIR"], user).read_text().strip()


def hub_env(user: str) -> dict[str, str]:
    """Environment of ``user``'s processes against the JupyterHub-authenticated gateway."""
    return {
        "USER": user,  # selects the user's HTCondor token (condor-client.conf)
        "HOME": f"/home/{user}",
        "PATH": os.environ["PATH"],
        "CONDOR_CONFIG": os.environ["CONDOR_CONFIG"],
        "DASK_GATEWAY__ADDRESS": os.environ["HUB_GATEWAY_ADDRESS"],
        "DASK_GATEWAY__PROXY_ADDRESS": os.environ["HUB_GATEWAY_PROXY_ADDRESS"],
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        "JUPYTERHUB_API_TOKEN": hub_token(user),
        **{k: v for k, v in os.environ.items() if k.startswith("DASK_GATEWAY__HTCONDOR__")},
    }


def user_command(user: str, *command: str) -> list[str]:
    """``command`` as ``user`` of the analysts' host (sudo for bob), with their tokens."""
    env = [f"{key}={value}" for key, value in hub_env(user).items()]
    sudo = [] if user == os.environ.get("USER") else ["sudo", "-u", user, "--"]
    return [*sudo, "env", "-i", *env, *command]


def as_user(user: str, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        user_command(user, *command), capture_output=True, text=True, timeout=timeout, cwd="/tmp"
    )


@pytest.fixture
def hub_gateway(stack_ready: None) -> Iterator[HTCGateway]:
    """alice's gateway, authenticated by the stack's JupyterHub."""
    gw = HTCGateway(
        address=os.environ["HUB_GATEWAY_ADDRESS"],
        proxy_address=os.environ["HUB_GATEWAY_PROXY_ADDRESS"],
        auth=JupyterHubAuth(api_token=hub_token("alice")),
    )
    yield gw
    gw.close()
    gc.collect()  # see the gateway fixture


def stack_service(name: str) -> Container:
    """A service container of this run's compose stack, through the docker API."""
    labels = [f"com.docker.compose.project={COMPOSE_PROJECT}", f"com.docker.compose.service={name}"]
    (container,) = docker.from_env().containers.list(filters={"label": labels})
    return container


def wait_healthy(name: str, timeout: float = 120) -> None:
    def healthy() -> bool:
        state = stack_service(name).attrs["State"]
        return state.get("Health", {}).get("Status") == "healthy"

    wait_for(healthy, f"service {name} to be healthy", timeout, interval=1)


# -- the Kubernetes rig (E2E_TARGET=k8s) -------------------------------------


# The rig node's address, as the suites running there reach the gateway.
RIG_NODE_IP = urlsplit(os.environ.get("DASK_GATEWAY__ADDRESS", "")).hostname or ""


def plain_http(
    url: str, context: ssl.SSLContext | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    """Status and body of one GET, no retry (HTTPS with ``context``); (0, the
    error) if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        return 0, repr(exc).encode()


def kubectl(*args: str, timeout: float = 120) -> str:
    """kubectl against the rig; fails the test with kubectl's message on error."""
    result = subprocess.run(
        ["kubectl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def scheduler_exits() -> str:
    """What the rig's controllers logged about schedulers that stopped on their own."""
    lines = []
    for namespace, release in (("dask-gateway", "htc"), ("dask-gateway-hub", "htc-hub")):
        log = subprocess.run(
            ["kubectl", "logs", f"deploy/{release}-htcdaskgateway-controller", "-n", namespace],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout  # fmt: skip
        lines += [line for line in log.splitlines() if "failed: its scheduler stopped" in line]
    return "\n".join(lines) or "(the controllers logged no scheduler exit)"


def kube_items(kind: str, namespace: str, selector: str | None = None) -> list[dict]:
    args = ["get", kind, "--namespace", namespace, "--output", "json"]
    if selector:
        args += ["--selector", selector]
    return json.loads(kubectl(*args))["items"]


def cluster_objects(cluster_name: str) -> dict[str, list[dict]]:
    """The Kubernetes objects of a gateway cluster ("<namespace>.<id>")."""
    namespace, cluster_id = cluster_name.split(".", 1)
    selector = f"gateway.dask.org/cluster={cluster_id}"
    return {
        kind: kube_items(kind, namespace, selector)
        for kind in ("daskclusters", "pods", "secrets", "services", "ingressroutetcps")
    }


def release_ports(web: int, tcp: int) -> tuple[str, ...]:
    """``helm install`` arguments of a rig test's own release: the simple-auth
    password of the run, its own NodePorts for the API and the proxy, and --wait."""
    password = os.environ["DASK_GATEWAY__AUTH__KWARGS__PASSWORD"]
    return (
        "--set-string", f"gateway.auth.simple.password={password}",
        "--set", f"proxy.service.ports.web.nodePort={web}", "--set", f"proxy.public.webPort={web}",
        "--set", f"proxy.service.ports.tcp.nodePort={tcp}", "--set", f"proxy.public.tcpPort={tcp}",
        "--wait", "--timeout", "5m",
    )  # fmt: skip


def helm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["helm", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def remove_release(release: str, namespace: str, *helm_args: str) -> None:
    """A test release's end whatever happened: uninstalled if still there, its namespace gone."""
    if helm("status", release, "--namespace", namespace).returncode == 0:
        helm("uninstall", release, "--namespace", namespace, "--wait", *helm_args)
    kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", timeout=300)
