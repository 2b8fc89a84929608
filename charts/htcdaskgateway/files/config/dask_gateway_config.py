# dask-gateway-server configuration rendered by the htcdaskgateway chart:
# the Kubernetes backend, schedulers only (workers are HTCondor jobs that
# join through the proxy), and JupyterHub or simple auth. Settings come from
# values.yaml beside this file; secrets from the environment (a Secret).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chart_values import get, load

c = get_config()  # noqa: F821  # provided by traitlets when it runs this file
values = load()

c.DaskGateway.log_level = get(values, "gateway.logLevel")
c.DaskGateway.address = ":8000"
# Upstream's KubeBackend, watching only the schedulers' namespace unless the
# chart grants cluster-wide RBAC (namespaced_kube.py says why it is needed).
c.DaskGateway.backend_class = "namespaced_kube.NamespacedKubeBackend"
c.NamespacedKubeBackend.watch_namespace = get(values, "chart.watchNamespace")
# Each DaskCluster belongs to this ConfigMap of the release: helm uninstall
# deletes it, and the garbage collector the clusters (no uninstall hook).
c.NamespacedKubeBackend.cluster_owner = get(values, "chart.clusterOwner")
c.NamespacedKubeBackend.cluster_owner_namespace = get(values, "chart.schedulerNamespace")
c.KubeBackend.gateway_instance = get(values, "chart.instance")
# Schedulers report to the API at its in-cluster Service.
c.KubeBackend.api_url = get(values, "chart.apiUrl")

c.KubeClusterConfig.namespace = get(values, "chart.schedulerNamespace")
c.KubeClusterConfig.image = get(values, "chart.image")
c.KubeClusterConfig.image_pull_policy = get(values, "image.pullPolicy")
c.KubeClusterConfig.image_pull_secrets = [
    {"name": name} for name in get(values, "image.pullSecrets", [])
]


def size_pods(role: str, key: str) -> None:
    """The KubeBackend's cores and memory of ``role`` pods from the values under ``key``."""
    for trait, value in (("cores", "cores.request"), ("cores_limit", "cores.limit")):
        setattr(c.KubeClusterConfig, f"{role}_{trait}", float(get(values, f"{key}.{value}")))
    for trait, value in (("memory", "memory.request"), ("memory_limit", "memory.limit")):
        setattr(c.KubeClusterConfig, f"{role}_{trait}", get(values, f"{key}.{value}"))


# Schedulers, and worker pods only for an analyst's pod worker group, at
# most cluster.podWorkers.maxWorkers (the backend caps the DaskCluster's
# replicas there; 0: the controller never creates a worker pod).
# htcdaskgateway's plugin keeps the HTCondor workers from being retired by
# the gateway's own worker count.
c.KubeClusterConfig.scheduler_cmd = [
    "dask", "scheduler", "--preload", "htcdaskgateway.scheduler_plugin",
]  # fmt: skip
max_pods = int(get(values, "cluster.podWorkers.maxWorkers"))
c.KubeClusterConfig.cluster_max_workers = max_pods
if max_pods:
    c.KubeClusterConfig.worker_cmd = ["dask", "worker"]
    size_pods("worker", "cluster.podWorkers")
    # As locked down as the scheduler pods (restricted Pod Security, no
    # API token, /tmp the only writable path).
    c.KubeClusterConfig.worker_extra_pod_config = get(values, "chart.schedulerPod.pod")
    c.KubeClusterConfig.worker_extra_container_config = get(values, "chart.schedulerPod.container")
else:
    # A worker pod could only appear through a bug; it would say why it fails.
    c.KubeClusterConfig.worker_cmd = [
        "sh", "-c", "echo 'htcdaskgateway: cluster.podWorkers.maxWorkers is 0' >&2; exit 1", "--",
    ]  # fmt: skip
# Idle culling by htcdaskgateway's plugin, which counts an open cluster
# object or a connected client as attended; dask-gateway's own idle_timeout
# counts only tasks, and would stop an analyst who is reading a plot.
c.KubeClusterConfig.idle_timeout = 0
c.KubeClusterConfig.environment = {
    **dict(get(values, "cluster.environment", {})),
    "DASK_GATEWAY__HTCONDOR__UNATTENDED_TIMEOUT": str(float(get(values, "cluster.idleTimeout"))),
}

size_pods("scheduler", "cluster.scheduler")
# The controller builds the scheduler pod; these make it as locked down as
# the chart's own pods. /tmp is the only writable path dask needs.
c.KubeClusterConfig.scheduler_extra_pod_config = get(values, "chart.schedulerPod.pod")
c.KubeClusterConfig.scheduler_extra_container_config = get(values, "chart.schedulerPod.container")

auth_type = get(values, "gateway.auth.type")
if auth_type == "jupyterhub":
    c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
    api_url = get(values, "gateway.auth.jupyterhub.apiUrl", None)
    if not api_url:
        # Kubernetes sets these for z2jh's "hub" Service in this namespace.
        host = os.environ.get("HUB_SERVICE_HOST")
        port = os.environ.get("HUB_SERVICE_PORT")
        if not (host and port):
            raise ValueError(
                "gateway.auth.jupyterhub.apiUrl is not set and there is no JupyterHub 'hub' "
                "Service in this namespace (HUB_SERVICE_HOST/PORT unset): set apiUrl"
            )
        api_url = f"http://{host}:{port}/hub/api"
    c.JupyterHubAuthenticator.jupyterhub_api_url = api_url
    c.JupyterHubAuthenticator.jupyterhub_service_name = get(
        values, "gateway.auth.jupyterhub.serviceName", ""
    )
    # The token: JUPYTERHUB_API_TOKEN, from the Secret (the authenticator's default).
elif auth_type == "simple":
    c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
    password = os.environ.get("HTCDASKGATEWAY_SIMPLE_PASSWORD")
    if password:
        c.SimpleAuthenticator.password = password
else:
    raise ValueError(f"gateway.auth.type must be 'jupyterhub' or 'simple', not {auth_type!r}")

for name, snippet in sorted(get(values, "gateway.extraConfig", {}).items()):
    exec(compile(snippet, f"gateway.extraConfig.{name}", "exec"), {"c": c})
