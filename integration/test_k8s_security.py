"""The chart's security on the Kubernetes rig (E2E_TARGET=k8s).

What each ServiceAccount may do, as the API server answers for it (not as
the templates say): exactly charts/tests/rbac_expected.yaml in its
namespace, nothing elsewhere, no cluster-scoped write. And the release
namespaces enforce the Pod Security "restricted" profile, under which the
chart's pods and a scheduler pod run.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import docker
import pytest
import yaml

import htcdaskgateway
from conftest import RIG_NODE_IP, kube_items, kubectl, plain_http, wait_for
from htcdaskgateway.settings import HTCondorSettings

RELEASES = {"htc": "dask-gateway", "htc-hub": "dask-gateway-hub"}
EXPECTED = Path("/src/charts/tests/rbac_expected.yaml")
# Namespaces no account of the chart may touch.
ELSEWHERE = ("default", "kube-system")
# Cluster-scoped writes and cross-namespace reads: all must be refused.
FORBIDDEN = [
    ("list", "secrets", "--all-namespaces"),
    ("get", "secrets", "--namespace=kube-system"),
    ("list", "pods", "--all-namespaces"),
    ("list", "nodes", ""),
    ("create", "namespaces", ""),
    ("create", "clusterroles", ""),
    ("create", "clusterrolebindings", ""),
    ("patch", "customresourcedefinitions", ""),
    ("delete", "persistentvolumes", ""),
    ("create", "pods", "--namespace=default"),
]


def account(release: str, component: str) -> str:
    return f"system:serviceaccount:{RELEASES[release]}:{release}-htcdaskgateway-{component}"


def rules_of(user: str, namespace: str) -> dict[str, set[str]]:
    """What the API server says `user` may do in `namespace` ("group/resource" -> verbs)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    result = subprocess.run(
        # No client-side validation: it would list CRDs as `user`.
        ["kubectl", "create", f"--as={user}", "--validate=false", "--output=json", "--filename=-"],
        input=json.dumps(review),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)["status"]
    assert not status.get("incomplete"), status.get("evaluationError")
    rules: dict[str, set[str]] = {}
    for rule in status["resourceRules"]:
        # Named objects only, as rbac_expected.yaml writes them: "configmaps[clusters]".
        names = sorted(name.rsplit("-", 1)[-1] for name in rule.get("resourceNames", []))
        only = f"[{','.join(names)}]" if names else ""
        for group in rule.get("apiGroups", []):
            for resource in rule["resources"]:
                key = (f"{group}/{resource}" if group else resource) + only
                rules.setdefault(key, set()).update(rule["verbs"])
    return rules


def beyond(rules: dict[str, set[str]], baseline: dict[str, set[str]]) -> dict[str, list[str]]:
    """`rules` less what every account holds (discovery, self-reviews)."""
    out = {k: sorted(v - baseline.get(k, set())) for k, v in rules.items()}
    return {k: v for k, v in out.items() if v}


def expected_for(component: str) -> dict[str, list[str]]:
    table = yaml.safe_load(EXPECTED.read_text())[component]
    # The rig's releases keep their schedulers in the release's namespace.
    merged: dict[str, set[str]] = {}
    for perms in table.values():
        for resource, verbs in perms.items():
            merged.setdefault(resource, set()).update(verbs)
    return {k: sorted(v) for k, v in merged.items()}


@pytest.mark.parametrize("release", sorted(RELEASES))
@pytest.mark.parametrize("component", ["api", "controller", "proxy"])
def test_each_account_holds_exactly_its_listed_permissions(release, component):
    namespace = RELEASES[release]
    # An account bound to nothing: what everyone may do anyway.
    baseline = rules_of(f"system:serviceaccount:{namespace}:default", namespace)
    user = account(release, component)
    assert beyond(rules_of(user, namespace), baseline) == expected_for(component)
    for elsewhere in ELSEWHERE:
        other = rules_of(f"system:serviceaccount:{namespace}:default", elsewhere)
        assert beyond(rules_of(user, elsewhere), other) == {}, elsewhere


@pytest.mark.parametrize("component", ["api", "controller", "proxy"])
def test_no_account_reads_other_namespaces_or_writes_cluster_objects(component):
    user = account("htc", component)
    allowed = []
    for verb, resource, scope in FORBIDDEN:
        args = ["kubectl", "auth", "can-i", verb, resource, f"--as={user}"]
        result = subprocess.run(
            args + ([scope] if scope else []), capture_output=True, text=True, timeout=60
        )
        # can-i prints yes/no; its exit status is 0 only for yes.
        if result.stdout.strip() != "no" or result.returncode == 0:
            allowed.append(f"{verb} {resource} {scope}".strip())
    assert allowed == []


