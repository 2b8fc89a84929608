"""helm upgrade: what a render with the release already in the cluster changes.

Replacing the proxy pod moves every live worker's and client's connection
to its scheduler (proxy.drain lets the old pod finish them), so an upgrade
must change the proxy's pod template only when what Traefik runs changes.

`helm template` has no cluster: its `lookup` finds nothing, so every render
is an install. The chart's one lookup reads back its HTTPS Secret; a copy of
the chart here reads the Secret from a file instead, written as the API
server returns the Secret the previous render made (data as stored, plus
the server's metadata). The first render sees `{}`, which is what `lookup`
gives for an object that does not exist.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import CHART

NAMESPACE = "dask-gateway"
LOOKUP = 'lookup "v1" "Secret" $ns $name'
LOOKED_UP = "looked-up-secret.json"
# Values sets rendered here: the default (jupyterhub auth from a Secret)
# and the rig's (simple auth, NodePort, a public host).
RIG_VALUES = CHART.parent / "ci" / "rig-values.yaml"
SETS = {
    "default": [],
    "rig": ["--values", str(RIG_VALUES), "--set-string", "gateway.auth.simple.password=pw"],
}


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("upgrade") / "htcdaskgateway"
    shutil.copytree(CHART, copy)
    templates = list((copy / "templates").rglob("*.tpl")) + list(
        (copy / "templates").rglob("*.yaml")
    )
    lookups = {str(t.relative_to(copy)): t.read_text().count("lookup ") for t in templates}
    # The Secret is the only object the chart looks up: any other lookup
    # would go unsimulated here, and this test would not see its upgrade.
    assert {t: n for t, n in lookups.items() if n} == {"templates/_helpers.tpl": 1}, lookups
    helpers = copy / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    assert text.count(LOOKUP) == 1
    helpers.write_text(text.replace(LOOKUP, f'(.Files.Get "{LOOKED_UP}" | fromJson)'))
    return copy


def render(chart: Path, existing: dict[str, Any], *args: str) -> list[dict[str, Any]]:
    (chart / LOOKED_UP).write_text(json.dumps(existing))
    proc = subprocess.run(
        ["helm", "template", "htc", str(chart), "-n", NAMESPACE, *args],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def https_secret(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (secret,) = [
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-https")
    ]
    return secret


def as_stored(secret: dict[str, Any]) -> dict[str, Any]:
    """The Secret as `lookup` returns it once helm has applied it."""
    stored = json.loads(json.dumps(secret))
    stored["metadata"].update(
        namespace=NAMESPACE,
        uid="0b5c3e9a-4f7d-4e8a-9c1b-2d6f8e0a1b3c",
        resourceVersion="4242",
        creationTimestamp="2026-12-01T10:00:00Z",
    )
    stored["metadata"]["annotations"].update(
        {"meta.helm.sh/release-name": "htc", "meta.helm.sh/release-namespace": NAMESPACE}
    )
    return stored


def proxy_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (proxy,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-proxy")
    ]
    return proxy["spec"]["template"]


def install_then_upgrade(
    chart: Path, args: list[str], upgrade_args: list[str] = ()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    installed = render(chart, {}, *args)
    upgraded = render(chart, as_stored(https_secret(installed)), *args, *upgrade_args)
    return installed, upgraded


@pytest.mark.parametrize("values", SETS, ids=list(SETS))
def test_the_first_upgrade_does_not_replace_the_proxy(chart: Path, values: str) -> None:
    # Issue 30: the first `helm upgrade` after install restarted Traefik.
    installed, upgraded = install_then_upgrade(chart, SETS[values])
    # The chart keeps its CA and certificate, byte for byte: what the
    # upgrade reads back is what the install wrote.
    assert https_secret(upgraded)["data"] == https_secret(installed)["data"]
    first, second = proxy_pod(installed), proxy_pod(upgraded)
    assert first["metadata"].get("annotations") == second["metadata"].get("annotations")
    assert first == second
    again = render(chart, as_stored(https_secret(upgraded)), *SETS[values])
    assert proxy_pod(again) == first


def test_the_generated_pem_is_stored_as_generated(chart: Path) -> None:
    secret = https_secret(render(chart, {}))
    for key in ("ca.crt", "ca.key", "tls.crt", "tls.key"):
        pem = base64.b64decode(secret["data"][key]).decode()
        assert pem.startswith("-----BEGIN "), key
        # PEM ends with a newline; helm's toYaml | fromYaml used to drop the
        # last one (tls.key's).
        assert pem.endswith("-----\n"), key


# Upgrades that change nothing Traefik runs: its pod must stay.
UNTOUCHED = {
    "gateway and controller log levels": ["gateway.logLevel=DEBUG", "controller.logLevel=DEBUG"],
    "load balancer source ranges": ["proxy.service.loadBalancerSourceRanges={10.1.0.0/16}"],
    # The walkthrough's second step: the address known after install. The
    # certificate is signed again for it; Traefik loads it from its Secret
    # watch.
    "public host": ["proxy.public.host=gateway.example.org"],
    "idle timeout": ["cluster.idleTimeout=7200"],
}


@pytest.mark.parametrize("sets", UNTOUCHED.values(), ids=list(UNTOUCHED))
def test_an_upgrade_that_leaves_traefik_alone_keeps_its_pod(chart: Path, sets: list[str]) -> None:
    args = [a for s in sets for a in ("--set", s)]
    installed, upgraded = install_then_upgrade(chart, [], args)
    assert proxy_pod(upgraded) == proxy_pod(installed)
    if any(s.startswith("proxy.public.host=") for s in sets):
        before, after = https_secret(installed)["data"], https_secret(upgraded)["data"]
        assert after["ca.crt"] == before["ca.crt"] and after["ca.key"] == before["ca.key"]
        assert after["tls.crt"] != before["tls.crt"]


def test_a_new_chart_version_alone_keeps_the_proxy_pod(chart: Path) -> None:
    installed = render(chart, {})
    meta = chart / "Chart.yaml"
    text = meta.read_text()
    version = yaml.safe_load(text)["version"]
    try:
        # A release of the chart and of the scheduler image, same Traefik.
        meta.write_text(text.replace(version, "9999.1.0"))
        upgraded = render(chart, as_stored(https_secret(installed)))
    finally:
        meta.write_text(text)
    assert proxy_pod(upgraded) == proxy_pod(installed)


# Upgrades that change what Traefik runs: its pod is replaced (and drains).
TOUCHED = {
    "log level": ["proxy.logLevel=DEBUG"],
    "image": ["proxy.image.tag=v3.7.99"],
    "drain grace": ["proxy.drain.graceSeconds=7200"],
}


@pytest.mark.parametrize("sets", TOUCHED.values(), ids=list(TOUCHED))
def test_an_upgrade_that_changes_traefik_replaces_its_pod(chart: Path, sets: list[str]) -> None:
    args = [a for s in sets for a in ("--set", s)]
    installed, upgraded = install_then_upgrade(chart, [], args)
    assert proxy_pod(upgraded) != proxy_pod(installed)
