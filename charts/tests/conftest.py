"""Fixtures over the chart as `make chart-check` rendered it.

CHART_RENDERED names the directory charts/ci/render.py wrote: one folder
per value set with manifest.yaml. Without it the tests fail (they are not
skipped): run them through `make chart-check`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

CHART = Path(__file__).resolve().parents[1] / "htcdaskgateway"


def rendered_dir() -> Path:
    value = os.environ.get("CHART_RENDERED")
    if not value or not (Path(value) / "value-sets.txt").exists():
        raise pytest.UsageError(
            "CHART_RENDERED must name the output of charts/ci/render.py: run `make chart-check`"
        )
    return Path(value)


def value_sets() -> list[str]:
    return (rendered_dir() / "value-sets.txt").read_text().split()


class Rendered:
    def __init__(self, name: str, docs: list[dict[str, Any]]) -> None:
        self.name = name
        self.docs = docs

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, suffix: str) -> dict[str, Any]:
        (doc,) = [d for d in self.of_kind(kind) if d["metadata"]["name"].endswith(suffix)]
        return doc

    def pod_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, pod spec) of every workload and bare pod."""
        specs = [
            (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
            for d in self.docs
            if d["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}
        ]
        specs += [(f"Pod/{d['metadata']['name']}", d["spec"]) for d in self.of_kind("Pod")]
        return specs

    def chart_values(self) -> dict[str, Any]:
        config = self.one("ConfigMap", "-gateway-config")
        return yaml.safe_load(config["data"]["values.yaml"])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rendered" in metafunc.fixturenames:
        metafunc.parametrize("rendered", value_sets(), indirect=True)


@pytest.fixture
def rendered(request: pytest.FixtureRequest) -> Rendered:
    path = rendered_dir() / request.param / "manifest.yaml"
    with open(path) as f:
        return Rendered(request.param, [d for d in yaml.safe_load_all(f) if d])


@pytest.fixture(scope="session")
def runtime_secrets() -> dict[str, str]:
    return json.loads((rendered_dir() / "runtime-secrets.json").read_text())
