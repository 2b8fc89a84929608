# dask-gateway-server configuration of the local stack (docker-compose.yml):
# schedulers run as local processes in the gateway container, on loopback;
# workers come only from HTCondor. Development auth: any user name, no
# password (never use SimpleAuthenticator without a password elsewhere).
from dask_gateway_server.backends.local import UnsafeLocalBackend


class LoopbackLocalBackend(UnsafeLocalBackend):
    # Schedulers listen on loopback only; the proxy reaches them there.
    default_host = "127.0.0.1"


c = get_config()  # type: ignore[name-defined]  # provided by traitlets

c.DaskGateway.backend_class = LoopbackLocalBackend
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.DaskGateway.address = "127.0.0.1:18001"  # private API, behind the proxy
c.Proxy.address = "127.0.0.1:18000"  # HTTP API and dashboards for clients
c.Proxy.tcp_address = "127.0.0.1:18786"  # TLS proxy that workers and clients dial (SNI)

# Only schedulers: the gateway itself starts no workers, and the plugin
# keeps the workers that join from HTCondor.
c.ClusterConfig.scheduler_cmd = [
    "dask", "scheduler", "--preload", "htcdaskgateway.scheduler_plugin",
]  # fmt: skip
c.ClusterConfig.worker_cmd = ["false"]
c.ClusterConfig.cluster_max_workers = 0
c.ClusterConfig.idle_timeout = 0

# Tests only: a cluster option for the scheduler plugin's unattended
# timeout (the Helm chart sets it for every cluster from cluster.idleTimeout).
from dask_gateway_server.options import Float, Options  # noqa: E402


def _scheduler_settings(options, user):  # type: ignore[no-untyped-def]
    timeout = str(float(options.unattended_timeout))
    return {"environment": {"DASK_GATEWAY__HTCONDOR__UNATTENDED_TIMEOUT": timeout}}


c.Backend.cluster_options = Options(
    Float("unattended_timeout", default=0, min=0, label="Unattended timeout (s)"),
    handler=_scheduler_settings,
)
