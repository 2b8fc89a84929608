"""``HTCGateway``: a ``dask_gateway.Gateway`` whose clusters run workers on HTCondor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dask_gateway import Gateway

from .cluster import HTCGatewayCluster
from .settings import HTCondorSettings


class HTCGateway(Gateway):
    """A drop-in ``dask_gateway.Gateway`` for HTCondor-backed clusters.

    Takes the arguments of ``Gateway`` plus ``htcondor``, a mapping that
    overrides the ``gateway.htcondor`` config for the clusters it creates
    or connects to.
    """

    cluster_class: type[HTCGatewayCluster] = HTCGatewayCluster

    def __init__(
        self, *args: Any, htcondor: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        self.htcondor = dict(htcondor or {})
        HTCondorSettings.from_config(self.htcondor)  # bad settings fail here, not at scale()
        super().__init__(*args, **kwargs)

    def _cluster_kwargs(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "proxy_address": self.proxy_address,
            "public_address": self._public_address,
            "auth": self.auth,
            "asynchronous": self.asynchronous,
            "loop": self.loop,
            "htcondor": self.htcondor,
        }

    def new_cluster(
        self, cluster_options: Any = None, shutdown_on_close: bool = True, **kwargs: Any
    ) -> HTCGatewayCluster:
        """Start a cluster at the gateway; ``scale(n)`` then submits ``n`` worker jobs."""
        return self.cluster_class(
            cluster_options=cluster_options,
            shutdown_on_close=shutdown_on_close,
            **self._cluster_kwargs(),
            **kwargs,
        )

    def connect(self, cluster_name: str, shutdown_on_close: bool = False) -> HTCGatewayCluster:
        """Connect to a running cluster and take control of its worker jobs."""
        return self.cluster_class.from_name(
            cluster_name, shutdown_on_close=shutdown_on_close, **self._cluster_kwargs()
        )
