"""The chart README's "Operator's walkthrough", done as written, on the rig.

Its commands, with its values files (charts/examples/, not the rig's CI
values), and a facility's own names: install, `helm test`, the analysts'
dask config from the client ConfigMap (and nothing else: none of the
analyst container's DASK_GATEWAY__* presets), a first cluster computing
while the operator makes an upgrade with one changed value, and an
uninstall with that cluster running. Once for each auth type. Issue 30.

What only the rig has is given as the README says a facility gives it:
the node's address (proxy.public.host), the hub's address, Traefik's
image where Docker Hub cannot be reached, the password from the
environment.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest
import yaml

from conftest import (
    RIG_NODE_IP,
    TARGET,
    helm,
    hub_token,
    kube_items,
    kubectl,
    nothing_queued,
    queue,
    remove_release,
    wait_for,
    worker_name_of,
)

pytestmark = pytest.mark.skipif(TARGET != "k8s", reason="the rig's walkthrough (E2E_TARGET=k8s)")

CHART = "/src/charts/htcdaskgateway"
EXAMPLES = Path("/src/charts/examples")
# The rig's Traefik image (no Docker Hub here): README step 1's override.
TRAEFIK = ("proxy.image.repository=htcdaskgateway.local/traefik", "proxy.image.pullPolicy=Never")
# The hub of the compose stack, on the host's side of the rig's network.
HUB_API = "http://{host}:18081/hub/api"

# The analyst's session: a cluster of 2 HTCondor workers holding data that
# exists nowhere else, answering the test line by line on stdin/stdout.
ANALYST = """
import json, sys, time
from htcdaskgateway import HTCGateway

def say(**what):
    print(json.dumps(what), flush=True)

cluster = HTCGateway().new_cluster()
cluster.scale(2)
cluster.wait_for_workers(2, timeout=180)
client = cluster.get_client()
data = client.scatter(list(range(1000)))  # only on the workers: lost with them
def workers():
    return sorted(w["name"] for w in client.scheduler_info()["workers"].values())
say(name=cluster.name, workers=workers(), total=client.submit(sum, data).result())
running = None
for line in sys.stdin:
    if line.strip() == "start":
        running = client.submit(time.sleep, 20, pure=False)
        say(started=True)
    elif line.strip() == "check":
        waited = running.result(timeout=120) if running is not None else None
        say(workers=workers(), total=client.submit(sum, data).result(), waited=waited)
    else:
        break
"""


class Analyst:
    """The analyst's Python session, as a separate process with only the walkthrough's config."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", ANALYST], env=env, cwd="/tmp", text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def answer(self, ask: str | None = None) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        if ask is not None:
            self.process.stdin.write(ask + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=30)
            raise AssertionError(f"the analyst's session ended: {self.stderr()}")
        return json.loads(line)

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def end(self) -> tuple[int, str]:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("end\n")
            self.process.stdin.close()
            self.process.wait(timeout=120)
        return self.process.returncode, self.stderr()


@contextlib.contextmanager
def analyst_env(client_config: str, auth: str, worker_host: str) -> Iterator[dict[str, str]]:
    """The analyst's environment: the ConfigMap's file and the pool's settings, nothing preset."""
    with tempfile.TemporaryDirectory() as config_dir:
        Path(config_dir, "htcdaskgateway.yaml").write_text(client_config)
        # README step 6: "plus the pool's settings", as the facility gives
        # them: here the test pool's (schedd, small slots), which the
        # analyst container presets, and worker.host: the rig's execute
        # node has several addresses, the scheduler pods reach this one.
        presets = {k: v for k, v in os.environ.items()
                   if k.startswith("DASK_GATEWAY__HTCONDOR__") and "API_CA" not in k}  # fmt: skip
        pool = dask.config.collect_env(presets)
        pool["gateway"]["htcondor"].setdefault("worker", {}).update(
            {"host": worker_host, "death-timeout": 10}
        )
        Path(config_dir, "pool.yaml").write_text(yaml.safe_dump(pool))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_GATEWAY__")}
        env["DASK_CONFIG"] = config_dir
        if auth == "simple":  # README step 6: how an analyst gives the shared password
            env["DASK_GATEWAY__AUTH__KWARGS__PASSWORD"] = os.environ[
                "DASK_GATEWAY__AUTH__KWARGS__PASSWORD"
            ]
        else:
            env["JUPYTERHUB_API_TOKEN"] = hub_token("alice")
        yield env


def pod_uids(namespace: str, component: str) -> set[str]:
    selector = f"app.kubernetes.io/component={component}"
    return {p["metadata"]["uid"] for p in kube_items("pods", namespace, selector)}


def worker_jobs(cluster_name: str) -> set[str]:
    return {
        worker_name_of(ad) for ad in queue(cluster_name, ["ClusterId", "ProcId", "GlobalJobId"])
    }


