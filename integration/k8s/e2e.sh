#!/usr/bin/env bash
# make e2e-k8s: the chart on the rig, the compose HTCondor pool and
# JupyterHub outside it, and the integration suites run against the
# gateway in Kubernetes (E2E_TARGET=k8s selects it; the test files are the
# compose suites' own, plus test_k8s_*.py).
#   1 the rig up (integration/k8s/rig.sh), the scheduler image imported
#   2 pool + hub from compose, the hub listening on the rig network
#   3 two releases: "htc" (simple auth, rig-values.yaml) and "htc-hub"
#     (JupyterHub auth, + rig-hub-values.yaml), each `helm test`ed
#   4 pytest in the analyst container, with kubectl, helm and a kubeconfig
# E2E_K8S_TESTS overrides the test selection; KEEP_RIG=1 leaves it all up.
# E2E_K8S_LAB=1 (make lab-k8s) serves JupyterLab against the rig's gateway
# in place of step 4, until it is stopped.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
set -a
# shellcheck source=../../pins/versions.env
. pins/versions.env
# shellcheck source=rig.env
. "$here/rig.env"
set +a
rig=$here/rig.sh
CACHE=${K8S_CACHE:-/var/cache/htcdaskgateway}
bin=$CACHE/bin/$KUBERNETES_VERSION
STATE=${RIG_STATE:-/run/htcdaskgateway/rig}
log() { echo "e2e-k8s: $*"; }
die() { log "$*" >&2; exit 1; }
SECONDS=0
export HUB_BIND_IP=$RIG_HOST_IP

TESTS=${E2E_K8S_TESTS:-integration/test_skeleton.py integration/test_scaling.py \
  integration/test_wait_for_workers.py \
  integration/test_tls_refusal.py integration/test_multitenant.py integration/test_k8s_chart.py \
  integration/test_k8s_faults.py integration/test_k8s_security.py integration/test_k8s_upgrade.py \
  integration/test_k8s_walkthrough.py integration/test_k8s_pod_workers.py}

"$rig" up || die "the rig did not come up"
t_rig=$SECONDS
"$rig" images "htcdaskgateway/scheduler:$HTCDASKGATEWAY_VERSION" || die "importing the scheduler image failed"

log "pool and hub (outside the cluster)"
# A hub started earlier on loopback cannot serve the rig: recreate it.
docker compose up -d --wait --force-recreate hub || die "the hub did not start"
docker compose up -d --wait pool || die "the pool did not start"

# The simple-auth release's shared password: fresh each run, handed to the
# tests through the environment (never a file in the clone).
DASK_GATEWAY__AUTH__KWARGS__PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
export DASK_GATEWAY__AUTH__KWARGS__PASSWORD

# Every release's namespace enforces the Pod Security "restricted" profile:
# the chart's pods and every scheduler pod must pass it to start.
restricted_namespace() {
  "$rig" kubectl create namespace "$1" --dry-run=client -o yaml | "$rig" kubectl apply -f - >/dev/null
  "$rig" kubectl label --overwrite namespace "$1" \
    pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest >/dev/null
}

install_release() {  # install_release RELEASE NAMESPACE [VALUES...]
  local release=$1 namespace=$2; shift 2
  local values=(--values charts/ci/rig-values.yaml)
  for v in "$@"; do values+=(--values "$v"); done
  restricted_namespace "$namespace" || return 1
  "$rig" helm upgrade --install "$release" charts/htcdaskgateway --namespace "$namespace" \
    "${values[@]}" --set-string gateway.auth.simple.password="$DASK_GATEWAY__AUTH__KWARGS__PASSWORD" \
    --wait --timeout 5m >/dev/null \
    || { "$rig" kubectl -n "$namespace" get pods -o wide; return 1; }
  "$rig" helm test "$release" --namespace "$namespace" | tail -n 3 \
    || { "$rig" kubectl -n "$namespace" logs deploy/"$release"-htcdaskgateway-proxy --tail 30; return 1; }
}

log "helm install htc (simple auth)"
install_release htc dask-gateway || die "release htc failed"
log "helm install htc-hub (JupyterHub auth)"
restricted_namespace dask-gateway-hub || die "namespace dask-gateway-hub"
token=$(docker compose exec -T hub cat /run/htcdaskgateway/hub-tokens/dask-gateway) || die "no hub token"
"$rig" kubectl -n dask-gateway-hub create secret generic hub-service-token \
  --from-literal=api-token="$token" --dry-run=client -o yaml | "$rig" kubectl apply -f - >/dev/null
