"""values.schema.yaml -> values.schema.json, and checks that they agree with values.yaml.

    python charts/ci/schema.py           write values.schema.json
    python charts/ci/schema.py --check   fail if it is stale, or schema and values disagree

The check fails when: the json differs from what the yaml gives; a key of
values.yaml has no schema entry (or the reverse, apart from keys a parent
chart may set); a schema property has no description; values.yaml itself
does not satisfy the schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CHART = Path(__file__).resolve().parents[1] / "htcdaskgateway"
SCHEMA_YAML = CHART / "values.schema.yaml"
SCHEMA_JSON = CHART / "values.schema.json"
VALUES = CHART / "values.yaml"
# In the schema, deliberately absent from values.yaml.
SCHEMA_ONLY = {"global"}


def generate() -> str:
    with open(SCHEMA_YAML) as f:
        schema = yaml.safe_load(f)
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def schema_keys(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Dotted path -> schema of every named property (not of free-form maps)."""
    out: dict[str, dict[str, Any]] = {}
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        out[path] = sub
        out.update(schema_keys(sub, path + "."))
    return out


def value_keys(values: Any, schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of values.yaml, descending only where the schema names properties."""
    out: list[str] = []
    if not isinstance(values, dict) or "properties" not in schema:
        return out
    for name, sub in values.items():
        path = f"{prefix}{name}"
        out.append(path)
        out += value_keys(sub, schema.get("properties", {}).get(name, {}), path + ".")
    return out


def check() -> list[str]:
    problems: list[str] = []
    if not SCHEMA_JSON.exists() or SCHEMA_JSON.read_text() != generate():
        problems.append(
            f"{SCHEMA_JSON.name} is not what {SCHEMA_YAML.name} gives: "
            "run python3 charts/ci/schema.py"
        )
    schema = yaml.safe_load(SCHEMA_YAML.read_text())
    values = yaml.safe_load(VALUES.read_text())
    documented = schema_keys(schema)
    present = value_keys(values, schema)
    for path in present:
        if path not in documented:
            problems.append(f"values.yaml key {path} is not in {SCHEMA_YAML.name}")
    for path, sub in documented.items():
        if path not in present and path.split(".")[0] not in SCHEMA_ONLY:
            problems.append(f"{SCHEMA_YAML.name} property {path} is not in values.yaml")
        if not sub.get("description"):
            problems.append(f"{SCHEMA_YAML.name} property {path} has no description")
    for error in jsonschema.Draft7Validator(schema).iter_errors(values):
        where = ".".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append(f"values.yaml does not satisfy the schema at {where}: {error.message}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    if not parser.parse_args().check:
        SCHEMA_JSON.write_text(generate())
        return
    problems = check()
    for p in problems:
        print(f"schema: {p}")
    if problems:
        sys.exit(1)
    print(f"schema: {SCHEMA_JSON.name} is current; values.yaml and schema agree")


if __name__ == "__main__":
    main()
