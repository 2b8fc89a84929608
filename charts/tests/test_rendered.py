"""The rendered manifests of every value set (see charts/ci/render.py)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import yaml

from conftest import CHART, Rendered


def test_worker_pods_only_where_the_operator_allows_them(rendered: Rendered) -> None:
    # Workers are HTCondor jobs; worker pods exist only for a pod worker
    # group, capped by cluster.podWorkers.maxWorkers (0: none at all).
    values = rendered.chart_values()
    most = values["cluster"]["podWorkers"]["maxWorkers"]
    config = rendered.one("ConfigMap", "-gateway-config")["data"]["dask_gateway_config.py"]
    assert '"--preload", "htcdaskgateway.scheduler_plugin"' in config
    assert 'max_pods = int(get(values, "cluster.podWorkers.maxWorkers"))' in config
    assert "c.KubeClusterConfig.cluster_max_workers = max_pods" in config
    policies = {p["metadata"]["name"]: p for p in rendered.of_kind("NetworkPolicy")}
    pod_policy = [n for n in policies if n.endswith("-pod-workers")]
    if not values["networkPolicy"]["enabled"]:
        assert not policies
        return
    schedulers = policies[next(n for n in policies if n.endswith("-schedulers"))]
    admitted = [rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                for rule in schedulers["spec"]["ingress"]]  # fmt: skip
    if most == 0:
        assert not pod_policy and "dask-worker" not in admitted
        return
    (name,) = pod_policy
    (rule,) = policies[name]["spec"]["ingress"]
    peers = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]
    }
    assert peers == {"dask-scheduler", "dask-worker"} and "ports" not in rule
    assert "dask-worker" in admitted, "worker pods reach their scheduler"


def test_proxy_exposed_outside_the_cluster(rendered: Rendered) -> None:
    values = rendered.chart_values()
    service = rendered.one("Service", "-proxy")
    assert service["spec"]["type"] in {"NodePort", "LoadBalancer"}
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"web", "tcp"}
    proxy = rendered.one("Deployment", "-proxy")
    (traefik,) = proxy["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in traefik["ports"]}
    args = traefik["args"]
    for name in ("web", "tcp"):
        assert ports[name]["targetPort"] == name
        assert f"--entrypoints.{name}.address=:{container_ports[name]}" in args
        node_port = values["proxy"]["service"]["ports"][name]["nodePort"]
        if service["spec"]["type"] == "NodePort" and node_port:
            assert ports[name]["nodePort"] == node_port
    # Kubernetes refuses source ranges on a NodePort Service.
    load_balancer = service["spec"]["type"] == "LoadBalancer"
    ranges = values["proxy"]["service"]["loadBalancerSourceRanges"] if load_balancer else []
    assert service["spec"].get("loadBalancerSourceRanges", []) == ranges
    instance = values["chart"]["instance"]
    assert f"--providers.kubernetescrd.labelselector=gateway.dask.org/instance={instance}" in args
    # The controller's routes use the entrypoints Traefik defines.
    controller = rendered.one("ConfigMap", "-gateway-config")["data"]["kube_controller_config.py"]
    assert 'proxy_tcp_entrypoint = "tcp"' in controller
    assert 'proxy_web_entrypoint = "web"' in controller


def test_public_address_reaches_the_analysts(rendered: Rendered) -> None:
    public = rendered.chart_values()["proxy"]["public"]
    clients = [
        c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-client-config")
    ]
    if not public["host"]:
        assert clients == [], "a client config without a public address"
        return
    (client,) = clients
    config = yaml_load(client["data"]["htcdaskgateway.yaml"])["gateway"]
    host = public["host"]
    assert config["proxy-address"].startswith(f"tls://{host}:")
    assert config["htcondor"]["scheduler-address"] == config["proxy-address"]
    # One identity for the release's jobs, whichever address a client uses.
    namespace, _, release = config["htcondor"]["gateway-id"].partition("/")
    assert namespace and release
    scheme = "https" if rendered.chart_values()["proxy"]["https"]["enabled"] else "http"
    assert config["address"].startswith(f"{scheme}://{host}:")
    if public["tcpPort"]:
        assert config["proxy-address"] == f"tls://{host}:{public['tcpPort']}"
    # The operator's worker group presets, as the client reads them.
    presets = rendered.chart_values()["cluster"]["workerGroups"]
    assert config["htcondor"].get("worker-groups", {}) == presets
    # Kept claims and their cap, as the client reads them.
    kept = rendered.chart_values()["cluster"]["keptClaims"]
    assert config["htcondor"]["max-keep-claim-idle"] == kept["max"]
    assert config["htcondor"]["worker"] == {"keep-claim-idle": kept["seconds"]}


def test_no_secret_in_any_configmap(rendered: Rendered, runtime_secrets: dict[str, str]) -> None:
    for cm in rendered.of_kind("ConfigMap"):
        text = yaml_dump([cm])
        for name, secret in runtime_secrets.items():
            for form in (secret, base64.b64encode(secret.encode()).decode()):
                assert form not in text, f"{name} in ConfigMap {cm['metadata']['name']}"
        values = yaml_load(cm["data"]["values.yaml"]) if "values.yaml" in cm["data"] else {}
        auth = values.get("gateway", {}).get("auth", {})
        assert "apiToken" not in auth.get("jupyterhub", {})
        assert "password" not in auth.get("simple", {})


def test_inline_secrets_reach_the_gateway_through_a_secret(rendered: Rendered) -> None:
    values = rendered.chart_values()
    (gateway,) = rendered.one("Deployment", "-api")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in gateway.get("env", [])}
    for item in env.values():
        assert "value" not in item or "TOKEN" not in item["name"], "a token as a literal env value"
    if values["gateway"]["auth"]["type"] == "jupyterhub":
        ref = env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]
        secret = values["gateway"]["auth"]["jupyterhub"]["existingSecret"]["name"]
        if secret:
            assert ref["name"] == secret
        else:
            own = rendered.one("Secret", "-secret")
            assert ref == {"name": own["metadata"]["name"], "key": "jupyterhub-api-token"}


def test_resources_and_security_contexts(rendered: Rendered) -> None:
    specs = rendered.pod_specs()
    assert len(specs) >= 4  # api, controller, proxy, helm test pod
    for name, spec in specs:
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for c in spec["containers"] + spec.get("initContainers", []):
            where = f"{name} container {c['name']}"
            resources: dict[str, Any] = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where


def test_scheduler_pods_locked_down_too(rendered: Rendered) -> None:
    # The controller builds scheduler pods from these (merged into its own).
    pod = rendered.chart_values()["chart"]["schedulerPod"]
    assert pod["pod"]["securityContext"]["runAsNonRoot"] is True
    # Schedulers run analysts' code and never call the Kubernetes API.
    assert pod["pod"]["automountServiceAccountToken"] is False
    assert pod["container"]["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["container"]["securityContext"]["readOnlyRootFilesystem"] is True
    # A failed scheduler's last log lines outlive its pod in the controller's log.
    assert pod["container"]["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_deployments_roll_on_config_change(rendered: Rendered) -> None:
    for suffix in ("-api", "-controller"):
        annotations = rendered.one("Deployment", suffix)["spec"]["template"]["metadata"][
            "annotations"
        ]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"]), suffix
    api = rendered.one("Deployment", "-api")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", api["checksum/secret"])


def test_a_replaced_proxy_drains_its_connections(rendered: Rendered) -> None:
    # Issue 26 point 14: workers' scheduler connections run through the
    # proxy; a replaced or evicted proxy pod keeps them until they end.
    proxy = rendered.chart_values()["proxy"]
    drain = proxy["drain"]
    deployment = rendered.one("Deployment", "-proxy")
    pod = deployment["spec"]["template"]
    (traefik,) = pod["spec"]["containers"]
    args = traefik["args"]
    for entrypoint in ("web", "tcp"):
        lifecycle = f"--entrypoints.{entrypoint}.transport.lifecycle."
        assert f"{lifecycle}requestacceptgracetimeout={drain['acceptSeconds']}s" in args
        assert f"{lifecycle}gracetimeout={drain['graceSeconds']}s" in args
    # Kubernetes waits for Traefik's whole shutdown before SIGKILL.
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace == drain["acceptSeconds"] + drain["graceSeconds"] + 30
    # The new pod starts and is ready before the old one is told to stop.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    # Nothing in the pod template changes unless Traefik's own settings
    # do: no checksums of values or certificates, no chart version.
    assert not pod["metadata"].get("annotations")
    labels = pod["metadata"]["labels"]
    assert "helm.sh/chart" not in labels and "app.kubernetes.io/version" not in labels
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    budgets = [b for b in rendered.of_kind("PodDisruptionBudget")
               if b["metadata"]["name"].endswith("-proxy")]  # fmt: skip
    if proxy["replicas"] > 1 and proxy["podDisruptionBudget"]:
        (budget,) = budgets
        assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    else:
        assert not budgets


def test_the_default_drain_outlasts_an_upgrade_made_during_a_session() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["proxy"]["drain"] == {"graceSeconds": 3600, "acceptSeconds": 5}
    assert values["proxy"]["podDisruptionBudget"] is True


RBAC_EXPECTED = Path(__file__).with_name("rbac_expected.yaml")
RELEASE_NAMESPACE = "dask-gateway"  # charts/ci/render.py


def granted(rules: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Rules as rbac_expected.yaml writes them: "group/resource" -> sorted verbs."""
    out: dict[str, set[str]] = {}
    for rule in rules:
        # A grant on named objects only: "configmaps[clusters]" (each name's
        # component, the part after the release's prefix).
        names = sorted(name.rsplit("-", 1)[-1] for name in rule.get("resourceNames", []))
        only = f"[{','.join(names)}]" if names else ""
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (f"{group}/{resource}" if group else resource) + only
                out.setdefault(key, set()).update(rule["verbs"])
    return {k: sorted(v) for k, v in out.items()}


