# dask-gateway-server kube-controller configuration rendered by the
# htcdaskgateway chart. The controller turns each DaskCluster into a
# scheduler pod, its credentials Secret, a headless Service, and two Traefik
# routes: dashboards by path on "web", scheduler TLS by SNI on "tcp".
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chart_values import get, load

c = get_config()  # noqa: F821  # provided by traitlets when it runs this file
values = load()

c.KubeController.log_level = get(values, "controller.logLevel")
c.KubeController.address = ":8000"
c.KubeController.api_url = get(values, "chart.apiUrl")
c.KubeController.gateway_instance = get(values, "chart.instance")
# Run as namespaced_kube.NamespacedKubeController (the Deployment's command).
c.NamespacedKubeController.watch_namespace = get(values, "chart.watchNamespace")
c.KubeController.proxy_web_entrypoint = "web"
c.KubeController.proxy_tcp_entrypoint = "tcp"
c.KubeController.proxy_web_middlewares = [
    {"name": get(values, "chart.dashboardMiddleware"), "namespace": get(values, "chart.namespace")}
]
c.KubeController.completed_cluster_max_age = float(get(values, "controller.completedClusterMaxAge"))
c.KubeController.completed_cluster_cleanup_period = float(
    get(values, "controller.completedClusterCleanupPeriod")
)