unset token
install_release htc-hub dask-gateway-hub charts/ci/rig-hub-values.yaml || die "release htc-hub failed"
# Both releases made their own CA for the API's HTTPS certificate: the
# analysts' clients trust the two (one PEM bundle, as a facility's dask
# config would carry it).
api_ca=$STATE/api-ca.pem
for ns_release in dask-gateway/htc dask-gateway-hub/htc-hub; do
  "$rig" kubectl -n "${ns_release%/*}" get secret "${ns_release#*/}-htcdaskgateway-https" \
    -o jsonpath='{.data.ca\.crt}' | base64 -d || die "no HTTPS CA for ${ns_release#*/}"
done >"$api_ca"
chmod 0644 "$api_ca"
t_install=$SECONDS
log "rig up in ${t_rig}s; both releases installed and tested after ${t_install}s"
"$rig" kubectl get nodes -o wide
"$rig" kubectl get pods --all-namespaces -o wide

# The analyst container reaches the rig as alice's client would reach a
# facility's gateway: the proxy's NodePorts on the node's address. Her
# workers listen on the host's address of the rig network, where the
# scheduler pods dial them back. kubectl and helm are there for the tests
# that check Kubernetes objects and inject Kubernetes-side faults.
install -m 0600 -o 1000 -g 1000 "$STATE/admin.conf" "$STATE/analyst.conf"
# The chart as last released (CHANGELOG), for the test that upgrades from it.
previous_chart=$STATE/previous-chart
rm -rf "$previous_chart" && mkdir -p "$previous_chart"
git archive "$PREVIOUS_CHART_COMMIT" charts/htcdaskgateway charts/ci/rig-values.yaml | tar -x -C "$previous_chart" \
  || die "the previous chart ($PREVIOUS_CHART_COMMIT) is not in this clone's history"
ANALYST_RUN_ARGS="-v $bin/kubectl:/usr/local/bin/kubectl:ro -v $bin/helm:/usr/local/bin/helm:ro
  -v $STATE/analyst.conf:/run/htcdaskgateway/kubeconfig:ro
  -e KUBECONFIG=/run/htcdaskgateway/kubeconfig -e HELM_CACHE_HOME=/tmp/helm -e HELM_CONFIG_HOME=/tmp/helm
  -e E2E_TARGET=k8s -e DASK_GATEWAY__AUTH__KWARGS__PASSWORD -e RIG_BRIDGE -e RIG_NODE
  -v $previous_chart/charts:/run/htcdaskgateway/previous-charts:ro -e PREVIOUS_CHART_COMMIT
  -v $api_ca:/run/htcdaskgateway/api-ca.pem:ro -e DASK_GATEWAY__HTCONDOR__API_CA=/run/htcdaskgateway/api-ca.pem
  -e DASK_GATEWAY__ADDRESS=https://$RIG_NODE_IP:30080 -e DASK_GATEWAY__PROXY_ADDRESS=tls://$RIG_NODE_IP:30786
  -e HUB_GATEWAY_ADDRESS=https://$RIG_NODE_IP:30180 -e HUB_GATEWAY_PROXY_ADDRESS=tls://$RIG_NODE_IP:30886
  -e DASK_GATEWAY__HTCONDOR__WORKER__HOST=$RIG_HOST_IP"
export ANALYST_RUN_ARGS
rc=0
if [ "${E2E_K8S_LAB:-0}" = 1 ]; then
  scripts/lab-in-analyst || rc=$?
else
  # shellcheck disable=SC2086
  scripts/pytest-in-analyst $TESTS || rc=$?
fi
if [ $rc != 0 ]; then
  log "failed: cluster state"
  "$rig" kubectl get pods,daskclusters -A -o wide || true
  "$rig" kubectl get events -A --field-selector type=Warning --sort-by=.lastTimestamp \
    | grep -v 'Readiness probe failed' | tail -n 20 || true
  for ns_release in dask-gateway/htc dask-gateway-hub/htc-hub; do
    for c in api controller proxy; do
      "$rig" kubectl -n "${ns_release%/*}" logs "deploy/${ns_release#*/}-htcdaskgateway-$c" --tail 40 || true
    done
    # Every scheduler that stopped on its own, with its exit (namespaced_kube.py).
    "$rig" kubectl -n "${ns_release%/*}" logs "deploy/${ns_release#*/}-htcdaskgateway-controller" \
      | grep 'failed: its scheduler stopped' || true
  done
fi
log "pytest exited $rc; the Kubernetes suites took $((SECONDS - t_install))s, ${SECONDS}s in all"
if [ "${KEEP_RIG:-0}" != 1 ]; then
  docker compose rm -sfv pool hub >/dev/null 2>&1 || true
  "$rig" down
fi
exit $rc
