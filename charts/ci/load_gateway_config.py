"""Load the chart's rendered configuration with the real dask-gateway-server.

Runs inside the scheduler image (the one the chart deploys), as
`python load_gateway_config.py CONFIG_DIR ENV_JSON EXPECTED_JSON`: CONFIG_DIR
holds the rendered ConfigMap's files, ENV_JSON the gateway container's
environment. Nothing is started and no Kubernetes API is contacted; what
the server does before it listens is done:

- DaskGateway.initialize: loads the config file (errors in it are fatal, as
  in the pod), resolves and constructs the backend and authenticator classes;
- every configurable trait of both is read, so defaults that raise (a
  missing JupyterHub token or URL) raise here;
- a cluster's configuration is built as for an analyst's new_cluster()
  (Backend.process_cluster_options, with ClusterConfig's cross-checks) and
  compared with what the chart must guarantee: no workers, the plugin
  preloaded, the chart's image;
- the controller's config file is loaded by NamespacedKubeController.initialize;
- both watch the namespace the chart's RBAC allows, and their wrapped
  Kubernetes clients turn cluster-wide lists into lists of that namespace
  (checked against a recording stand-in for the Kubernetes API client).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from traitlets.config import Configurable


def read_traits(obj: Configurable) -> dict[str, str]:
    return {name: type(getattr(obj, name)).__name__ for name in obj.trait_names(config=True)}


def fail(message: str) -> None:
    print(f"load-config: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


class RecordingKubeClient:
    """Stands in for a kubernetes_asyncio API client: records each list call."""

    api_client = object()

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(**kwargs: Any) -> None:
            self.calls.append((name, kwargs))

        return call


def check_watch_namespace(name: str, component: Any, namespace: str) -> None:
    """The component watches `namespace` ("" for all) through its wrapped clients."""
    if component.watch_namespace != namespace:
        fail(f"{name} watches {component.watch_namespace!r}, the chart's RBAC covers {namespace!r}")
    core, custom = RecordingKubeClient(), RecordingKubeClient()
    component.core_client, component.custom_client = core, custom

    async def informer_lists() -> None:
        await component.custom_client.list_cluster_custom_object(plural="daskclusters")
        await component.core_client.list_pod_for_all_namespaces(label_selector="x")
        await component.core_client.list_endpoints_for_all_namespaces(label_selector="x")
        await component.core_client.read_namespaced_secret(name="s", namespace="ns")

    asyncio.run(informer_lists())
    calls = [(method, kwargs.get("namespace")) for method, kwargs in custom.calls + core.calls]
    if namespace:
        want = [
            ("list_namespaced_custom_object", namespace),
            ("list_namespaced_pod", namespace),
            ("list_namespaced_endpoints", namespace),
            ("read_namespaced_secret", "ns"),
        ]
    else:
        want = [
            ("list_cluster_custom_object", None),
            ("list_pod_for_all_namespaces", None),
            ("list_endpoints_for_all_namespaces", None),
            ("read_namespaced_secret", "ns"),
        ]
    if calls != want:
        fail(f"{name}'s Kubernetes calls came out as {calls}, expected {want}")


def main() -> None:
    config_dir, env_file, expected_file = sys.argv[1:4]
    with open(env_file) as f:
        os.environ.update(json.load(f))
    with open(expected_file) as f:
        expected: dict[str, Any] = json.load(f)

    try:
        import kubernetes_asyncio  # noqa: F401
    except ImportError:
        fail(
            "kubernetes_asyncio is missing from the scheduler image: the chart's gateway needs "
            "dask-gateway-server[kubernetes] (pins/requirements.in, images/scheduler/Dockerfile)"
        )

    from dask_gateway_server.app import DaskGateway
    from dask_gateway_server.models import User

    sys.path.insert(0, config_dir)
    from namespaced_kube import NamespacedKubeController

    app = DaskGateway()
    app.initialize(["--config", os.path.join(config_dir, "dask_gateway_config.py")])
    auth_traits = read_traits(app.authenticator)
    backend_traits = read_traits(app.backend)

    _, cluster = asyncio.run(app.backend.process_cluster_options(User("alice"), {}))
    config = cluster.to_dict()
    # Worker pods only as the operator allows them (cluster.podWorkers).
    if config["cluster_max_workers"] != expected["max_pod_workers"]:
        fail(
            f"cluster_max_workers is {config['cluster_max_workers']}, the chart's "
            f"cluster.podWorkers.maxWorkers {expected['max_pod_workers']}"
        )
    if expected["max_pod_workers"] and config["worker_cmd"][:2] != ["dask", "worker"]:
        fail(f"worker_cmd is {config['worker_cmd']}: worker pods would not start")
    cmd = config["scheduler_cmd"]
    if "htcdaskgateway.scheduler_plugin" not in cmd:
        fail(f"scheduler_cmd {cmd} does not preload htcdaskgateway.scheduler_plugin")
    for key in ("image", "namespace"):
        if config[key] != expected[key]:
            fail(f"cluster {key} is {config[key]!r}, the chart rendered {expected[key]!r}")
    # Culling belongs to the plugin (idle means unattended), never upstream's task-only check.
    unattended = config["environment"].get("DASK_GATEWAY__HTCONDOR__UNATTENDED_TIMEOUT")
    if config["idle_timeout"] != 0 or unattended != expected["unattended_timeout"]:
        fail(
            f"idle_timeout {config['idle_timeout']!r} and the scheduler's unattended-timeout "
            f"{unattended!r}; the chart asks for 0 and {expected['unattended_timeout']!r}"
        )
    auth_class = type(app.authenticator).__name__
    if auth_class != expected["authenticator"]:
        fail(f"authenticator is {auth_class}, values ask for {expected['authenticator']}")

    controller = NamespacedKubeController()
    controller.initialize(["--config", os.path.join(config_dir, "kube_controller_config.py")])
    controller_traits = read_traits(controller)
    if controller.gateway_instance != app.backend.gateway_instance:
        fail(
            f"controller instance {controller.gateway_instance!r} differs from the "
            f"gateway's {app.backend.gateway_instance!r}: it would ignore the gateway's clusters"
        )

    for name, component in (("gateway backend", app.backend), ("controller", controller)):
        check_watch_namespace(name, component, expected["watch_namespace"])

    summary = {
        "backend": type(app.backend).__name__,
        "authenticator": auth_class,
        "traits read": len(auth_traits) + len(backend_traits) + len(controller_traits),
        "cluster_max_workers": config["cluster_max_workers"],
        "scheduler_memory": config["scheduler_memory"],
        "image": config["image"],
        "namespace": config["namespace"],
        "watch_namespace": controller.watch_namespace,
        "instance": controller.gateway_instance,
    }
    if auth_class == "JupyterHubAuthenticator":
        summary["jupyterhub_api_url"] = app.authenticator.jupyterhub_api_url
        summary["service_scopes"] = app.authenticator.use_service_access_scopes
    print("load-config: ok " + json.dumps(summary))


if __name__ == "__main__":
    main()