def expected_rbac(namespaces: dict[str, str]) -> dict[tuple[str, str], dict[str, list[str]]]:
    """(account suffix, namespace) -> permissions, from rbac_expected.yaml."""
    table = yaml.safe_load(RBAC_EXPECTED.read_text())
    out: dict[tuple[str, str], dict[str, list[str]]] = {}
    for component, per_namespace in table.items():
        for where, perms in per_namespace.items():
            key = (f"-{component}", namespaces[where])
            merged = out.setdefault(key, {})
            for resource, verbs in perms.items():
                merged[resource] = sorted(set(merged.get(resource, [])) | set(verbs))
    return out


def test_rbac_grants_exactly_what_each_component_uses(rendered: Rendered) -> None:
    values = rendered.chart_values()
    schedulers = values["chart"]["schedulerNamespace"]
    want = expected_rbac({"release": RELEASE_NAMESPACE, "schedulers": schedulers})
    accounts = {sa["metadata"]["name"] for sa in rendered.of_kind("ServiceAccount")}
    cluster_wide = values["rbac"]["clusterWide"]
    role_kind = "ClusterRole" if cluster_wide else "Role"
    assert not rendered.of_kind("Role" if cluster_wide else "ClusterRole")
    assert not rendered.of_kind("RoleBinding" if cluster_wide else "ClusterRoleBinding")
    roles = {
        (r["metadata"]["name"], r["metadata"].get("namespace")): r["rules"]
        for r in rendered.of_kind(role_kind)
    }
    seen: dict[tuple[str, str], dict[str, list[str]]] = {}
    for binding in rendered.of_kind(role_kind + "Binding"):
        namespace = binding["metadata"].get("namespace")
        assert binding["roleRef"]["kind"] == role_kind
        ((subject),) = binding["subjects"]
        assert subject["name"] in accounts and subject["namespace"] == RELEASE_NAMESPACE
        suffix = next(s for (s, _) in want if subject["name"].endswith(s))
        perms = granted(roles[(binding["roleRef"]["name"], namespace)])
        if cluster_wide:
            # One ClusterRole serves every namespace the component works in.
            for s, ns in want:
                if s == suffix:
                    seen[(s, ns)] = perms
        else:
            seen[(suffix, namespace)] = perms
    if cluster_wide:
        # Traefik's node reads, turned off only in namespaced mode.
        for key in [k for k in seen if k[0] == "-proxy"]:
            assert seen[key].pop("nodes") == ["list", "watch"]
    assert seen == want


