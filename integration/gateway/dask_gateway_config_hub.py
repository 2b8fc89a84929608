# The multi-tenant gateway of the local stack ("gateway-hub" in
# docker-compose.yml): the same schedulers-only gateway as
# dask_gateway_config.py, on its own ports, authenticating users against
# the stack's JupyterHub, as a facility's deployment does.
from pathlib import Path

c = get_config()  # type: ignore[name-defined]  # provided by traitlets
base = Path(__file__).with_name("dask_gateway_config.py")
exec(compile(base.read_text(), str(base), "exec"))

c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
c.JupyterHubAuthenticator.jupyterhub_api_url = "http://127.0.0.1:18081/hub/api"
c.JupyterHubAuthenticator.jupyterhub_api_token = (
    Path("/run/htcdaskgateway/hub-tokens/dask-gateway").read_text().strip()
)
c.DaskGateway.address = "127.0.0.1:18101"
c.Proxy.address = "127.0.0.1:18100"
c.Proxy.tcp_address = "127.0.0.1:18886"
