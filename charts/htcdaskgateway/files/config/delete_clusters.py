"""`helm uninstall`'s pre-delete hook: stop every cluster of this release.

The gateway makes a DaskCluster object per cluster; the scheduler pod and
its credentials Secret belong to it, the scheduler's Service and Traefik
routes to the pod, so deleting the DaskClusters lets Kubernetes' garbage
collector remove everything else. helm does not know these objects: without
this hook they, and any running scheduler, would outlive the release.
Waits until no DaskCluster or scheduler pod of the release is left.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from kubernetes_asyncio import client, config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chart_values import get, load

GROUP, VERSION, PLURAL = "gateway.dask.org", "v1alpha1", "daskclusters"
TIMEOUT = 120.0


async def main() -> int:
    values = load()
    namespace = get(values, "chart.schedulerNamespace")
    selector = f"gateway.dask.org/instance={get(values, 'chart.instance')}"
    config.load_incluster_config()
    async with client.ApiClient() as api:
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        found = await custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, label_selector=selector
        )
        names = [item["metadata"]["name"] for item in found["items"]]
        print(f"deleting {len(names)} DaskCluster(s) in {namespace}: {' '.join(names) or '-'}")
        for name in names:
            await custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground"
            )
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = await custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, label_selector=selector
            )
            pods = await core.list_namespaced_pod(
                namespace, label_selector=f"{selector},app.kubernetes.io/component=dask-scheduler"
            )
            remaining = len(left["items"]) + len(pods.items)
            if not remaining:
                print("no cluster of this release is left")
                return 0
            if time.monotonic() > deadline:
                print(f"after {TIMEOUT:.0f} s, {remaining} DaskCluster(s) or pod(s) remain")
                return 1
            await asyncio.sleep(1)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