def test_proxy_and_gateway_watch_what_their_roles_cover(rendered: Rendered) -> None:
    values = rendered.chart_values()
    chart = values["chart"]
    (traefik,) = rendered.one("Deployment", "-proxy")["spec"]["template"]["spec"]["containers"]
    flags = dict(a.split("=", 1) if "=" in a else (a, "") for a in traefik["args"])
    if values["rbac"]["clusterWide"]:
        assert chart["watchNamespace"] == ""
        assert "--providers.kubernetescrd.namespaces" not in flags
    else:
        assert chart["watchNamespace"] == chart["schedulerNamespace"]
        watched = set(flags["--providers.kubernetescrd.namespaces"].split(","))
        assert watched == {RELEASE_NAMESPACE, chart["schedulerNamespace"]}
        assert flags["--providers.kubernetescrd.disableClusterScopeResources"] == "true"
    (controller,) = rendered.one("Deployment", "-controller")["spec"]["template"]["spec"][
        "containers"
    ]
    assert controller["args"][:2] == ["python", "/etc/dask-gateway/namespaced_kube.py"]


def test_crds_ship_with_the_chart(rendered: Rendered) -> None:
    crds = {c["metadata"]["name"] for c in rendered.of_kind("CustomResourceDefinition")}
    assert {"daskclusters.gateway.dask.org", "ingressroutetcps.traefik.io"} <= crds
    for doc in rendered.docs:
        group = doc["apiVersion"].split("/")[0]
        if group in {"traefik.io", "gateway.dask.org"}:
            plural = doc["kind"].lower() + "s"
            assert f"{plural}.{group}" in crds


