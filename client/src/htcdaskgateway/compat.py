"""Work-arounds for the dask-gateway client with current distributed."""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import ssl
import time
import weakref
from collections.abc import Mapping
from typing import Any

import aiohttp
from dask_gateway import Gateway, GatewayCluster
from dask_gateway.client import GatewayServerError

from .errors import GatewayAccessError

logger = logging.getLogger(__name__)

# A gateway being upgraded or restarted answers through its proxy with
# 502/503/504 (or not at all) for a few seconds. Reads are retried for
# this long, and once at least: a proxy may hold a request to a pod that
# is gone for its own timeout (Traefik's default 30 s dial), after which
# its routes are current. Writes (a new cluster, a stop) are not retried,
# as they may have happened.
READ_RETRY_SECONDS = 30.0
_PASSING_STATUS = {502, 503, 504}


def trust_api_ca(gateway: Gateway, pem: str) -> None:
    """Make ``gateway``'s HTTPS requests to its API trust the CA in ``pem``.

    ``dask_gateway.Gateway`` has no setting for the API's CA: it sends every
    request with the aiohttp keyword arguments in ``_request_kwargs`` (its
    HTTP proxy), so that is where the SSL context goes. The only place this
    package sets it.
    """
    context = ssl.create_default_context(cadata=pem)
    gateway._request_kwargs["ssl"] = context


class ClosingOnceGateway(Gateway):
    """A ``Gateway`` whose ``close()`` may be called again and whose refusals say why.

    ``Gateway.close()`` reads ``self.loop``, which distributed's
    ``LoopRunner`` refuses once the loop has stopped, so a second call
    raises. ``Gateway.__del__`` makes that second call for every gateway
    closed before it is collected ("Exception ignored in Gateway.__del__"),
    and, if collection happens inside another gateway's loop thread, it
    waits there for the loop runners' shared lock.
    """

    _closed_here = False

    @property
    def user(self) -> str:
        """The gateway user this client works for: what its jobs are marked and selected by.

        The gateway has no "who am I" call, so this is how dask-gateway's
        auth names the user (basic auth's username; in a hub session
        JUPYTERHUB_USER), as ``HTCGatewayCluster.user`` marks the jobs. A
        wrong guess selects nothing: never another user's jobs.
        """
        username = getattr(self.auth, "username", None)
        return str(username or os.environ.get("JUPYTERHUB_USER") or getpass.getuser())

    def close(self) -> Any:
        if self.asynchronous:
            return super().close()
        if self._closed_here:
            return None
        self._closed_here = True
        return super().close()

    async def _request(self, method: str, url: str, json: Any = None) -> Any:
        if method != "GET":
            return await self._request_once(method, url, json)
        deadline = time.monotonic() + READ_RETRY_SECONDS
        delay = 0.5
        retried = False
        while True:
            try:
                return await self._request_once(method, url, json)
            except (aiohttp.ClientResponseError, aiohttp.ClientConnectionError) as exc:
                passing = not isinstance(exc, aiohttp.ClientResponseError) or (
                    exc.status in _PASSING_STATUS
                )
                if not passing or (retried and time.monotonic() + delay > deadline):
                    raise
                retried = True
                logger.warning("The gateway at %s answered %s; retrying in %.1f s",
                               self.address, exc, delay)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)

    async def _request_once(self, method: str, url: str, json: Any) -> Any:
        # The stock client lets 401 and 403 escape as aiohttp's own error,
        # whose message names neither the cause nor the cluster.
        try:
            return await super()._request(method, url, json=json)
        except GatewayServerError as exc:
            # JupyterHub answers an unknown token with 403, which the gateway's
            # JupyterHubAuthenticator turns into this 500 rather than a 401.
            if "verifying user's JupyterHub API token" in str(exc):
                raise GatewayAccessError(
                    f"The gateway at {self.address} could not verify your JupyterHub API "
                    "token: JupyterHub refused it. Use a current token of your own "
                    "(JUPYTERHUB_API_TOKEN in a hub session)"
                ) from None
            raise
        except aiohttp.ClientResponseError as exc:
            if exc.status == 401:
                raise GatewayAccessError(
                    f"The gateway at {self.address} did not accept your credentials "
                    "(authentication failed); check gateway.auth in your dask config"
                ) from None
            if exc.status == 403:
                path = url.removeprefix(self.address)
                raise GatewayAccessError(
                    f"The gateway at {self.address} refused {method} {path}: "
                    "the cluster belongs to another user, or you may not do this"
                ) from None
            raise


class OwnGatewayCluster(GatewayCluster):
    """A ``GatewayCluster`` whose gateway is a ``ClosingOnceGateway`` trusting the API's CA.

    ``GatewayCluster._init_internal`` builds a plain ``Gateway``, and
    dask-gateway has no hook to choose its class: this is the one place its
    state is set with that gateway instead. Subclasses set
    ``htcondor_settings`` before calling it.
    """

    htcondor_settings: Any

    def _init_internal(
        self,
        address: str | None = None,
        proxy_address: str | None = None,
        public_address: str | None = None,
        auth: Any = None,
        cluster_options: Any = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        shutdown_on_close: bool | None = None,
        asynchronous: bool = False,
        loop: Any = None,
        name: str | None = None,
    ) -> None:
        # GatewayCluster's own _init_internal builds a plain Gateway, and
        # dask-gateway has no hook to choose its class. This cluster's
        # gateway must close once and explain refusals (ClosingOnceGateway)
        # and trust the API's CA before its first request, so the state
        # GatewayCluster keeps is set here, with that gateway.
        self.status = "starting" if name is not None else "created"
        self.shutdown_on_close = shutdown_on_close
        self._instances.add(self)
        self.gateway = ClosingOnceGateway(
            address=address, proxy_address=proxy_address, public_address=public_address,
            auth=auth, asynchronous=asynchronous, loop=loop,
        )  # fmt: skip
        if self.htcondor_settings.api_ca:
            trust_api_ca(self.gateway, self.htcondor_settings.api_ca)
        self.scheduler_info: dict[str, Any] = {}
        self.scheduler_comm = None
        self._watch_worker_status_task = None
        self._clients = weakref.WeakSet()
        self._cluster_options = cluster_options
        self._cluster_kwargs = dict(cluster_kwargs or {})
        self._start_task = None
        self._stop_task = None
        self.name = name
        self.scheduler_address = None
        self.dashboard_link = None
        self.security = None
        if not self.asynchronous:
            self.gateway.sync(self._start_internal)
