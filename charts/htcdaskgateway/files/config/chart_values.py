"""The chart's values as the gateway and controller configs see them.

The ConfigMap holds values.yaml next to this module: the chart's values
without their secrets (those reach the pod as environment variables from a
Secret) plus a `chart` section computed at render time (names, addresses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

VALUES_FILE = Path(__file__).with_name("values.yaml")

_MISSING = object()


def load(path: Path = VALUES_FILE) -> dict[str, Any]:
    with open(path) as f:
        values = yaml.safe_load(f)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of chart values, got {type(values).__name__}")
    return values


def get(values: dict[str, Any], key: str, default: Any = _MISSING) -> Any:
    """Value at dotted `key`; without a default, a missing key is an error naming it."""
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _MISSING:
                raise KeyError(f"chart value {key!r} is missing from {VALUES_FILE}")
            return default
        node = node[part]
    return node