def test_helm_test_pod_checks_both_ports(rendered: Rendered) -> None:
    (pod,) = rendered.of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    ports = {p["name"]: p["port"] for p in rendered.one("Service", "-proxy")["spec"]["ports"]}
    assert env["WEB_PORT"] == str(ports["web"]) and env["TCP_PORT"] == str(ports["tcp"])


def test_no_hook_can_block_uninstall_and_the_release_owns_its_clusters(rendered: Rendered) -> None:
    # A hook Job or Pod that runs the chart's image blocks `helm uninstall`
    # when the image cannot start; helm test's pod must not outlive it.
    for doc in rendered.docs:
        hook = doc.get("metadata", {}).get("annotations", {}).get("helm.sh/hook")
        assert hook in (None, "test"), (doc["kind"], doc["metadata"]["name"], hook)
    (pod,) = rendered.of_kind("Pod")
    policy = set(pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"].split(","))
    assert {"hook-succeeded", "hook-failed"} <= policy
    values = rendered.chart_values()
    owner = rendered.one("ConfigMap", "-clusters")
    assert owner["metadata"]["name"] == values["chart"]["clusterOwner"]
    assert owner["metadata"]["namespace"] == values["chart"]["schedulerNamespace"]
    config = rendered.one("ConfigMap", "-gateway-config")
    assert "delete_clusters.py" not in config["data"]


def yaml_dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs)


def yaml_load(text: str) -> Any:
    return yaml.safe_load(text)


def test_images_default_to_the_charts_app_version(rendered: Rendered) -> None:
    # One version for chart, images and client (pins/versions.env): with no
    # image.tag, every htcdaskgateway image is the chart's appVersion.
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = rendered.chart_values()["image"]
    tag = image.get("tag") or chart["appVersion"]
    # An optional digest pins the content: repository:tag@digest.
    ref = f":{tag}@{image['digest']}" if image.get("digest") else f":{tag}"
    images = [
        c["image"]
        for _, spec in rendered.pod_specs()
        for c in spec.get("containers", []) + spec.get("initContainers", [])
        if "htcdaskgateway/scheduler" in c["image"]
    ]
    assert images, "no pod runs the scheduler image"
    assert all(image.endswith(ref) for image in images), images
    scheduler_image = rendered.chart_values()["chart"]["image"]  # KubeClusterConfig.image
    assert scheduler_image.endswith(f"htcdaskgateway/scheduler{ref}"), scheduler_image
    assert chart["version"] == chart["appVersion"]


def test_a_default_load_balancer_admits_only_private_networks() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    service = values["proxy"]["service"]
    assert service["type"] == "LoadBalancer"
    assert service["loadBalancerSourceRanges"] == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]


def test_the_default_traefik_is_the_version_the_rig_runs() -> None:
    # The rig builds and tests pins/versions.env's TRAEFIK_VERSION; the
    # chart's default must be that one, not an older release with known CVEs.
    pins = (CHART.parents[1] / "pins" / "versions.env").read_text()
    (pinned,) = re.findall(r"^TRAEFIK_VERSION=(\S+)$", pins, re.M)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rig = yaml.safe_load((CHART.parent / "ci" / "rig-values.yaml").read_text())
    assert values["proxy"]["image"]["tag"] == pinned
    assert rig["proxy"]["image"]["tag"] == pinned