def test_release_namespaces_enforce_the_restricted_profile():
    for namespace in RELEASES.values():
        labels = json.loads(kubectl("get", "namespace", namespace, "--output=json"))["metadata"][
            "labels"
        ]
        assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", namespace
        # The chart's pods were admitted under it and run.
        pods = kube_items("pods", namespace, "app.kubernetes.io/name=htcdaskgateway")
        running = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods
                   if p["status"]["phase"] == "Running"}  # fmt: skip
        assert {"gateway", "controller", "proxy"} <= running, namespace
    # Enforcement is live: a pod with no security context (root allowed,
    # capabilities kept, escalation allowed) is refused by the admission.
    # (A privileged one would be refused earlier: the rig's API server
    # runs with --allow-privileged=false.)
    refused = subprocess.run(
        ["kubectl", "run", "root-probe", "--namespace=dask-gateway", "--image=busybox",
         "--dry-run=server"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr, refused.stderr


def test_a_scheduler_pod_runs_restricted_without_an_api_token(new_cluster):
    cluster = new_cluster()
    cluster.scale(1)
    cluster.wait_for_workers(1, timeout=120)
    namespace, cluster_id = cluster.name.split(".", 1)
    (pod,) = kube_items("pods", namespace, f"gateway.dask.org/cluster={cluster_id}")
    assert pod["status"]["phase"] == "Running"
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    mounts = [m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])]
    assert not [m for m in mounts if "serviceaccount" in m], mounts
    (container,) = spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert cluster.get_client().submit(sum, range(10)).result() == 45


WEB_PORT = urlsplit(os.environ.get("DASK_GATEWAY__ADDRESS", "")).port or 0
# Runs as root in a capture container on the host's network (the rig's
# bridge is an interface there): the TCP payload to and from one port, in
# both directions, until SIGTERM; then writes it to stdout.
SNIFFER = """
import signal, socket, struct, sys
iface, port = sys.argv[1], int(sys.argv[2])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.bind((iface, 0))
s.settimeout(0.2)
print("capturing", flush=True, file=sys.stderr)
out = bytearray()
while not stop:
    try:
        frame = s.recv(65535)
    except (socket.timeout, InterruptedError):
        continue
    if frame[12:14] != b"\\x08\\x00" or frame[23] != 6:
        continue
    ip = frame[14:]
    tcp = ip[(ip[0] & 15) * 4:]
    if port in struct.unpack("!HH", tcp[:4]):
        out += tcp[(tcp[12] >> 4) * 4:]
sys.stdout.buffer.write(bytes(out))
"""


def test_plain_http_to_the_api_is_refused():
    # Every route of the web entrypoint is TLS-only: a plain request
    # matches none and never reaches the API.
    status, body = plain_http(f"http://{RIG_NODE_IP}:{WEB_PORT}/api/health")
    assert (status, body) == (404, b"404 page not found\n")


def test_the_api_port_carries_no_private_key(new_cluster):
    image = f"htcdaskgateway/analyst:{htcdaskgateway.__version__}"
    sniffer = docker.from_env().containers.run(
        image, ["python", "-c", SNIFFER, os.environ["RIG_BRIDGE"], str(WEB_PORT)],
        user="root", network_mode="host", cap_add=["NET_RAW"], detach=True,
        labels={"htcdaskgateway.test": "capture"},
    )  # fmt: skip
    try:
        wait_for(lambda: b"capturing" in sniffer.logs(stdout=False, stderr=True),
                 "the capture to start", 30, interval=0.2)  # fmt: skip
        cluster = new_cluster()  # the report with the cluster's key crosses here
        cluster.scale(1)
        cluster.wait_for_workers(1, timeout=120)
        assert cluster.get_client().submit(sum, range(5)).result() == 10
        sniffer.stop(timeout=10)
        captured = sniffer.logs(stdout=True, stderr=False)
    finally:
        sniffer.remove(force=True)
    # The capture saw the API's traffic: TLS records (handshake 0x16, data 0x17).
    assert len(captured) > 2000, len(captured)
    assert b"\x16\x03" in captured and b"\x17\x03" in captured
    for secret in (b"PRIVATE KEY", b"BEGIN CERTIFICATE", b"tls_key", b"Authorization"):
        assert secret not in captured, secret


def pods_selected(namespace: str, selector: dict) -> set[str]:
    labels = ",".join(f"{k}={v}" for k, v in selector["matchLabels"].items())
    return {p["metadata"]["labels"]["app.kubernetes.io/component"]
            for p in kube_items("pods", namespace, labels)}  # fmt: skip


