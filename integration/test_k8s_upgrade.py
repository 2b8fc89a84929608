"""An operator's `helm upgrade` under an analyst's running cluster (E2E_TARGET=k8s).

Every HTCondor worker (and the analyst's client) holds a TLS connection to
its scheduler through the proxy, Traefik; a dask worker whose connection
drops does not come back, its job is replaced and its data is lost
(issue 26 point 14). So:

- an upgrade that changes what Traefik runs replaces its pod, and the old
  pod drains (chart value proxy.drain): it keeps serving the connections it
  has until they end, while the new pod takes new ones; no worker job is
  replaced and the data on the workers stays;
- an upgrade that does not change what Traefik runs, the first one after
  install included, leaves its pod alone (issue 30 point 1).

Each test installs a release of its own (the shared `htc` release has been
upgraded by other suites: only a fresh one has its first upgrade ahead).
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator

import dask.array as da
from distributed import wait

from conftest import (
    RIG_NODE_IP,
    helm,
    kube_items,
    kubectl,
    nothing_queued,
    queue,
    release_ports,
    remove_release,
    wait_for,
    worker_name_of,
)
from htcdaskgateway import HTCGateway

CHART = "/src/charts/htcdaskgateway"
RIG_VALUES = "/src/charts/ci/rig-values.yaml"
PROXY = "app.kubernetes.io/component=proxy"
# Longer than Traefik's own default grace (10 s) and the chart's former
# pod grace (60 s) less that: a proxy that cuts its connections has done
# so by then, and the workers' scheduler has dropped them.
AFTER_ROLLOUT = 40


@contextlib.contextmanager
def fresh_release(release: str, web: int, tcp: int) -> Iterator[HTCGateway]:
    """A release of the working tree's chart in namespace ``release``; a gateway client for it."""
    namespace = release
    install = helm(
        "install", release, CHART, "--namespace", namespace, "--create-namespace",
        "--values", RIG_VALUES,
        *release_ports(web, tcp),
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    gateway = None
    try:
        encoded = kubectl(
            "get", "secret", f"{release}-htcdaskgateway-https", "--namespace", namespace,
            "--output", "jsonpath={.data.ca\\.crt}",
        )  # fmt: skip
        ca = base64.b64decode(encoded).decode()
        address = f"https://{RIG_NODE_IP}:{web}"
        gateway = HTCGateway(
            address=address, proxy_address=f"tls://{RIG_NODE_IP}:{tcp}", htcondor={"api-ca": ca}
        )
        # helm's --wait sees the pods ready; Traefik loads the API's route a
        # moment later.
        wait_for(lambda: _lists(gateway), f"{address} to answer", 60, interval=1)
        yield gateway
    finally:
        if gateway is not None:
            gateway.close()
        remove_release(release, namespace)


def _lists(gateway: HTCGateway) -> bool:
    try:
        gateway.list_clusters()
    except Exception:
        return False
    return True


def upgrade(release: str, *sets: str) -> float:
    """`helm upgrade --reuse-values --set ...`; the seconds helm took (--wait)."""
    args = [a for s in sets for a in ("--set", s)]
    started = time.monotonic()
    result = helm(
        "upgrade", release, CHART, "--namespace", release, "--reuse-values", *args,
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return time.monotonic() - started


def proxy_pods(namespace: str) -> dict[str, dict]:
    """The release's Traefik pods by uid (terminating ones included)."""
    return {p["metadata"]["uid"]: p for p in kube_items("pods", namespace, PROXY)}


def ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def worker_jobs(cluster_name: str) -> dict[str, int]:
    """Every worker job of the cluster in the queue: dask worker name -> JobStatus."""
    ads = queue(cluster_name, ["ClusterId", "ProcId", "GlobalJobId", "JobStatus"])
    return {worker_name_of(ad): ad["JobStatus"] for ad in ads}


def two_workers_with_data(gateway: HTCGateway):
    """A cluster of 2 running workers holding a persisted array, scattered data and a result."""
    cluster = gateway.new_cluster(shutdown_on_close=True)
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=120)
    client = cluster.get_client()
    array = client.persist(da.arange(1_000_000, chunks=100_000))
    scattered = client.scatter([list(range(i, i + 1000)) for i in range(8)])
    result = client.submit(sum, range(1000))
    wait([array, *scattered, result], timeout=60)
    # The data is on both workers (scattered round-robin).
    held = {w for workers in client.who_has(scattered).values() for w in workers}
    assert len(held) == 2, held
    return cluster, client, array, scattered, result


def check_nothing_lost(cluster, client, array, scattered, result, workers, jobs, holders) -> None:
    """The same workers in the same jobs, still holding the data they held."""
    assert worker_jobs(cluster.name) == jobs, "a worker job was replaced or lost"
    assert client.status == "running"
    info = client.scheduler_info()["workers"]
    assert {addr: w["name"] for addr, w in info.items()} == workers
    # Nothing had to be recomputed: the keys are where they were.
    assert {k: sorted(v) for k, v in client.who_has([array, *scattered]).items()} == holders
    # Scattered data cannot be recomputed: it is still there or it is lost.
    assert all(f.status == "finished" for f in [*scattered, result])
    assert client.gather(scattered[3]) == list(range(3, 1003))
    assert result.result(timeout=30) == 499_500
    assert int(array.sum().compute()) == 499_999_500_000


def test_helm_upgrade_that_rolls_the_proxy_keeps_every_worker_and_its_data(record_figure):
    release = "htc-roll"
    with fresh_release(release, web=30480, tcp=31186) as gateway:
        cluster, client, array, scattered, result = two_workers_with_data(gateway)
        workers = {addr: w["name"] for addr, w in client.scheduler_info()["workers"].items()}
        jobs = worker_jobs(cluster.name)
        assert sorted(jobs.values()) == [2, 2] and set(jobs) == set(workers.values())
        holders = {k: sorted(v) for k, v in client.who_has([array, *scattered]).items()}
        before = proxy_pods(release)
        (old,) = before

        # One value that changes Traefik's arguments: its pod is replaced,
        # with a task running.
        running = client.submit(time.sleep, 20, pure=False)
        took = upgrade(release, "proxy.logLevel=DEBUG")
        pods = proxy_pods(release)
        new = [uid for uid in pods if uid not in before]
        assert len(new) == 1 and ready(pods[new[0]]), pods
        record_figure(
            f"helm upgrade rolling the proxy (--wait): {took:.1f} s until the new Traefik was ready"
        )
        rolled = time.monotonic()
        # The old pod drains: told to stop, it keeps the workers' and the
        # client's connections, which keep reaching it.
        assert old in pods and pods[old]["metadata"].get("deletionTimestamp"), pods[old]
        time.sleep(AFTER_ROLLOUT)
        check_nothing_lost(cluster, client, array, scattered, result, workers, jobs, holders)
        assert running.result(timeout=60) is None
        assert old in proxy_pods(release), "the old proxy exited with connections open"
        record_figure(
            f"proxy rolled under 2 workers: {len(jobs)} of {len(jobs)} worker jobs kept, "
            f"data intact {time.monotonic() - rolled:.0f} s after the rollout"
        )
        # New connections go to the new proxy: the cluster still scales.
        cluster.scale(3)
        cluster.wait_for_workers(3, timeout=120)
        assert int(array.sum().compute()) == 499_999_500_000

        # Once the cluster's connections end, the old pod ends too, long
        # before its grace (proxy.drain.graceSeconds) is over.
        client.close()
        cluster.shutdown()
        ended = time.monotonic()
        wait_for(lambda: nothing_queued(cluster.name), "the cluster's jobs to leave", 60)
        wait_for(lambda: old not in proxy_pods(release), "the drained proxy pod to exit", 120, 1)
        record_figure(
            f"the drained proxy pod exited {time.monotonic() - ended:.1f} s after its "
            f"cluster shut down"
        )
        assert [ready(p) for p in proxy_pods(release).values()] == [True]


def test_helm_upgrade_that_leaves_traefik_alone_keeps_its_pod(record_figure):
    release = "htc-keep"
    with fresh_release(release, web=30580, tcp=31286) as gateway:
        cluster, client, array, scattered, result = two_workers_with_data(gateway)
        workers = {addr: w["name"] for addr, w in client.scheduler_info()["workers"].items()}
        jobs = worker_jobs(cluster.name)
        holders = {k: sorted(v) for k, v in client.who_has([array, *scattered]).items()}
        before = proxy_pods(release)
        generation = proxy_generation(release)

        # The release's first upgrade (issue 30 point 1), with a task
        # running: the API's and controller's configuration changes.
        running = client.submit(time.sleep, 20, pure=False)
        api = pod_uids(release, "gateway")
        took = upgrade(release, "gateway.logLevel=INFO", "controller.logLevel=INFO")
        record_figure(f"first helm upgrade, proxy untouched (--wait): {took:.1f} s")
        # The API did roll: the upgrade was real.
        wait_for(lambda: not api & pod_uids(release, "gateway"), "a new API pod", 120, interval=1)
        time.sleep(AFTER_ROLLOUT / 4)
        assert set(proxy_pods(release)) == set(before), "the first upgrade replaced Traefik's pod"
        # A proxy value that Traefik does not run with: an annotation of its
        # Service (the chart used to hash every proxy value into the pod).
        took = upgrade(release, "proxy.service.annotations.htcdaskgateway\\.test/upgraded=yes")
        record_figure(f"helm upgrade of the proxy's Service only (--wait): {took:.1f} s")
        time.sleep(AFTER_ROLLOUT / 2)

        after = proxy_pods(release)
        assert set(after) == set(before), "a change of the proxy's Service replaced Traefik's pod"
        assert not any(p["metadata"].get("deletionTimestamp") for p in after.values())
        statuses = [s for p in after.values() for s in p["status"]["containerStatuses"]]
        assert [s["restartCount"] for s in statuses] == [0]
        assert proxy_generation(release) == generation
        assert running.result(timeout=60) is None
        check_nothing_lost(cluster, client, array, scattered, result, workers, jobs, holders)
        client.close()
        cluster.shutdown()
        wait_for(lambda: nothing_queued(cluster.name), "the cluster's jobs to leave", 60)


def pod_uids(namespace: str, component: str) -> set[str]:
    selector = f"app.kubernetes.io/component={component}"
    return {p["metadata"]["uid"] for p in kube_items("pods", namespace, selector)}


def proxy_generation(release: str) -> str:
    deployment = f"deploy/{release}-htcdaskgateway-proxy"
    return kubectl("get", deployment, "-n", release, "-o", "jsonpath={.metadata.generation}")
