"""End-to-end fixtures: the real client against the compose stack.

Runs in the analyst container (`make e2e`), which has the client, the
pool's address and alice's token. Nothing is mocked; if the stack is not
up, the tests fail rather than skip.
"""

from __future__ import annotations

import gc
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import htcondor2
import pytest

from htcdaskgateway import HTCGateway, HTCGatewayCluster

T = TypeVar("T")
CLUSTER_ATTRIBUTE = "HTCDaskGatewayCluster"


_FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("figures measured by this run")
        for line in _FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def record_figure() -> Callable[[str], None]:
    """Report a measurement in the run's summary (figures, not asserted)."""
    return _FIGURES.append


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


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


def queue(cluster_name: str, projection: list[str] | None = None) -> list:
    """The cluster's jobs in the schedd's queue, read independently of the client."""
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))
    return schedd.query(f'{CLUSTER_ATTRIBUTE} == "{cluster_name}"', projection=projection or [])


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


@pytest.fixture
def new_cluster(gateway: HTCGateway) -> Iterator[Callable[[], HTCGatewayCluster]]:
    """Start clusters; at teardown shut them down and check nothing is left."""
    clusters: list[HTCGatewayCluster] = []

    def start(**kwargs: object) -> HTCGatewayCluster:
        cluster = gateway.new_cluster(**kwargs)
        clusters.append(cluster)
        return cluster

    yield start
    for cluster in clusters:
        cluster.shutdown()
    for cluster in clusters:
        wait_for(lambda c=cluster: not queue(c.name), f"jobs of {cluster.name} to leave", 30)