def test_network_policies_select_the_running_pods(new_cluster):
    # The API server took the chart's policies (helm install); their
    # selectors pick the live pods, a scheduler pod included. The rig's
    # bridge CNI does not enforce them (charts/README.md).
    cluster = new_cluster()
    namespace = cluster.name.split(".", 1)[0]
    policies = json.loads(kubectl("get", "networkpolicies", "--namespace", namespace,
                                  "--output=json"))["items"]  # fmt: skip
    admitted = {}
    for policy in policies:
        guarded = pods_selected(namespace, policy["spec"]["podSelector"])
        (component,) = guarded
        admitted[component] = sorted(
            (sorted({p["port"] for p in rule["ports"]}),
             sorted(set().union(*(pods_selected(namespace, peer["podSelector"])
                                  for peer in rule.get("from", [])))))
            for rule in policy["spec"]["ingress"]
        )  # fmt: skip
    assert admitted == {
        "dask-scheduler": [([8786, 8787], ["proxy"]), ([8788], ["gateway"])],
        "gateway": [([8000], ["dask-scheduler", "proxy"])],
        "proxy": [([8000, 8786], [])],  # proxyFrom []: from anywhere
    }


PROBE = """
import json, socket, sys, time
# Each target: "ip:port" checked once, or "ip:port+" retried for 60 s until
# it opens (a new pod's address reaches the firewall's sets a moment late).
seen = []
for target in sys.argv[1:]:
    address, retry = target.rstrip("+"), target.endswith("+")
    ip, port = address.rsplit(":", 1)
    deadline = time.monotonic() + (60 if retry else 0)
    while True:
        try:
            socket.create_connection((ip, int(port)), timeout=5).close()
            verdict = "open"
            break
        except OSError as exc:
            verdict = f"closed: {exc!r}"
            if time.monotonic() > deadline:
                break
            time.sleep(1)
    seen.append(verdict)
print(json.dumps(seen))
"""


def probe(namespace: str, labels: dict[str, str], *targets: str) -> list[str]:
    """What a new pod with `labels` sees of each target, in order ("open" or "closed: ...").

    A pod of its own (restricted, the scheduler image), because the rig's
    runtime cannot `kubectl exec` into running containers.
    """
    name = f"probe-{uuid.uuid4().hex[:8]}"
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"htcdaskgateway.test": "probe", **labels}},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": f"htcdaskgateway/scheduler:{htcdaskgateway.__version__}",
                "imagePullPolicy": "Never", "command": ["python", "-c", PROBE, *targets],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True},
            }],
        },
    }  # fmt: skip
    subprocess.run(["kubectl", "create", "--filename=-"], input=json.dumps(pod), text=True,
                   capture_output=True, timeout=60, check=True)  # fmt: skip
    try:
        wait_for(lambda: kubectl("get", "pod", name, "--namespace", namespace, "--output",
                                 "jsonpath={.status.phase}") in ("Succeeded", "Failed"),
                 f"probe pod {name} to finish", 180, interval=1)  # fmt: skip
        return json.loads(kubectl("logs", name, "--namespace", namespace))
    finally:
        kubectl("delete", "pod", name, "--namespace", namespace, "--wait=false")


def test_network_policies_are_enforced_on_the_rig(new_cluster):
    # kube-router's firewall on the rig's node enforces them. Probe pods
    # stand in for the peers: one labelled as the gateway API (what the
    # schedulers' policy admits on 8788), one with no labels (any other pod).
    cluster = new_cluster()
    namespace, cluster_id = cluster.name.split(".", 1)
    (scheduler,) = kube_items("pods", namespace, f"gateway.dask.org/cluster={cluster_id}")
    (api, *_) = kube_items("pods", namespace, "app.kubernetes.io/component=gateway")
    (proxy, *_) = kube_items("pods", namespace, "app.kubernetes.io/component=proxy")
    as_api = {"gateway.dask.org/instance": api["metadata"]["labels"]["gateway.dask.org/instance"],
              "app.kubernetes.io/component": "gateway"}  # fmt: skip
    to_scheduler = f"{scheduler['status']['podIP']}:"
    # Each probe first waits for what it may reach (which also shows the
    # probe works), then tries what it may not, once.
    as_api_sees = probe(namespace, as_api, to_scheduler + "8788+", to_scheduler + "8787")
    other_sees = probe(
        namespace, {}, f"{proxy['status']['podIP']}:8000+", to_scheduler + "8786",
        to_scheduler + "8787", to_scheduler + "8788", f"{api['status']['podIP']}:8000",
    )  # fmt: skip
    verdicts = [v.split(":")[0] for v in as_api_sees + other_sees]
    assert verdicts == ["open", "closed", "open", "closed", "closed", "closed", "closed"], (
        as_api_sees, other_sees,
    )  # fmt: skip
    # What the policies let through still works: the proxy carries the
    # client's TLS to the scheduler and the dashboard to the analyst.
    assert cluster.get_client().run_on_scheduler(lambda: 42) == 42
    context = ssl.create_default_context(cadata=HTCondorSettings.from_config().api_ca)
    with urllib.request.urlopen(cluster.dashboard_link, timeout=30, context=context) as page:
        assert page.status == 200
