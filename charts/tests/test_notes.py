"""NOTES.txt, which helm prints after install: the address analysts need.

helm template neither renders NOTES.txt nor outputs anything but YAML, so
a copy of the chart renders it (tpl) into a ConfigMap of its own.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import CHART


@pytest.fixture(scope="module")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chart = tmp_path_factory.mktemp("chart") / "htcdaskgateway"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes-source.txt")
    (chart / "templates" / "notes-as-configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: |\n"
        '{{ tpl (.Files.Get "notes-source.txt") . | indent 4 }}\n'
    )
    return chart


def notes(chart: Path, *sets: str) -> str:
    args = ["helm", "template", "gw", str(chart), "-n", "jhub"]
    args += ["--show-only", "templates/notes-as-configmap.yaml"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["data"]["notes"]


def test_public_address_and_dask_config(notes_chart: Path) -> None:
    text = notes(notes_chart, "proxy.public.host=gw.example.org")
    assert "THE ADDRESS TO GIVE ANALYSTS" in text
    assert "tls://gw.example.org:8786" in text
    assert "proxy-address: tls://gw.example.org:8786" in text
    assert "scheduler-address: tls://gw.example.org:8786" in text
    assert "address: https://gw.example.org:443" in text
    assert "helm test --namespace jhub gw" in text


def test_unknown_address_says_how_to_find_it(notes_chart: Path) -> None:
    text = notes(notes_chart)
    assert "THE PUBLIC ADDRESS IS NOT SET YET" in text
    assert "get service gw-htcdaskgateway-proxy" in text
    assert "loadBalancer.ingress" in text
    text = notes(notes_chart, "proxy.service.type=NodePort")
    assert "nodePort" in text and "proxy.service.ports.tcp.nodePort" in text


def test_simple_auth_warns(notes_chart: Path) -> None:
    sets = ["gateway.auth.type=simple", "gateway.auth.simple.password=p", "proxy.public.host=h"]
    text = notes(notes_chart, *sets)
    assert "WARNING" in text and "under any user name" in text
    assert "type: basic" in text


def test_https_address_and_the_chart_ca(notes_chart: Path) -> None:
    text = notes(notes_chart, "proxy.public.host=gw.example.org")
    assert "API and dashboards:        https://gw.example.org:443" in text
    assert "address: https://gw.example.org:443" in text
    # The CA twice: in the client config (api-ca) and for curl/browsers.
    assert text.count("-----BEGIN CERTIFICATE-----") == 2
    assert "PRIVATE KEY" not in text


def test_plain_http_only_when_asked_and_then_warned(notes_chart: Path) -> None:
    text = notes(notes_chart, "proxy.public.host=gw.example.org", "proxy.https.enabled=false")
    assert "address: http://gw.example.org:443" in text
    assert "WARNING: proxy.https.enabled is false" in text
    assert "BEGIN CERTIFICATE" not in text
