"""Dask Gateway clusters whose workers run as HTCondor jobs.

The public names are imported on first use: a worker job runs
``htcdaskgateway.worker``, and should not pay for importing the client
(dask-gateway, HTCondor bindings, aiohttp) before it starts ``dask worker``.
The config defaults are registered by ``settings``, before any is read.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .cluster import HTCGatewayCluster
    from .errors import (
        GatewayAccessError,
        HTCondorError,
        ScheddUnavailableError,
        SchedulerConnectionError,
        SettingError,
        SubmitError,
    )
    from .gateway import HTCGateway

_MODULE_OF = {
    "HTCGateway": ".gateway",
    "HTCGatewayCluster": ".cluster",
    "GatewayAccessError": ".errors",
    "HTCondorError": ".errors",
    "ScheddUnavailableError": ".errors",
    "SchedulerConnectionError": ".errors",
    "SettingError": ".errors",
    "SubmitError": ".errors",
}

__all__ = [
    "GatewayAccessError",
    "HTCGateway",
    "HTCGatewayCluster",
    "HTCondorError",
    "ScheddUnavailableError",
    "SchedulerConnectionError",
    "SettingError",
    "SubmitError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
