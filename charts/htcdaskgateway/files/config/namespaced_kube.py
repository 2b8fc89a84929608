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

The controller also says why a scheduler stopped (`SchedulerExitReport`):
upstream marks the cluster failed and deletes the scheduler pod in the same
step, logging only that it "terminated", so the exit code, the kill reason
(OOMKilled) and the scheduler's last words were gone before an operator
could look.

And the backend makes each DaskCluster belong to a ConfigMap of the release
(`ReleaseOwnedClusters`): `helm uninstall` deletes that ConfigMap and
Kubernetes' garbage collector deletes the clusters, then their scheduler
pods, Secrets, Services and routes (which belong to the DaskCluster). No
pre-delete hook Job has to run, so an uninstall cannot hang on a pod that
cannot start (a wrong image tag) and leaves no hook Job behind.

The API server loads `NamespacedKubeBackend` by name from the chart's
config; the controller runs this file as its main program.
"""

from __future__ import annotations

import signal
from collections import OrderedDict
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


SCHEDULER_CONTAINER = "dask-scheduler"
LAST_WORDS = 10  # log lines of a failed scheduler kept in the report
SIGNAL_NAMES = {int(sig): sig.name for sig in signal.Signals}
# Clusters already reported: until the informer sees the Failed phase the
# controller handles a failed cluster again (and then finds its pod deleted).
REPORTED_MAX = 1000


def scheduler_exit(pod: dict[str, Any] | None) -> str:
    """Why a scheduler pod's container stopped, from the pod as the informer last saw it."""
    if pod is None:
        return "its pod is gone (deleted, or never seen)"
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "its pod was deleted"
    status = pod.get("status", {})
    for container in status.get("containerStatuses", ()):
        if container.get("name") != SCHEDULER_CONTAINER:
            continue
        ended = container.get("state", {}).get("terminated")
        if not ended:
            break
        code = ended.get("exitCode")
        said = f"{ended.get('reason') or 'exited'}, exit code {code}"
        if isinstance(code, int) and code > 128 and code - 128 in SIGNAL_NAMES:
            said += f" ({SIGNAL_NAMES[code - 128]})"
        # The container's termination message: the last log lines of a
        # failed scheduler (terminationMessagePolicy FallbackToLogsOnError),
        # folded into the one log line an operator greps for.
        lines = (ended.get("message") or "").strip().splitlines()[-LAST_WORDS:]
        return f"{said}; its last words: {' | '.join(lines)}" if lines else said
    reason = status.get("reason") or status.get("phase", "unknown")
    return f"pod {reason}: {status.get('message', 'no message')}"


class SchedulerExitReport:
    """Logs, for each cluster the controller marks failed, why its scheduler stopped."""

    log: Any
    informers: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reported: OrderedDict[str, None] = OrderedDict()

    async def handle_pending_cluster(self, cluster: dict[str, Any]) -> Any:
        return await self._reporting_exit(super().handle_pending_cluster, cluster)  # type: ignore[misc]

    async def handle_running_cluster(self, cluster: dict[str, Any]) -> Any:
        return await self._reporting_exit(super().handle_running_cluster, cluster)  # type: ignore[misc]

    async def _reporting_exit(self, handle: Any, cluster: dict[str, Any]) -> Any:
        namespace = cluster["metadata"]["namespace"]
        name = cluster["metadata"]["name"]
        # Before the handler, which deletes the pod of a failed cluster.
        pod = self._scheduler_pod(namespace, cluster.get("status", {}))
        status, requeue = await handle(cluster)
        key = f"{namespace}.{name}"
        if status is not None and status.get("phase") == "Failed" and key not in self._reported:
            self._reported[key] = None
            while len(self._reported) > REPORTED_MAX:
                self._reported.popitem(last=False)
            pod = pod or self._scheduler_pod(namespace, status)
            why = scheduler_exit(pod)
            self.log.warning("Cluster %s failed: its scheduler stopped: %s", key, why)
        return status, requeue

    def _scheduler_pod(self, namespace: str, status: dict[str, Any]) -> dict[str, Any] | None:
        pod_name = status.get("schedulerPod")
        if not pod_name:
            return None
        pod: dict[str, Any] | None = self.informers["pod"].get(f"{namespace}.{pod_name}")
        return pod


