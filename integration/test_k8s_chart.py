"""The chart as operators run it, on the Kubernetes rig (E2E_TARGET=k8s).

helm test, the Kubernetes objects of a cluster while it runs and after it
shuts down, `helm upgrade` rolling the pods under a running cluster, an
upgrade from the previous chart, and the uninstall of a release whose
image cannot start. (Install and uninstall with a cluster running, as an
operator does it: test_k8s_walkthrough.py.)
"""

from __future__ import annotations

import base64
import os
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from conftest import (
    RIG_NODE_IP,
    cluster_objects,
    helm,
    kube_items,
    kubectl,
    nothing_queued,
    plain_http,
    queue,
    release_ports,
    remove_release,
    wait_for,
    worker_name_of,
)
from htcdaskgateway import HTCGateway

CHART = "/src/charts/htcdaskgateway"
RELEASES = {"htc": "dask-gateway", "htc-hub": "dask-gateway-hub"}


def api_ca(release: str, namespace: str) -> str:
    """The CA of the release's own HTTPS certificate (its Secret's ca.crt)."""
    encoded = kubectl(
        "get", "secret", f"{release}-htcdaskgateway-https", "--namespace", namespace,
        "--output", "jsonpath={.data.ca\\.crt}",
    )  # fmt: skip
    return base64.b64decode(encoded).decode()


def answers(url: str, ca: str) -> bool:
    context = ssl.create_default_context(cadata=ca)
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def pod_names(namespace: str, component: str) -> set[str]:
    selector = f"app.kubernetes.io/component={component}"
    return {pod["metadata"]["name"] for pod in kube_items("pods", namespace, selector)}


@contextmanager
def api_asked_throughout(url: str, interval: float = 0.2) -> Iterator[list[tuple[float, str]]]:
    """GET ``url`` every ``interval`` s in a thread while the block runs.

    Yields the list it fills: (seconds taken, outcome) per request, the
    outcome an HTTP status, or the error if nothing answered. One request
    each, no retry.
    """
    context = ssl.create_default_context(cafile=os.environ["DASK_GATEWAY__HTCONDOR__API_CA"])
    asked: list[tuple[float, str]] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            started = time.monotonic()
            status, body = plain_http(url, context=context, timeout=60)
            asked.append((time.monotonic() - started, str(status or body.decode())))
            stop.wait(interval)

    thread = threading.Thread(target=ask, name="api-asker", daemon=True)
    thread.start()
    try:
        yield asked
    finally:
        stop.set()
        thread.join(timeout=70)


def test_helm_test_passes_for_both_releases():
    for release, namespace in RELEASES.items():
        result = helm("test", release, "--namespace", namespace)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Phase:          Succeeded" in result.stdout
        # Deleted once it ended, so it cannot outlive helm uninstall.
        wait_for(lambda: not pod_names(namespace, "test"), "the helm test pod to go", 30)  # noqa: B023


def test_a_cluster_is_a_daskcluster_and_a_scheduler_pod_until_shutdown(new_cluster):
    cluster = new_cluster()
    cluster.scale(1)
    cluster.wait_for_workers(1, timeout=120)

    objects = cluster_objects(cluster.name)
    (daskcluster,) = objects["daskclusters"]
    # The release owns it: helm uninstall deletes it through the garbage collector.
    (owner,) = daskcluster["metadata"]["ownerReferences"]
    assert owner["kind"] == "ConfigMap" and owner["name"].endswith("-htcdaskgateway-clusters")
    assert daskcluster["status"]["phase"] == "Running"
    # The controller never gets a worker pod to make: replicas stay 0.
    assert daskcluster["spec"].get("replicas", 0) == 0
    (pod,) = objects["pods"]
    assert pod["status"]["phase"] == "Running"
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "dask-scheduler"
    command = pod["spec"]["containers"][0]["args"]
    assert "htcdaskgateway.scheduler_plugin" in command, command
    # Idle culling is the plugin's (cluster.idleTimeout, default 3600 s).
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["DASK_GATEWAY__HTCONDOR__UNATTENDED_TIMEOUT"] == "3600.0"
    assert "--dg-idle-timeout" not in command or (
        command[command.index("--dg-idle-timeout") + 1] in ("0", "0.0")
    ), command
    (route,) = objects["ingressroutetcps"]
    assert f"daskgateway-{cluster.name}" in route["spec"]["routes"][0]["match"]
    assert len(objects["secrets"]) == 1  # the cluster's TLS credentials

    # The worker is the HTCondor job it is named after, outside the cluster.
    (worker,) = cluster.get_client().scheduler_info()["workers"].values()
    (job,) = queue(cluster.name, ["ClusterId", "ProcId", "GlobalJobId", "JobStatus"])
    assert worker["name"] == worker_name_of(job)
    assert job["JobStatus"] == 2

    cluster.shutdown()
    wait_for(lambda: nothing_queued(cluster.name), "the cluster's jobs to leave the queue", 30)

    def all_gone() -> bool:
        return not any(cluster_objects(cluster.name).values())

    # rig-values.yaml keeps a stopped cluster's record for seconds, not a day.
    wait_for(all_gone, f"every Kubernetes object of {cluster.name} to go", 60, interval=1)


