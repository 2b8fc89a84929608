"""Render the chart for every value set `make chart-check` covers.

Runs in the chart-tools image. For each set it writes, under OUT/<set>/:
manifest.yaml (helm template), config/ (the gateway's ConfigMap files, as
the pods mount them) and gateway-env.json (the gateway container's
environment, secret references resolved), for the config-loading check in
the scheduler image.

Secrets given inline (a JupyterHub token, a simple-auth password) are made
up here, per run, and written to OUT/runtime-secrets.json: the tests look
for them where they must not be (ConfigMaps).
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "htcdaskgateway"
VALUE_DIR = Path(__file__).resolve().parent / "values"
RELEASE, NAMESPACE = "htc", "dask-gateway"
API, CONFIG = f"{RELEASE}-htcdaskgateway-api", f"{RELEASE}-htcdaskgateway-gateway-config"


@dataclass(frozen=True)
class ValueSet:
    name: str
    files: tuple[str, ...] = ()
    # Runtime secrets passed with --set: values key -> runtime-secrets key.
    secrets: dict[str, str] = field(default_factory=dict)
    # Environment Kubernetes gives the pod that the set relies on.
    pod_env: dict[str, str] = field(default_factory=dict)


VALUE_SETS = (
    # z2jh's hub Service in the same namespace supplies the hub's address.
    ValueSet("default", pod_env={"HUB_SERVICE_HOST": "10.96.0.10", "HUB_SERVICE_PORT": "8081"}),
    ValueSet("facility-loadbalancer", ("facility-loadbalancer.yaml",)),
    ValueSet(
        "facility-inline-token",
        ("facility-inline-token.yaml",),
        secrets={"gateway.auth.jupyterhub.apiToken": "jupyterhub_api_token"},
    ),
    ValueSet(
        "dev-simple-nodeport",
        ("dev-simple-nodeport.yaml",),
        secrets={"gateway.auth.simple.password": "simple_password"},
    ),
    ValueSet(
        "cluster-wide-rbac",
        ("cluster-wide-rbac.yaml",),
        pod_env={"HUB_SERVICE_HOST": "10.96.0.10", "HUB_SERVICE_PORT": "8081"},
    ),
    # integration/k8s/e2e.sh sets the rig's password at install.
    ValueSet(
        "rig",
        ("../rig-values.yaml",),
        secrets={"gateway.auth.simple.password": "simple_password"},
    ),
    ValueSet("rig-hub", ("../rig-values.yaml", "../rig-hub-values.yaml")),
)


def helm(*args: str) -> str:
    proc = subprocess.run(["helm", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        # helm lint reports its findings on stdout, helm template on stderr.
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"render: helm {args[0]} failed (exit {proc.returncode})")
    return proc.stdout


def value_args(vs: ValueSet, runtime: dict[str, str]) -> list[str]:
    args: list[str] = []
    for f in vs.files:
        args += ["--values", str((VALUE_DIR / f).resolve())]
    for key, secret in vs.secrets.items():
        args += ["--set-string", f"{key}={runtime[secret]}"]
    return args


def container_env(docs: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    """The gateway container's environment, with Secret references resolved.

    The chart's own Secret is read from the rendered manifest; a Secret the
    chart only refers to (created by JupyterHub) gets a made-up value.
    """
    rendered_secrets = {
        d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "Secret"
    }
    (doc,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == deployment]
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        data = rendered_secrets.get(ref["name"])
        if data is not None:
            env[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
        else:
            env[item["name"]] = secrets.token_hex(32)
    return env


def merged_values(vs: ValueSet) -> dict[str, Any]:
    """The chart's values.yaml overlaid with the set's files (maps merged, as helm does)."""

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for f in vs.files:
        values = merge(values, yaml.safe_load((VALUE_DIR / f).read_text()))
    return values


def expected(vs: ValueSet, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the loaded gateway config must come to, from values and manifests."""
    values = merged_values(vs)
    (api,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == API]
    authenticators = {"jupyterhub": "JupyterHubAuthenticator", "simple": "SimpleAuthenticator"}
    namespace = values["cluster"].get("namespace") or NAMESPACE
    return {
        "image": api["spec"]["template"]["spec"]["containers"][0]["image"],
        "namespace": namespace,
        "watch_namespace": "" if values["rbac"]["clusterWide"] else namespace,
        "authenticator": authenticators[values["gateway"]["auth"]["type"]],
        "unattended_timeout": str(float(values["cluster"]["idleTimeout"])),
        "max_pod_workers": values["cluster"]["podWorkers"]["maxWorkers"],
    }


def render(out: Path) -> None:
    runtime = {
        "jupyterhub_api_token": secrets.token_hex(32),
        "simple_password": secrets.token_urlsafe(24),
    }
    (out / "runtime-secrets.json").write_text(json.dumps(runtime))
    for vs in VALUE_SETS:
        args = value_args(vs, runtime)
        print(f"render: helm lint --strict [{vs.name}]", flush=True)
        helm("lint", "--strict", str(CHART), *args)
        text = helm("template", RELEASE, str(CHART), "-n", NAMESPACE, "--include-crds", *args)
        d = out / vs.name
        (d / "config").mkdir(parents=True)
        (d / "manifest.yaml").write_text(text)
        docs = [x for x in yaml.safe_load_all(text) if x]
        (config,) = [
            x for x in docs if x["kind"] == "ConfigMap" and x["metadata"]["name"] == CONFIG
        ]
        for name, content in config["data"].items():
            (d / "config" / name).write_text(content)
        env = container_env(docs, API) | vs.pod_env
        (d / "gateway-env.json").write_text(json.dumps(env))
        (d / "expected.json").write_text(json.dumps(expected(vs, docs)))
        kinds: dict[str, int] = {}
        for x in docs:
            kinds[x["kind"]] = kinds.get(x["kind"], 0) + 1
        print(f"render: [{vs.name}] {len(docs)} objects: {json.dumps(kinds, sort_keys=True)}")
    (out / "value-sets.txt").write_text("".join(vs.name + "\n" for vs in VALUE_SETS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="empty output directory")
    render(parser.parse_args().out)


if __name__ == "__main__":
    main()
