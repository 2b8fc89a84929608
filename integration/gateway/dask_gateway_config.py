# dask-gateway-server configuration of the local stack (docker-compose.yml):
# schedulers run as local processes in the gateway container, on loopback;
# workers come only from HTCondor. Development auth: any user name, no
# password (never use SimpleAuthenticator without a password elsewhere).
from dask_gateway_server.backends.local import UnsafeLocalBackend


class LoopbackLocalBackend(UnsafeLocalBackend):
    # Schedulers listen on loopback only; the proxy reaches them there.
    default_host = "127.0.0.1"

    async def start_process(self, cluster, cmd, env, name):  # type: ignore[no-untyped-def]
        # LocalBackend starts schedulers with asyncio's subprocesses, and
        # asyncio kills a child whose transport is still open when its event
        # loop closes: every scheduler died with the API server, unlike a
        # facility's (pods, whose API server can restart under them). A
        # plain Popen leaves them running; the API finds them again in its
        # database (serve). Same arguments as LocalBackend.start_process.
        import os
        import subprocess
        import threading

        log_path = os.path.join(self.get_logs_directory(cluster.state["workdir"]), name + ".log")
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            process = subprocess.Popen(
                cmd, preexec_fn=self.make_preexec_fn(cluster), start_new_session=True,
                env=env, stdout=fd, stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            os.close(fd)
        # Reaped once it exits, as asyncio did: LocalBackend tells a live
        # scheduler by its pid, which a zombie still has. A daemon thread, so
        # it neither holds up nor ends with the API server's exit.
        threading.Thread(target=process.wait, daemon=True).start()
        return process.pid


c = get_config()  # type: ignore[name-defined]  # provided by traitlets

c.DaskGateway.backend_class = LoopbackLocalBackend
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.DaskGateway.address = "127.0.0.1:18001"  # private API, behind the proxy
c.Proxy.address = "127.0.0.1:18000"  # HTTP API and dashboards for clients
c.Proxy.tcp_address = "127.0.0.1:18786"  # TLS proxy that workers and clients dial (SNI)

# Under integration/gateway/serve (the "gateway" service): the proxy is a
# process of its own, and the API keeps its clusters in a database that
# outlives the API process and leaves their schedulers running when it
# stops, so a restarted API server takes its running clusters back.
import os  # noqa: E402

_state = os.environ.get("HTCDG_GATEWAY_STATE")
if _state:
    c.Proxy.externally_managed = True
    c.DBBackendBase.db_url = f"sqlite:///{_state}/gateway.sqlite"
    c.DBBackendBase.stop_clusters_on_shutdown = False

# Schedulers, and the gateway's own workers only for a pod worker group
# (add_worker_group(kind="pods")): here local processes in the gateway
# container stand in for the pods the chart's backend starts, at most 2 per
# cluster. The plugin keeps the workers that join from HTCondor apart.
c.ClusterConfig.scheduler_cmd = [
    "dask", "scheduler", "--preload", "htcdaskgateway.scheduler_plugin",
]  # fmt: skip
c.ClusterConfig.worker_cmd = ["dask", "worker"]
c.ClusterConfig.cluster_max_workers = 2
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.worker_memory = "1 G"
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
