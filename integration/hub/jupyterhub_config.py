# JupyterHub of the local stack (TEST ONLY): the identity provider of the
# multi-tenant gateway ("gateway-hub" in docker-compose.yml). Analysts never
# open it in a browser; they, and the gateway, only use its REST API.
#
# At every start it makes fresh API tokens, written to $HUB_TOKEN_DIR of
# this run's own volume: one for the dask-gateway service and one for each
# user. Each file is 0600, owned by the one uid that reads them all (see
# TOKEN_READER).
import os
import pwd
import secrets
from pathlib import Path

from jupyterhub.proxy import Proxy

USERS = ["alice", "bob"]
TOKEN_DIR = Path("/run/htcdaskgateway/hub-tokens")
# Every reader of the tokens runs as uid 1000: the test process in the
# analyst container is alice, which plays bob too (it reads his token and
# hands it to `sudo -u bob`), and the gateway-hub service is "dask" of the
# scheduler image, also uid 1000 (both images' useradd --uid 1000). This
# container is the analyst image, so alice's entry names that uid.
TOKEN_READER = pwd.getpwnam("alice")


class RouteTableProxy(Proxy):
    """Keeps JupyterHub's routes in memory and serves nothing.

    The tests reach the Hub's API directly at hub_bind_url; no single-user
    server is ever spawned, so no HTTP proxy (configurable-http-proxy) is
    needed between browsers and notebooks.
    """

    should_start = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.routes: dict[str, dict[str, object]] = {}

    async def add_route(self, routespec: str, target: str, data: dict) -> None:
        self.routes[routespec] = {"routespec": routespec, "target": target, "data": data}

    async def delete_route(self, routespec: str) -> None:
        self.routes.pop(routespec, None)

    async def get_all_routes(self) -> dict[str, dict[str, object]]:
        return dict(self.routes)


def fresh_token(name: str) -> str:
    token = secrets.token_hex(32)
    path = TOKEN_DIR / name
    # Written whole under another name, then renamed over the old one: the
    # file is 0600 from its first byte (a chmod after writing leaves a window,
    # and the volume keeps a 0644 file of an earlier start), and a reader
    # never sees a half-written token.
    partial = path.with_name(f".{name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchown(file.fileno(), TOKEN_READER.pw_uid, TOKEN_READER.pw_gid)
        file.write(token)
    os.replace(partial, path)
    return token


c = get_config()  # type: ignore[name-defined]  # provided by traitlets

TOKEN_DIR.mkdir(parents=True, exist_ok=True)
# HUB_BIND_IP: loopback for the compose gateways; the host's address on the
# Kubernetes rig's own network when the gateway runs in the rig
# (integration/k8s), whose pods cannot reach the host's loopback.
c.JupyterHub.hub_bind_url = f"http://{os.environ.get('HUB_BIND_IP', '127.0.0.1')}:18081"
c.JupyterHub.bind_url = "http://127.0.0.1:18080"
c.JupyterHub.proxy_class = RouteTableProxy
c.JupyterHub.db_url = "sqlite:///:memory:"
c.JupyterHub.cookie_secret_file = "/tmp/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "/tmp/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = set(USERS)

c.JupyterHub.services = [{"name": "dask-gateway", "api_token": fresh_token("dask-gateway")}]
# The gateway looks up who holds a token; nothing more.
c.JupyterHub.load_roles = [
    {"name": "dask-gateway", "scopes": ["read:users"], "services": ["dask-gateway"]},
    # As a facility's hub grants it (charts/README.md): the chart's gateway
    # admits only tokens that may access the dask-gateway service.
    {
        "name": "dask-gateway-users",
        "scopes": ["access:services!service=dask-gateway"],
        "users": USERS,
    },
]
c.JupyterHub.api_tokens = {fresh_token(user): user for user in USERS}
