"""HTCondor workers and Kubernetes pod workers in one cluster, on the rig (issue 27).

A release of its own with cluster.podWorkers enabled: the analyst's cluster
scales its HTCondor group and adds a pod group; both kinds compute one
checked result. Pod workers reach their scheduler inside the cluster,
HTCondor workers through the proxy; the NetworkPolicies admit exactly that
(probe pods, as test_k8s_security.py's); shutdown() leaves no pod and no job.
"""

from __future__ import annotations

import time

import pytest
from distributed import get_worker

from conftest import (
    RIG_NODE_IP,
    TARGET,
    helm,
    kube_items,
    nothing_queued,
    release_ports,
    remove_release,
    wait_for,
)
from htcdaskgateway import HTCGateway
from test_k8s_chart import answers, api_ca
from test_k8s_security import probe

pytestmark = pytest.mark.skipif(TARGET != "k8s", reason="the rig's pods (E2E_TARGET=k8s)")

CHART = "/src/charts/htcdaskgateway"
# --set-json: helm's --set reads 0.1 as a string, which the schema refuses.
PODS = (
    "cluster.podWorkers.maxWorkers=2",
    'cluster.podWorkers.cores={"request": 0.1, "limit": 1}',
    'cluster.podWorkers.memory={"request": "256M", "limit": "1G"}',
)


def test_htcondor_and_pod_workers_in_one_cluster(record_figure):
    release = namespace = "htc-pods"
    web, tcp = 30780, 31486
    install = helm(
        "install", release, CHART, "--namespace", namespace, "--create-namespace",
        "--values", "/src/charts/ci/rig-values.yaml",
        *(arg for setting in PODS for arg in ("--set-json", setting)), *release_ports(web, tcp),
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    gateway = None
    try:
        ca = api_ca(release, namespace)
        address = f"https://{RIG_NODE_IP}:{web}"
        wait_for(lambda: answers(f"{address}/api/health", ca), "the API", 60, interval=1)
        gateway = HTCGateway(address=address, proxy_address=f"tls://{RIG_NODE_IP}:{tcp}",
                             htcondor={"api-ca": ca})  # fmt: skip
        cluster = gateway.new_cluster()
        name = cluster.name
        started = time.monotonic()
        cluster.scale(1)
        cluster.add_worker_group("pods", 1, kind="pods")
        cluster.wait_for_workers(2, timeout=240)
        record_figure(f"1 HTCondor + 1 pod worker joined in {time.monotonic() - started:.1f} s")
        client = cluster.get_client()
        workers = client.scheduler_info()["workers"]
        htcondor = [a for a, w in workers.items() if str(w["name"]).startswith("htc-")]
        pod = [a for a, w in workers.items() if not str(w["name"]).startswith("htc-")]
        assert len(htcondor) == 1 and len(pod) == 1, workers
        assert client.submit(sum, range(1000)).result() == 499_500

        def where(_: int) -> str:
            time.sleep(0.3)
            return get_worker().name

        assert len(set(client.gather(client.map(where, range(20), pure=False)))) == 2

        # The pod worker is in the cluster, at its pod's address; the
        # HTCondor worker on the execute node, outside it.
        cluster_id = name.split(".", 1)[1]
        (worker_pod,) = kube_items("pods", namespace,
                                   f"gateway.dask.org/cluster={cluster_id},"
                                   "app.kubernetes.io/component=dask-worker")  # fmt: skip
        assert worker_pod["status"]["podIP"] in pod[0]
        (scheduler,) = kube_items("pods", namespace,
                                  f"gateway.dask.org/cluster={cluster_id},"
                                  "app.kubernetes.io/component=dask-scheduler")  # fmt: skip
        instance = scheduler["metadata"]["labels"]["gateway.dask.org/instance"]
        as_worker = {"gateway.dask.org/instance": instance,
                     "app.kubernetes.io/component": "dask-worker"}  # fmt: skip
        to_scheduler = f"{scheduler['status']['podIP']}:8786"
        to_worker = pod[0].split("://", 1)[1]
        # A pod labelled as a worker reaches the scheduler; any other pod
        # reaches neither the scheduler's 8786 nor a worker pod.
        seen = probe(namespace, as_worker, to_scheduler + "+")
        seen += probe(namespace, {}, to_scheduler, to_worker)
        assert [v.split(":")[0] for v in seen] == ["open", "closed", "closed"], seen

        cluster.shutdown()
        wait_for(lambda: nothing_queued(name), "the HTCondor job to leave", 60)
        wait_for(lambda: not kube_items("pods", namespace,
                                        f"gateway.dask.org/cluster={cluster_id}"),
                 "the scheduler and worker pods to go", 120)  # fmt: skip
    finally:
        if gateway is not None:
            gateway.close()
        remove_release(release, namespace)
