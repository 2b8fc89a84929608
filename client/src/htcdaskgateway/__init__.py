"""Dask Gateway clusters whose workers run as HTCondor jobs."""

from . import config  # registers the config defaults before anything reads them
from .cluster import HTCGatewayCluster
from .errors import (
    GatewayAccessError,
    HTCondorError,
    ScheddUnavailableError,
    SettingError,
    SubmitError,
)
from .gateway import HTCGateway

__all__ = [
    "GatewayAccessError",
    "HTCGateway",
    "HTCGatewayCluster",
    "HTCondorError",
    "ScheddUnavailableError",
    "SettingError",
    "SubmitError",
]

del config
