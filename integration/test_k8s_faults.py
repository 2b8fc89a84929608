"""Kubernetes-side faults under a running cluster (E2E_TARGET=k8s).

The scheduler pod deleted, the scheduler process killed, the gateway API's
Deployment restarted, the connections through the proxy (Traefik) cut:
each test says what the analyst (or the operator) sees and checks that
nothing is lost or left running. (A proxy that is replaced drains its
connections and loses nothing: test_k8s_upgrade.py.)
"""

from __future__ import annotations

import logging
import os
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import docker
import pytest
import yaml
from dask_gateway import GatewayClusterError

from conftest import (
    cluster_objects,
    helm,
    kube_items,
    kubectl,
    nothing_queued,
    queue,
    wait_for,
)

NAMESPACE = "dask-gateway"
RELEASE = "htc"
CHART = "/src/charts/htcdaskgateway"
LEASE = 10


def restart(component: str) -> float:
    """`kubectl rollout restart` a Deployment of the release; seconds until it is rolled out."""
    started = time.monotonic()
    deployment = f"deploy/{RELEASE}-htcdaskgateway-{component}"
    kubectl("rollout", "restart", deployment, "--namespace", NAMESPACE)
    kubectl(
        "rollout", "status", deployment, "--namespace", NAMESPACE, "--timeout=180s", timeout=200
    )
    return time.monotonic() - started


def test_scheduler_pod_deleted_the_client_says_so_and_the_jobs_leave(
    new_cluster, caplog, record_figure
):
    cluster = new_cluster(htcondor={"lease": LEASE})
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=120)
    (pod,) = cluster_objects(cluster.name)["pods"]

    caplog.set_level(logging.WARNING, logger="htcdaskgateway")
    deleted = time.monotonic()
    kubectl("delete", "pod", pod["metadata"]["name"], "--namespace", NAMESPACE, "--wait=false")

    # The scheduler's SIGTERM closes its workers, so their jobs end at once;
    # the owner's watcher then finds the scheduler gone and says so.
    wait_for(
        lambda: nothing_queued(cluster.name), "the jobs of the lost cluster to leave", LEASE * 6
    )
    record_figure(
        f"scheduler pod deleted: its jobs left the queue {time.monotonic() - deleted:.1f} s later"
    )

    def told() -> list[str]:
        return [r.getMessage() for r in caplog.records if "stopped elsewhere" in r.getMessage()]

    # Its next lease renewal waits out dask's connect timeout (30 s) first.
    (message,) = wait_for(told, "the client to say the cluster is gone", 120)
    record_figure(f"scheduler pod deleted: the client said {message!r}")
    assert cluster.name in message
    with pytest.raises(GatewayClusterError, match="stopped elsewhere"):
        cluster.scale(3)
    wait_for(lambda: not cluster_objects(cluster.name)["pods"], "no scheduler pod", 60)


# Run on the rig's node (kubectl exec cannot enter the rig's pods): SIGKILL
# the scheduler process of the cluster named in argv[1], found by the
# cluster name in its environment; not tini, which holds the same one.
KILL_SCHEDULER = """
import os, signal, sys
mark = ("DASK_GATEWAY_CLUSTER_NAME=" + sys.argv[1]).encode()
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\\0")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().split(b"\\0")
    except OSError:
        continue
    if mark in environ and b"scheduler" in command and not command[0].endswith(b"tini"):
        os.kill(int(pid), signal.SIGKILL)
        print(pid)
"""


def test_scheduler_killed_the_controller_log_says_why(new_cluster, record_figure):
    cluster = new_cluster()
    (node,) = docker.from_env().containers.list(filters={"name": os.environ["RIG_NODE"]})
    status, output = node.exec_run(["python3", "-c", KILL_SCHEDULER, cluster.name])
    assert status == 0 and len(output.split()) == 1, output

    def report() -> list[str]:
        log = kubectl("logs", f"deploy/{RELEASE}-htcdaskgateway-controller", "-n", NAMESPACE)
        return [line for line in log.splitlines() if f"Cluster {cluster.name} failed" in line]

    # Upstream deletes the pod in the step that marks the cluster failed: the
    # operator has only this line to go on.
    (line,) = wait_for(report, "the controller to report the scheduler's exit", 60)
    record_figure(f"scheduler SIGKILLed: the controller said {line.split(' failed: ', 1)[1]!r}")
    assert "exit code 137 (SIGKILL)" in line
    # Its last log lines (the termination message), which the pod took with it.
    assert "its last words:" in line and "distributed." in line
    wait_for(lambda: not cluster_objects(cluster.name)["pods"], "no scheduler pod", 60)