@pytest.mark.parametrize("auth", ["simple", "jupyterhub"])
def test_the_operators_walkthrough_as_written(auth, record_figure):
    release = namespace = f"walk-{auth}"
    worker_host = os.environ["DASK_GATEWAY__HTCONDOR__WORKER__HOST"]
    values = ["-f", str(EXAMPLES / "my-values.yaml")]
    sets = ["--set", f"proxy.public.host={RIG_NODE_IP}"]
    sets += [arg for setting in TRAEFIK for arg in ("--set", setting)]
    if auth == "simple":
        password = os.environ["DASK_GATEWAY__AUTH__KWARGS__PASSWORD"]
        sets += ["--set-string", f"gateway.auth.simple.password={password}"]
    else:
        # Step 2: the gateway's service token in a Secret of its namespace
        # (here the one the rig's hub release uses), the hub's address.
        values += ["-f", str(EXAMPLES / "hub-values.yaml")]
        sets += ["--set", f"gateway.auth.jupyterhub.apiUrl={HUB_API.format(host=worker_host)}"]
        token = kubectl("get", "secret", "hub-service-token", "--namespace", "dask-gateway-hub",
                        "--output", "jsonpath={.data.api-token}")  # fmt: skip
        kubectl("create", "namespace", namespace)
        kubectl("create", "secret", "generic", "hub-service-token", "--namespace", namespace,
                f"--from-literal=api-token={base64.b64decode(token).decode()}")  # fmt: skip
    analyst = None
    try:
        # Step 4: install and test.
        started = time.monotonic()
        install = helm("install", release, CHART, "--namespace", namespace, "--create-namespace",
                       *values, *sets, "--wait", timeout=600)  # fmt: skip
        assert install.returncode == 0, install.stdout + install.stderr
        installed = time.monotonic() - started
        test = helm("test", release, "--namespace", namespace)
        assert test.returncode == 0 and "Phase:          Succeeded" in test.stdout, test.stdout
        # Step 6: the analysts' dask config from the client ConfigMap.
        client_config = kubectl(
            "get", "configmap", f"{release}-htcdaskgateway-client-config",
            "--namespace", namespace, "--output", "jsonpath={.data.htcdaskgateway\\.yaml}",
        )  # fmt: skip
        assert f"address: https://{RIG_NODE_IP}:30280" in client_config, client_config
        with analyst_env(client_config, auth, worker_host) as env:
            # Step 7: the first cluster.
            analyst = Analyst(env)
            first = analyst.answer()
            assert first["total"] == 499_500 and len(first["workers"]) == 2, first
            name = first["name"]
            jobs = worker_jobs(name)
            assert len(jobs) == 2 and set(first["workers"]) == jobs

            # Upgrading, with one changed value, while a task runs.
            assert analyst.answer("start") == {"started": True}
            proxy, api = pod_uids(namespace, "proxy"), pod_uids(namespace, "gateway")
            upgraded = time.monotonic()
            upgrade = helm("upgrade", release, CHART, "--namespace", namespace, "--reuse-values",
                           "--set", "gateway.logLevel=DEBUG", "--wait")  # fmt: skip
            assert upgrade.returncode == 0, upgrade.stderr
            took = time.monotonic() - upgraded
            wait_for(lambda: not api & pod_uids(namespace, "gateway"), "a new API pod", 120, 1)
            after = analyst.answer("check")
            assert after == {"workers": first["workers"], "total": 499_500, "waited": None}
            assert pod_uids(namespace, "proxy") == proxy, "the upgrade replaced Traefik's pod"
            assert worker_jobs(name) == jobs, "the upgrade cost a worker job"

            # Uninstalling, with the cluster running.
            uninstalled = time.monotonic()
            uninstall = helm("uninstall", release, "--namespace", namespace, "--wait")
            assert uninstall.returncode == 0, uninstall.stderr
            kinds = ("daskclusters", "pods", "jobs", "secrets", "services", "ingressroutetcps")

            def left() -> dict[str, list[str]]:
                found = {k: [i["metadata"]["name"] for i in kube_items(k, namespace)
                             if i["metadata"]["name"] != "hub-service-token"]  # step 2's
                         for k in kinds}  # fmt: skip
                return {k: names for k, names in found.items() if names}

            wait_for(lambda: not left(), f"nothing of {release} to be left", 120, 1)
            gone = time.monotonic() - uninstalled
            analyst.end()
            wait_for(lambda: nothing_queued(name), "the cluster's jobs to leave the queue", 120)
            record_figure(
                f"walkthrough ({auth} auth): install {installed:.1f} s, upgrade with a task "
                f"running {took:.1f} s (Traefik and both worker jobs kept), uninstall with the "
                f"cluster running: nothing left after {gone:.1f} s"
            )
    finally:
        if analyst is not None:
            analyst.end()
        remove_release(release, namespace)
