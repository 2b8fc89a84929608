"""dask-gateway-server's Kubernetes backend and controller, watching one namespace.

Why this exists: upstream's KubeBackend and KubeController (2026.3.0) build
their informers on cluster-wide list calls (`list_cluster_custom_object`,
`list_pod_for_all_namespaces`, `list_endpoints_for_all_namespaces`), so
their ServiceAccounts need ClusterRoles even though every object they touch
lives in the one namespace the chart gives the schedulers (upstream issue
dask/dask-gateway#661, "Slimming down Helm chart RBAC", still open). There
is no setting for it, so this module is the one place that adapts them: it
subclasses both and wraps the Kubernetes API clients they assign, turning
exactly those three list calls into their namespaced forms. Every other
call they make already names its namespace. With `watch_namespace` empty
the clients are left as they are (the chart's `rbac.clusterWide: true`).

The API server loads `NamespacedKubeBackend` by name from the chart's
config; the controller runs this file as its main program.
"""

from __future__ import annotations

from typing import Any

from dask_gateway_server.backends.kubernetes.backend import KubeBackend
from dask_gateway_server.backends.kubernetes.controller import KubeController
from traitlets import Unicode
from traitlets.config import Configurable

# Cluster-wide list call -> (namespaced list call): the informers pass the
# same keyword arguments (label selector, watch, resource version) to both.
NAMESPACED_LISTS = {
    "list_cluster_custom_object": "list_namespaced_custom_object",
    "list_pod_for_all_namespaces": "list_namespaced_pod",
    "list_endpoints_for_all_namespaces": "list_namespaced_endpoints",
}


class NamespacedClient:
    """A Kubernetes API client whose cluster-wide lists are namespaced lists."""

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    @property
    def api_client(self) -> Any:
        return self.client.api_client

    def __getattr__(self, name: str) -> Any:
        namespaced = NAMESPACED_LISTS.get(name)
        if namespaced is None:
            return getattr(self.client, name)
        method = getattr(self.client, namespaced)
        namespace = self.namespace

        async def list_in_namespace(*args: Any, **kwargs: Any) -> Any:
            return await method(*args, namespace=namespace, **kwargs)

        list_in_namespace.__name__ = namespaced
        return list_in_namespace


class WatchNamespace(Configurable):
    """The `watch_namespace` setting and the client wrapping, for both classes."""

    watch_namespace = Unicode(
        "",
        help="""
        The only namespace whose DaskClusters, pods and endpoints are watched
        (the schedulers' namespace). Empty: every namespace, as upstream.
        """,
        config=True,
    )

    def _namespaced(self, client: Any) -> Any:
        if client is None or not self.watch_namespace:
            return client
        return NamespacedClient(client, self.watch_namespace)

    @property
    def core_client(self) -> Any:
        return self.__dict__.get("_core_client")

    @core_client.setter
    def core_client(self, client: Any) -> None:
        self.__dict__["_core_client"] = self._namespaced(client)

    @property
    def custom_client(self) -> Any:
        return self.__dict__.get("_custom_client")

    @custom_client.setter
    def custom_client(self, client: Any) -> None:
        self.__dict__["_custom_client"] = self._namespaced(client)


class NamespacedKubeBackend(WatchNamespace, KubeBackend):
    """The gateway API's backend, needing only a namespaced Role."""


class NamespacedKubeController(WatchNamespace, KubeController):
    """The controller, needing only a namespaced Role."""


if __name__ == "__main__":
    NamespacedKubeController.launch_instance()