def test_https_on_the_web_port_unless_turned_off(rendered: Rendered) -> None:
    values = rendered.chart_values()
    https = values["proxy"]["https"]
    (traefik,) = rendered.one("Deployment", "-proxy")["spec"]["template"]["spec"]["containers"]
    client = [cm for cm in rendered.of_kind("ConfigMap") if cm["metadata"]["name"].endswith(
        "-client-config")]  # fmt: skip
    client_config = yaml.safe_load(client[0]["data"]["htcdaskgateway.yaml"]) if client else None
    for cm in rendered.of_kind("ConfigMap"):
        assert "PRIVATE KEY" not in yaml.safe_dump(cm), cm["metadata"]["name"]
    if not https["enabled"]:
        assert "--entrypoints.web.http.tls=true" not in traefik["args"]
        assert not rendered.of_kind("TLSStore")
        if client_config:
            assert client_config["gateway"]["address"].startswith("http://")
        return
    assert "--entrypoints.web.http.tls=true" in traefik["args"]
    (store,) = rendered.of_kind("TLSStore")
    assert store["metadata"]["name"] == "default"
    secret_name = store["spec"]["defaultCertificate"]["secretName"]
    htcondor = client_config["gateway"]["htcondor"] if client_config else {}
    if client_config:
        assert client_config["gateway"]["address"].startswith("https://")
    if https.get("existingSecret"):
        assert secret_name == https["existingSecret"]
        assert not [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == secret_name]
        assert "api-ca" not in htcondor or htcondor["api-ca"] == https["caCertificate"]
        return
    secret = rendered.one("Secret", "-https")
    assert secret["metadata"]["name"] == secret_name
    assert secret["type"] == "kubernetes.io/tls"
    pem = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(pem) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    for key in ("ca.crt", "tls.crt"):
        assert pem[key].startswith("-----BEGIN CERTIFICATE-----"), key
    assert pem["ca.crt"] != pem["tls.crt"]
    host = values["proxy"]["public"]["host"]
    assert secret["metadata"]["annotations"]["htcdaskgateway.dask.org/certificate-host"] == host
    if client_config:
        # The analysts' config carries the same CA the Secret holds.
        assert htcondor["api-ca"].strip() == pem["ca.crt"].strip()


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_network_policies_admit_only_the_listed_peers(rendered: Rendered) -> None:
    values = rendered.chart_values()
    policies = {p["metadata"]["name"]: p for p in rendered.of_kind("NetworkPolicy")}
    if not values["networkPolicy"]["enabled"]:
        assert policies == {}
        return
    chart = values["chart"]
    pods = {
        component: (
            RELEASE_NAMESPACE,
            rendered.one("Deployment", f"-{component}")["spec"]["template"]["metadata"]["labels"],
        )
        for component in ("api", "proxy", "controller")
    }
    # Labels the gateway's Kubernetes backend gives each scheduler pod.
    pods["scheduler"] = (
        chart["schedulerNamespace"],
        {"gateway.dask.org/instance": chart["instance"],
         "app.kubernetes.io/component": "dask-scheduler"},
    )  # fmt: skip
    with_pods = values["cluster"]["podWorkers"]["maxWorkers"] > 0
    if with_pods:  # and each worker pod of a pod worker group
        pods["worker"] = (
            chart["schedulerNamespace"],
            {"gateway.dask.org/instance": chart["instance"],
             "app.kubernetes.io/component": "dask-worker"},
        )  # fmt: skip

    def guarded(policy: dict[str, Any]) -> str:
        (name,) = [
            c for c, (ns, labels) in pods.items()
            if ns == policy["metadata"].get("namespace", RELEASE_NAMESPACE)
            and selects(policy["spec"]["podSelector"], labels)
        ]  # fmt: skip
        return name

    def admitted(rule: dict[str, Any]) -> set[str]:
        out = set()
        for peer in rule.get("from", []):
            if "podSelector" not in peer:  # proxyFrom's ipBlocks, compared below
                continue
            namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            out |= {c for c, (ns, labels) in pods.items()
                    if ns == namespace and selects(peer["podSelector"], labels)}  # fmt: skip
        return out

    seen = {}
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        rules = policy["spec"]["ingress"]
        seen[guarded(policy)] = {
            # No ports: every port (dask picks the workers' own).
            (frozenset(p["port"] for p in rule.get("ports", [])), frozenset(admitted(rule)))
            for rule in rules
        }
    assert seen["scheduler"] == {
        (frozenset({8786, 8787}), frozenset({"proxy"})),
        (frozenset({8788}), frozenset({"api"})),
        *([(frozenset({8786}), frozenset({"worker"}))] if with_pods else []),
    }
    if with_pods:
        assert seen["worker"] == {(frozenset(), frozenset({"scheduler", "worker"}))}
    assert seen["api"] == {(frozenset({8000}), frozenset({"proxy", "scheduler"}))}
    (proxy_rule,) = policies[next(n for n in policies if n.endswith("-proxy"))]["spec"]["ingress"]
    assert {p["port"] for p in proxy_rule["ports"]} == {8000, 8786}, "Traefik's web and tcp"
    assert proxy_rule.get("from", []) == values["networkPolicy"]["proxyFrom"]
    assert "controller" not in seen, "the controller serves nothing"