def test_helm_upgrade_rolls_the_pods_and_a_running_cluster_survives(new_cluster, record_figure):
    cluster = new_cluster()
    cluster.scale(1)
    cluster.wait_for_workers(1, timeout=120)
    client = cluster.get_client()
    assert client.submit(sum, range(10)).result() == 45
    before = {c: pod_names("dask-gateway", c) for c in ("gateway", "controller")}

    started = time.monotonic()
    try:
        # Every request during the roll is one plain GET through the proxy,
        # with no retry: the client's own retries would hide a pod that was
        # stopped while the proxy still routed to it.
        health = f"{os.environ['DASK_GATEWAY__ADDRESS']}/api/health"
        with api_asked_throughout(health) as asked:
            upgrade = helm(
                "upgrade", "htc", CHART, "--namespace", "dask-gateway", "--reuse-values",
                "--set", "gateway.logLevel=INFO", "--set", "controller.logLevel=INFO", "--wait",
            )  # fmt: skip
            assert upgrade.returncode == 0, upgrade.stderr
            for component, old in before.items():
                wait_for(
                    lambda c=component, o=old: (
                        pod_names("dask-gateway", c).isdisjoint(o)
                        and len(pod_names("dask-gateway", c)) == 1
                    ),
                    f"the {component} pod to be replaced",
                    120,
                    interval=1,
                )
            rolled = time.monotonic() - started
            # The proxy looks at EndpointSlices at most every 2 s: ask on
            # past the old pod's end by more than that.
            time.sleep(4)
        record_figure(f"helm upgrade rolled the API and controller in {rolled:.1f} s")
        outcomes = [outcome for _, outcome in asked]
        record_figure(
            f"API asked {len(asked)} times during that upgrade, one GET each: "
            f"{outcomes.count('200')} answered 200, slowest {max(t for t, _ in asked):.2f} s"
        )
        assert len(asked) > 20
        assert set(outcomes) == {"200"}, [a for a in asked if a[1] != "200"]
        gateway = HTCGateway()
        try:
            assert cluster.name in [c.name for c in gateway.list_clusters()]
        finally:
            gateway.close()
        assert client.submit(sum, range(100)).result() == 4950
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=120)
    finally:
        restore = helm(
            "upgrade", "htc", CHART, "--namespace", "dask-gateway", "--reuse-values",
            "--set", "gateway.logLevel=DEBUG", "--set", "controller.logLevel=DEBUG", "--wait",
        )  # fmt: skip
        assert restore.returncode == 0, restore.stderr


