#!/usr/bin/env bash
# make e2e-kind: the chart in a kind cluster, the HTCondor pool outside it,
# as at a facility. Builds the images, creates the cluster, loads the
# images into it, installs the chart (charts/ci/kind-values.yaml), runs
# `helm test`, starts the compose pool and runs the integration tests with
# the gateway in Kubernetes.
#
# Needs kind, kubectl, helm and a kind node image (KIND_NODE_IMAGE), which
# only a machine with a container registry has: the workflow
# .github/workflows/e2e-kind.yaml on hosted runners. Without them it stops
# at once with one line naming what is missing.
#
# KEEP_KIND=1 leaves the cluster up afterwards; E2E_KIND_TESTS picks tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.33.4}
CLUSTER=${KIND_CLUSTER:-htcdaskgateway-e2e}
NAMESPACE=dask-gateway
RELEASE=htc
TRAEFIK_IMAGE=docker.io/traefik:v3.3.5
# The suites that drive only the gateway's API and proxy; the others reach
# into compose services (the JupyterHub stack, the gateway container).
TESTS=${E2E_KIND_TESTS:-integration/test_skeleton.py integration/test_scaling.py integration/test_parity.py integration/test_lifecycle.py integration/test_wait_for_workers.py}
log() { echo "e2e-kind: $*"; }

missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  if ! docker image inspect "$NODE_IMAGE" >/dev/null 2>&1 \
     && ! timeout 120 docker pull -q "$NODE_IMAGE" >/dev/null 2>&1; then
    missing+=("node image $NODE_IMAGE (not local, no registry to pull it from)")
  fi
else
  missing+=("a running docker engine")
fi
if [ ${#missing[@]} -gt 0 ]; then
  list=$(printf '%s, ' "${missing[@]}")
  echo "e2e-kind: cannot run here, missing: ${list%, }. It runs on machines with kind and a container registry: .github/workflows/e2e-kind.yaml (hosted runners); see charts/README.md" >&2
  exit 2
fi

log "building the images"
make images
docker image inspect "$TRAEFIK_IMAGE" >/dev/null 2>&1 || docker pull -q "$TRAEFIK_IMAGE"

cleanup() {
  rc=$?
  if [ $rc != 0 ]; then
    log "failed: cluster state"
    kubectl get pods,services,daskclusters -A -o wide || true
    kubectl get ingressroutes,ingressroutetcps -A || true
    for c in api controller proxy; do
      kubectl -n "$NAMESPACE" logs "deploy/$RELEASE-htcdaskgateway-$c" --tail 80 || true
    done
    docker compose logs --tail 50 pool || true
  fi
  docker compose rm -sfv pool >/dev/null 2>&1 || true
  [ "${KEEP_KIND:-0}" = 1 ] || kind delete cluster --name "$CLUSTER" || true
  exit $rc
}
trap cleanup EXIT

log "kind cluster $CLUSTER ($NODE_IMAGE)"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config charts/ci/kind-cluster.yaml --wait 180s
kind load docker-image --name "$CLUSTER" htcdaskgateway/scheduler:dev "$TRAEFIK_IMAGE"

log "helm install"
helm install "$RELEASE" charts/htcdaskgateway --namespace "$NAMESPACE" --create-namespace \
  --values charts/ci/kind-values.yaml --wait --timeout 5m
helm test "$RELEASE" --namespace "$NAMESPACE" --logs

log "the pool, outside the cluster"
docker compose up -d --wait pool
# Workers listen where the scheduler pods can dial them back: the host's
# address on kind's docker network.
worker_host=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' \
  | tr ' ' '\n' | grep -E '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$' | head -1)
[ -n "$worker_host" ] || { log "no IPv4 gateway on docker network kind"; exit 1; }
log "workers listen on $worker_host"

log "integration tests against the gateway in kind: $TESTS"
rc=0
# shellcheck disable=SC2086
docker compose run --rm --no-deps -e DASK_GATEWAY__HTCONDOR__WORKER__HOST="$worker_host" \
  analyst python -m pytest -p no:cacheprovider -ra $TESTS || rc=$?
[ $rc != 5 ] || { log "pytest collected no tests: failing"; exit 1; }
exit $rc