class ReleaseOwnedClusters(Configurable):
    """Every DaskCluster of the gateway owned by the release's `cluster_owner` ConfigMap."""

    cluster_owner = Unicode(
        "",
        help="""
        Name of the ConfigMap, in the schedulers' namespace, that owns every
        DaskCluster this gateway makes; deleting it (helm uninstall) deletes
        them. Empty: the clusters have no owner.
        """,
        config=True,
    )
    cluster_owner_namespace = Unicode("", help="The schedulers' namespace.", config=True)

    log: Any
    core_client: Any
    custom_client: Any
    crd_version: str
    label_selector: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner_reference: dict[str, Any] | None = None

    async def _read_owner(self) -> dict[str, Any]:
        # Read afresh before each use: a reference to a deleted owner's uid
        # would have the garbage collector delete the cluster at once.
        owner = await self.core_client.read_namespaced_config_map(
            self.cluster_owner, self.cluster_owner_namespace
        )
        return {"apiVersion": "v1", "kind": "ConfigMap", "name": self.cluster_owner,
                "uid": owner.metadata.uid}  # fmt: skip

    async def setup(self, app: Any) -> None:
        await super().setup(app)  # type: ignore[misc]
        if not self.cluster_owner:
            return
        try:
            await self._adopt_clusters()
        except Exception:
            # The API serves all the same; such clusters outlive helm uninstall.
            self.log.exception("Could not give the existing clusters to ConfigMap %s",
                               self.cluster_owner)  # fmt: skip

    async def _adopt_clusters(self) -> None:
        """Give the owner the clusters made before it existed (a chart without it)."""
        reference = await self._read_owner()
        found = await self.custom_client.list_namespaced_custom_object(
            "gateway.dask.org", self.crd_version, self.cluster_owner_namespace, "daskclusters",
            label_selector=self.label_selector,
        )  # fmt: skip
        for cluster in found["items"]:
            owners = cluster["metadata"].get("ownerReferences") or []
            if any(owner.get("uid") == reference["uid"] for owner in owners):
                continue
            name = cluster["metadata"]["name"]
            # A JSON patch, as upstream's own patches: the client sends any
            # body as one (its first content type), and a dict is refused.
            if owners:
                patch = [{"op": "add", "path": "/metadata/ownerReferences/-", "value": reference}]
            else:
                patch = [{"op": "add", "path": "/metadata/ownerReferences", "value": [reference]}]
            await self.custom_client.patch_namespaced_custom_object(
                "gateway.dask.org", self.crd_version, self.cluster_owner_namespace,
                "daskclusters", name, patch,
            )  # fmt: skip
            self.log.info("DaskCluster %s now belongs to ConfigMap %s", name, self.cluster_owner)

    async def start_cluster(self, user: Any, cluster_options: Any) -> Any:
        if self.cluster_owner:
            self._owner_reference = await self._read_owner()
        return await super().start_cluster(user, cluster_options)  # type: ignore[misc]

    def make_cluster_object(self, username: str, options: Any, config: Any) -> dict[str, Any]:
        cluster: dict[str, Any] = super().make_cluster_object(username, options, config)  # type: ignore[misc]
        if self.cluster_owner and self._owner_reference is not None:
            cluster["metadata"]["ownerReferences"] = [self._owner_reference]
        return cluster


class NamespacedKubeBackend(ReleaseOwnedClusters, WatchNamespace, KubeBackend):
    """The gateway API's backend: a namespaced Role, its clusters owned by the release."""


class NamespacedKubeController(SchedulerExitReport, WatchNamespace, KubeController):
    """The controller, needing only a namespaced Role, and saying why schedulers stop."""


if __name__ == "__main__":
    NamespacedKubeController.launch_instance()
