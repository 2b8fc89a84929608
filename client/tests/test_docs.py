"""The README's configuration table matches the shipped YAML defaults."""

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from htcdaskgateway.config import defaults
from htcdaskgateway.settings import _OPEN_MAPPINGS

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(r"^\| `([^`]+)` \| `([^`]*)` \|", re.MULTILINE)


def _flatten(section: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in section.items():
        if isinstance(value, Mapping) and key not in _OPEN_MAPPINGS:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if value == []:
        return "[]"
    if value == {}:
        return "{}"
    return str(value)


def test_every_setting_documented_with_its_default():
    shipped = {
        key: _shown(value) for key, value in _flatten(defaults["gateway"]["htcondor"]).items()
    }
    documented = dict(ROW.findall(README.read_text()))
    assert documented == shipped
