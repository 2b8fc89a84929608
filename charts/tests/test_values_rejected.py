"""Bad values stop `helm template` (and so install) with a message naming the key."""

from __future__ import annotations

import subprocess

import pytest

from conftest import CHART

CASES = [
    # (--set arguments, text the error must contain)
    (["proxy.service.type=ClusterIP"], "proxy.service.type"),
    (["gateway.auth.type=ldap"], "gateway.auth.type"),
    (["gateway.replicas=0"], "gateway.replicas"),
    (["proxy.public.host=https://gw.example.org"], "proxy.public.host"),
    (["proxy.service.ports.tcp.nodePort=8786", "proxy.service.type=NodePort"], "nodePort"),
    (["cluster.scheduler.memory.request=lots"], "cluster.scheduler.memory.request"),
    (["gateway.typo=1"], "typo"),
    (["proxy.image.tag=v2.11"], "proxy.image.tag"),
    (
        ["gateway.auth.jupyterhub.existingSecret.name="],
        "no token source is set: set gateway.auth.jupyterhub.existingSecret.name/key",
    ),
    (["gateway.auth.jupyterhub.apiToken=0123456789abcdef0123"], "both apiToken and existingSecret"),
    (["proxy.service.ports.web.nodePort=30080"], "node ports apply only to type NodePort"),
    (["cluster.scheduler.cores.request=4"], "cores.request is larger than"),
    (["gateway.auth.type=simple"], "gateway.auth.simple.password is not set"),
    (["rbac.clusterWide=yes"], "rbac.clusterWide"),
]


@pytest.mark.parametrize(("sets", "message"), CASES, ids=[c[1] for c in CASES])
def test_bad_values_fail_with_a_clear_message(sets: list[str], message: str) -> None:
    args = ["helm", "template", "x", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode != 0, f"accepted: {sets}"
    assert message in proc.stderr, proc.stderr


def test_default_values_render() -> None:
    proc = subprocess.run(["helm", "template", "x", str(CHART)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