def test_uninstall_of_a_release_whose_image_cannot_start_ends_in_time_and_leaves_nothing(
    record_figure,
):
    # Issue 30, point 3: with a wrong image tag nothing of the chart's image
    # can start. A pre-delete hook Job running that image made `helm
    # uninstall` wait out its timeout and left the release "uninstalling";
    # a failed `helm test` left its pod behind.
    release, namespace, web, tcp = "htc-bad", "htc-bad", 30680, 31386
    install = helm(
        "install", release, CHART, "--namespace", namespace, "--create-namespace",
        "--values", "/src/charts/ci/rig-values.yaml", "--set", "image.tag=no-such-tag",
        *release_ports(web, tcp), "--wait=false",
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    try:

        def cannot_start() -> list[str]:
            pods = kube_items("pods", namespace, f"app.kubernetes.io/instance={release}")
            return [
                pod["metadata"]["name"] for pod in pods
                for status in pod.get("status", {}).get("containerStatuses", [])
                if status.get("state", {}).get("waiting", {}).get("reason", "").startswith("Err")
            ]  # fmt: skip

        wait_for(cannot_start, "the release's pods to fail to start", 60, 1)
        test = helm("test", release, "--namespace", namespace, "--timeout", "20s")
        assert test.returncode != 0, test.stdout
        started = time.monotonic()
        uninstall = helm("uninstall", release, "--namespace", namespace, "--wait",
                         "--timeout", "120s")  # fmt: skip
        took = time.monotonic() - started
        assert uninstall.returncode == 0, uninstall.stdout + uninstall.stderr
        assert helm("status", release, "--namespace", namespace).returncode != 0
        kinds = ("pods", "jobs", "configmaps", "secrets", "services", "daskclusters")
        selector = f"app.kubernetes.io/instance={release}"

        def left() -> dict[str, list[str]]:
            found = {k: [i["metadata"]["name"] for i in kube_items(k, namespace, selector)]
                     for k in kinds}  # fmt: skip
            return {k: names for k, names in found.items() if names}

        wait_for(lambda: not left(), f"nothing of {release} to be left in {namespace}", 60, 1)
        record_figure(
            f"helm uninstall of a release whose image cannot start: {took:.1f} s "
            "(timeout 120 s), nothing left (no hook Job, no test pod)"
        )
    finally:
        remove_release(release, namespace, "--no-hooks", "--timeout", "60s")


def test_helm_upgrade_from_the_previous_chart_keeps_its_running_cluster(record_figure):
    # The chart as last released (e2e.sh: git archive PREVIOUS_CHART_COMMIT),
    # with its own rig values: plain HTTP, cluster-wide roles, no policies.
    previous = "/run/htcdaskgateway/previous-charts"
    release, namespace, web, tcp = "htc-prev", "htc-prev", 30380, 31086
    ports = release_ports(web, tcp)
    install = helm(
        "install", release, f"{previous}/htcdaskgateway", "--namespace", namespace,
        "--create-namespace", "--values", f"{previous}/ci/rig-values.yaml", *ports,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    gateways: list[HTCGateway] = []
    try:
        old_address = f"http://{RIG_NODE_IP}:{web}"
        wait_for(lambda: plain_http(f"{old_address}/api/health")[0] == 200,
                 "the previous chart's API over HTTP", 60, interval=1)  # fmt: skip
        old = HTCGateway(address=old_address, proxy_address=f"tls://{RIG_NODE_IP}:{tcp}")
        gateways.append(old)
        cluster = old.new_cluster(shutdown_on_close=False)
        gateways.append(cluster)
        cluster.scale(1)
        cluster.wait_for_workers(1, timeout=120)
        client = cluster.get_client()
        assert client.submit(sum, range(10)).result() == 45

        started = time.monotonic()
        upgrade = helm(
            "upgrade", release, CHART, "--namespace", namespace,
            "--values", "/src/charts/ci/rig-values.yaml", *ports,
        )  # fmt: skip
        assert upgrade.returncode == 0, upgrade.stderr
        ca = api_ca(release, namespace)
        address = f"https://{RIG_NODE_IP}:{web}"
        wait_for(lambda: answers(f"{address}/api/health", ca), "the API over HTTPS", 120, 1)
        record_figure(
            f"helm upgrade from the previous chart ({os.environ['PREVIOUS_CHART_COMMIT']}) "
            f"to HTTPS and namespaced roles: API back in {time.monotonic() - started:.1f} s"
        )
        # Plain HTTP now matches no route (TLS-only), the API never sees it.
        assert plain_http(f"{old_address}/api/health")[0] == 404
        # The cluster started under the previous chart runs on: its client
        # computes, and the upgraded gateway lists, scales and stops it.
        assert client.submit(sum, range(100)).result() == 4950
        new = HTCGateway(address=address, proxy_address=f"tls://{RIG_NODE_IP}:{tcp}",
                         htcondor={"api-ca": ca})  # fmt: skip
        gateways.append(new)
        assert cluster.name in [c.name for c in new.list_clusters()]
        # The upgraded API gave the previous chart's cluster to the release's
        # owner ConfigMap, so that helm uninstall deletes it too.
        (daskcluster,) = cluster_objects(cluster.name)["daskclusters"]
        owners = [o["name"] for o in daskcluster["metadata"].get("ownerReferences", [])]
        assert owners == [f"{release}-htcdaskgateway-clusters"], owners
        again = new.connect(cluster.name)
        gateways.append(again)
        again.scale(2)
        again.wait_for_workers(2, timeout=120)
        client.close()
        again.shutdown()
        wait_for(lambda: nothing_queued(cluster.name), "the cluster's jobs to leave", 60)
        wait_for(lambda: not any(cluster_objects(cluster.name).values()),
                 "the cluster's Kubernetes objects to go", 60)  # fmt: skip
    finally:
        for opened in reversed(gateways):
            opened.close()
        remove_release(release, namespace)
