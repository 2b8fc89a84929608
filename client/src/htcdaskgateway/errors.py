"""Errors raised by htcdaskgateway; each message says what to change."""

from dask_gateway.client import GatewayClusterError


class SettingError(ValueError):
    """A ``gateway.htcondor`` setting or argument has an invalid value."""


class HTCondorError(GatewayClusterError):
    """HTCondor refused or failed an operation on the cluster's jobs."""


class ScheddUnavailableError(HTCondorError):
    """No schedd could be found or reached."""


class SubmitError(HTCondorError):
    """The schedd did not accept the worker jobs."""


class SchedulerConnectionError(GatewayClusterError):
    """The connection to the cluster's scheduler dropped during a call; nothing was changed."""


class CredentialError(GatewayClusterError):
    """The cluster's TLS credentials are unusable for worker jobs."""


class GatewayAccessError(GatewayClusterError):
    """The gateway refused the request: bad credentials, or another user's cluster."""
