#!/usr/bin/env bash
# make dist: every artifact of this release, built and checked, in dist/:
#   htcdaskgateway-<version>-py3-none-any.whl, htcdaskgateway-<version>.tar.gz
#     built with `python -m build` (the wheel from the sdist), `twine check --strict`;
#     the wheel installed into a clean venv on Python 3.11, 3.12 and 3.13
#     (client/packaging/Dockerfile), its CLIs run there and the unit tests
#     run against it;
#   htcdaskgateway-<version>.tgz, the chart, by `helm package`;
#   SHA256SUMS and sizes.
# The version the wheel's CLI prints must be the chart's appVersion and the
# images' label (`make images` builds them first).
set -euo pipefail
cd "$(dirname "$0")/.."
set -a
# shellcheck source=../pins/versions.env
. pins/versions.env
set +a
version=$HTCDASKGATEWAY_VERSION
log() { echo "dist: $*"; }
die() { log "$*" >&2; exit 1; }
SECONDS=0
hostca=/etc/ssl/certs/ca-certificates.crt

scripts/version.sh check || die "versions disagree"
scripts/ensure-docker.sh "local/debian:$PYTHON_3_11_SUITE" "$PYTHON_3_11_SUITE" 2>/dev/null \
  || die "no local/debian:$PYTHON_3_11_SUITE base image"
charts/ci/tools-image.sh || die "building the chart-tools image failed"

for target in build python3.11 python3.12 python3.13; do
  log "image htcdaskgateway/dist:$target"
  docker buildx build --load -q -t "htcdaskgateway/dist:$target" --target "$target" \
    --secret id=hostca,src="$hostca" \
    --build-arg TRIXIE_IMAGE="$DEFAULT_BASE_IMAGE" \
    --build-arg BOOKWORM_IMAGE="local/debian:$PYTHON_3_11_SUITE" \
    --build-arg CPYTHON_3_12_VERSION --build-arg CPYTHON_SOURCE_PROXY \
    -f client/packaging/Dockerfile . >/dev/null || die "building htcdaskgateway/dist:$target failed"
done
# DIST_IMAGES_ONLY=1: build the images above and stop (.ci/run does this
# in the background while the tests run).
if [ "${DIST_IMAGES_ONLY:-0}" = 1 ]; then log "images ready after ${SECONDS}s"; exit 0; fi

rm -rf dist && mkdir dist && chmod 0777 dist
as_me=(--user "$(id -u):$(id -g)")
log "wheel and sdist"
# The isolated build environment gets setuptools at the pinned version.
docker run --rm "${as_me[@]}" -v "$PWD/client:/src:ro" -v "$PWD/dist:/dist" \
  -v "$PWD/pins:/pins:ro" -e PIP_CONSTRAINT=/pins/constraints.txt \
  -v "$hostca:/run/hostca:ro" -e PIP_CERT=/run/hostca htcdaskgateway/dist:build \
  sh -ec 'cp -r /src /tmp/client && rm -rf /tmp/client/build /tmp/client/src/*.egg-info
          python -m build --outdir /dist /tmp/client >/tmp/build.log 2>&1 || { tail -n 30 /tmp/build.log; exit 1; }
          twine check --strict /dist/*' || die "building or checking the wheel and sdist failed"
wheel=dist/htcdaskgateway-$version-py3-none-any.whl
sdist=dist/htcdaskgateway-$version.tar.gz
[ -f "$wheel" ] && [ -f "$sdist" ] || die "expected $wheel and $sdist; dist/ holds: $(ls dist)"

for python in 3.11 3.12 3.13; do
  log "Python $python: clean venv, the wheel, its CLIs, the unit tests"
  docker run --rm -v "$PWD/dist:/dist:ro" -v "$PWD/pins:/pins:ro" -v "$hostca:/run/hostca:ro" \
    -v "$PWD/client/tests:/check/tests:ro" -v "$PWD/client/README.md:/check/README.md:ro" \
    -e PIP_CERT=/run/hostca -e VERSION="$version" -e WHEEL="/$wheel" -e PYTHON="$python" \
    "htcdaskgateway/dist:python$python" bash -ec '
      python-under-test -m venv /tmp/venv
      /tmp/venv/bin/pip install -q --disable-pip-version-check -c /pins/constraints.txt "$WHEEL[test]"
      cd /tmp
      /tmp/venv/bin/python -c "
import sys, htcdaskgateway
assert sys.version.startswith(\"$PYTHON.\"), sys.version
assert \"site-packages\" in htcdaskgateway.__file__, htcdaskgateway.__file__
assert htcdaskgateway.__version__ == \"$VERSION\", htcdaskgateway.__version__
print(f\"  Python {sys.version.split()[0]}: htcdaskgateway {htcdaskgateway.__version__} from {htcdaskgateway.__file__}\")"
      test "$(/tmp/venv/bin/htcdaskgateway --version)" = "htcdaskgateway $VERSION"
      test "$(/tmp/venv/bin/htcdaskgateway-worker --version)" = "htcdaskgateway-worker $VERSION"
      /tmp/venv/bin/htcdaskgateway --help >/dev/null
      /tmp/venv/bin/htcdaskgateway-worker --help >/dev/null
      echo "  htcdaskgateway --version: $(/tmp/venv/bin/htcdaskgateway --version)"
      cd /check && /tmp/venv/bin/python -m pytest -q -p no:cacheprovider tests 2>&1 | tail -n 1
      exit "${PIPESTATUS[0]}"' || die "the wheel on Python $python failed"
done

log "chart"
docker run --rm "${as_me[@]}" -v "$PWD/charts:/charts:ro" -v "$PWD/dist:/dist" \
  htcdaskgateway/chart-tools:dev helm package /charts/htcdaskgateway --destination /dist >/dev/null \
  || die "helm package failed"
chart=dist/htcdaskgateway-$version.tgz
app_version=$(tar -xOzf "$chart" htcdaskgateway/Chart.yaml | sed -n -E 's/^appVersion: "?([^"]*)"?$/\1/p')
[ "$app_version" = "$version" ] || die "the packaged chart's appVersion is '$app_version', not $version"

log "image htcdaskgateway/worker:$version (what HTCondor runs; the pool image adds HTCondor to it)"
docker buildx build --load -q -t "htcdaskgateway/worker:$version" --target worker \
  --secret id=hostca,src="$hostca" --build-arg BASE_IMAGE="$DEFAULT_BASE_IMAGE" \
  --build-arg PYTHON_VERSION --build-arg HTCDASKGATEWAY_VERSION \
  -f images/worker/Dockerfile . >/dev/null || die "building the worker image failed"
for image in scheduler worker; do
  label=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' \
    "htcdaskgateway/$image:$version" 2>/dev/null) || die "no image htcdaskgateway/$image:$version (make images)"
  [ "$label" = "$version" ] || die "htcdaskgateway/$image:$version is labelled '$label'"
done
log "version $version: wheel CLI, chart appVersion, scheduler and worker image labels agree"

(cd dist && sha256sum -- *.whl *.tar.gz *.tgz >SHA256SUMS)
log "artifacts in dist/ (${SECONDS}s):"
for f in dist/*; do printf '  %-48s %8s bytes\n' "${f#dist/}" "$(stat -c %s "$f")"; done
for image in scheduler worker; do
  printf '  %-48s %8s MB (docker image, not in dist/)\n' \
    "image htcdaskgateway/$image:$version" \
    "$(( $(docker image inspect -f '{{.Size}}' "htcdaskgateway/$image:$version") / 1000000 ))"
done