def test_gateway_api_restarted_running_clusters_survive(new_cluster, record_figure):
    cluster = new_cluster()
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=120)
    client = cluster.get_client()
    data = client.persist(da.arange(1_000_000, chunks=100_000))
    workers_before = set(client.scheduler_info()["workers"])

    took = restart("api")
    record_figure(f"API Deployment restarted in {took:.1f} s")

    # The scheduler and its workers never noticed; the new API serves the cluster.
    assert set(client.scheduler_info()["workers"]) == workers_before
    assert int(data.sum().compute()) == 499_999_500_000
    cluster.scale(3)
    cluster.wait_for_workers(3, timeout=120)
    assert cluster_objects(cluster.name)["daskclusters"][0]["status"]["phase"] == "Running"


def upgrade_proxy_drain(grace_seconds: int) -> None:
    """`helm upgrade` of the release with proxy.drain.graceSeconds (rolls the proxy).

    Every value is in the gateway's ConfigMap, so the API rolls too.
    Returns once the API has answered for 2 s in a row.
    """
    result = helm(
        "upgrade", RELEASE, CHART, "--namespace", NAMESPACE, "--reuse-values",
        "--set", f"proxy.drain.graceSeconds={grace_seconds}", "--wait",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    context = ssl.create_default_context(cafile=os.environ["DASK_GATEWAY__HTCONDOR__API_CA"])
    health = f"{os.environ['DASK_GATEWAY__ADDRESS']}/api/health"
    answered: list[bool] = []

    def steady() -> bool:
        try:
            with urllib.request.urlopen(health, timeout=5, context=context) as response:
                answered.append(response.status == 200)
        except OSError:
            answered.append(False)
        return len(answered) >= 4 and all(answered[-4:])

    wait_for(steady, "the API to answer steadily after the upgrade", 60, interval=0.5)


@pytest.fixture
def proxy_without_drain() -> Iterator[None]:
    """The release's proxy cuts its connections when it is replaced (graceSeconds 0)."""
    upgrade_proxy_drain(0)
    try:
        yield
    finally:
        values = yaml.safe_load(Path(CHART, "values.yaml").read_text())
        upgrade_proxy_drain(values["proxy"]["drain"]["graceSeconds"])


def test_proxy_connections_cut_workers_and_client_reconnect(
    proxy_without_drain, new_cluster, record_figure
):
    cluster = new_cluster()
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=120)
    cluster.get_client()  # the computations below run on it
    assert int(da.arange(1_000_000, chunks=100_000).sum().compute()) == 499_999_500_000
    jobs_before = {
        (ad["ClusterId"], ad["ProcId"]) for ad in queue(cluster.name, ["ClusterId", "ProcId"])
    }

    # A replaced proxy drains (proxy.drain): its connections outlive the
    # rollout (test_k8s_upgrade.py). Here its graceSeconds is 0: once the
    # new pod is ready, the old one closes every connection through it, as
    # a proxy that crashes or loses its node would.
    took = restart("proxy")
    record_figure(f"proxy Deployment rolled out in {took:.1f} s")

    def old_proxy_gone() -> bool:
        return len(kube_items("pods", NAMESPACE, "app.kubernetes.io/component=proxy")) == 1

    wait_for(old_proxy_gone, "the old proxy pod to exit", 120, interval=1)
    back = time.monotonic()

    # Workers that lost their scheduler end, and the held target of 2
    # replaces them; the client reconnects. What the cut connections held
    # (the client's futures, the workers' memory) is dask's to lose: a
    # client that reconnects starts with no futures.
    cluster.wait_for_workers(2, timeout=180)
    assert int(da.arange(1_000_000, chunks=100_000).sum().compute()) == 499_999_500_000
    record_figure(
        f"proxy connections cut: 2 workers and a result {time.monotonic() - back:.1f} s later"
    )
    active = [
        (ad["ClusterId"], ad["ProcId"])
        for ad in queue(cluster.name, ["ClusterId", "ProcId", "JobStatus"])
        if ad["JobStatus"] in (1, 2)
    ]
    assert len(active) == 2
    record_figure(
        f"proxy connections cut: {len(set(active) - jobs_before)} of 2 worker jobs replaced"
    )
    proxies = kube_items("pods", NAMESPACE, "app.kubernetes.io/component=proxy")
    assert [p["status"]["phase"] for p in proxies] == ["Running"]
    # Through the outage the client could reach neither the scheduler nor
    # the gateway's API (both behind the proxy): its watcher lived on and
    # its lease never lapsed.
    assert cluster._watcher is not None and cluster._watcher.stopped_reason is None
    assert not any(task.done() for task in cluster._watcher._tasks), "the watcher died"
    assert cluster.gateway.get_cluster(cluster.name).status.name == "RUNNING"
    # Stopped here, not after the fixture rolls the proxy back to its drain.
    cluster.shutdown()
