"""Validate rendered manifests offline against Kubernetes versions' schemas.

Runs in the chart-tools image. Every object of every rendered value set is
checked with kubernetes-validate in strict mode (unknown fields rejected)
against each version given. kubernetes-validate has no schema for custom
resources and would only warn about them; here they are handled
explicitly instead of passing silently:

- CustomResourceDefinitions themselves are Kubernetes objects: validated.
- A custom resource (IngressRoute, Middleware, ...) must belong to a CRD the
  chart ships (crds/), in a served version, and is validated with
  jsonschema against that CRD's openAPIV3Schema. Each is listed with the
  reason it is not checked by kubernetes-validate.
- Any other object without a schema fails the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
import yaml

CRD_DIR = Path(__file__).resolve().parents[1] / "htcdaskgateway" / "crds"


def load_docs(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, for the served versions of the chart's CRDs."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in load_docs(path):
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def validate_set(path: Path, versions: list[str], crds: dict[tuple[str, str], Any]) -> int:
    errors = 0
    custom: list[str] = []
    docs = load_docs(path)
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in crds:
            try:
                jsonschema.validate(doc, crds[key])
            except jsonschema.ValidationError as e:
                print(f"ERROR {path}: {name_of(doc)} against the chart's CRD: {e.message}")
                errors += 1
            else:
                custom.append(name_of(doc))
            continue
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                print(
                    f"ERROR {path}: {name_of(doc)} against Kubernetes {version}: "
                    f"{where}: {e.message}"
                )
                errors += 1
            except kv.SchemaNotFoundError as e:
                print(f"ERROR {path}: {name_of(doc)}: {e.message}, and no chart CRD defines it")
                errors += 1
    print(
        f"validate: {path.parent.name}: {len(docs) - len(custom)} objects strict-valid against "
        f"Kubernetes {', '.join(versions)}; {len(custom)} custom resources validated against the "
        f"chart's CRDs instead (Kubernetes' schemas do not cover them): {', '.join(custom)}"
    )
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubernetes-version", "-k", action="append", required=True)
    parser.add_argument("rendered", type=Path, help="charts/ci/render.py's output directory")
    args = parser.parse_args()
    supported = set(kv.all_versions())
    missing = [v for v in args.kubernetes_version if v not in supported]
    if missing:
        raise SystemExit(
            f"validate: kubernetes-validate has no schemas for {', '.join(missing)} "
            f"(it has {', '.join(sorted(supported, key=lambda v: tuple(map(int, v.split('.')))))})"
        )
    crds = crd_schemas()
    manifests = sorted(args.rendered.glob("*/manifest.yaml"))
    if not manifests:
        raise SystemExit(f"validate: no */manifest.yaml under {args.rendered}")
    errors = sum(validate_set(p, args.kubernetes_version, crds) for p in manifests)
    if errors:
        print(f"validate: {errors} error(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()
