"""Register htcdaskgateway's dask config defaults (``gateway.htcondor.*``)."""

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import dask.config
import yaml

DEFAULTS_FILE = Path(__file__).with_name("htcdaskgateway.yaml")

with DEFAULTS_FILE.open() as f:
    defaults = yaml.safe_load(f)

dask.config.update_defaults(defaults)


# Where a client's gateway comes from: set in the environment (an image's
# presets) they silently beat a config file handed to the analyst, and a
# cluster made on one gateway gets workers dialling another's proxy.
ADDRESS_KEYS = (
    "gateway.address",
    "gateway.proxy-address",
    "gateway.htcondor.scheduler-address",
    "gateway.htcondor.worker.host",
)
_MISSING = object()


def environment_variable(key: str) -> str:
    """The ``DASK_...`` variable that sets ``key`` (dask's naming)."""
    return "DASK_" + key.upper().replace(".", "__").replace("-", "_")


def environment_overrides(
    environ: Mapping[str, str] | None = None, paths: list[str] | None = None
) -> list[str]:
    """What the environment sets over a different value of a config file, for ADDRESS_KEYS."""
    environ = os.environ if environ is None else environ
    files = []
    for directory in dask.config.paths if paths is None else paths:
        for file in sorted(Path(directory).glob("*.y*ml")) if Path(directory).is_dir() else []:
            with contextlib.suppress(OSError, yaml.YAMLError):
                files.append((file, yaml.safe_load(file.read_text()) or {}))
    said = []
    for key in ADDRESS_KEYS:
        variable = environment_variable(key)
        if variable not in environ:
            continue
        from_env = dask.config.get(key, config=dask.config.collect_env(environ), default=None)
        for file, data in files:
            in_file = dask.config.get(key, config=data, default=_MISSING)
            if in_file is not _MISSING and str(in_file) != str(from_env):
                said.append(
                    f"{variable}={from_env} in the environment overrides {key}: {in_file} "
                    f"from {file}; unset {variable} to use the file"
                )
    return said
