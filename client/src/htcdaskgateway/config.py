"""Register htcdaskgateway's dask config defaults (``gateway.htcondor.*``)."""

from pathlib import Path

import dask.config
import yaml

DEFAULTS_FILE = Path(__file__).with_name("htcdaskgateway.yaml")

with DEFAULTS_FILE.open() as f:
    defaults = yaml.safe_load(f)

dask.config.update_defaults(defaults)
