#!/bin/sh
# Shared by every image. Two steps, so that a change to client/ rebuilds
# only the last layer:
#   install-python-env.sh PACKAGE...  Debian's python3, the venv in
#                                     $VIRTUAL_ENV, PACKAGEs at the versions
#                                     of pins/constraints.txt
#   install-python-env.sh --client    the htcdaskgateway package from client/
# Fails when the image's Python is not the pinned PYTHON_VERSION. The host's
# CA bundle, when passed as the build secret "hostca", is used for HTTPS
# (needed behind a TLS-inspecting proxy) and never stored.
set -eu
[ -f /run/secrets/hostca ] && export PIP_CERT=/run/secrets/hostca
pip="$VIRTUAL_ENV/bin/pip --no-cache-dir --disable-pip-version-check -q"
constraints=/tmp/build/pins/constraints.txt

if [ "${1:-}" = --client ]; then
  $pip install -c "$constraints" --no-deps /tmp/build/client
  exit
fi

apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv tini ca-certificates >/dev/null
rm -rf /var/lib/apt/lists/*
actual=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$actual" = "$PYTHON_VERSION" ] || {
  echo "image has Python $actual but pins/versions.env says $PYTHON_VERSION" >&2; exit 1; }
python3 -m venv "$VIRTUAL_ENV"
$pip install -c "$constraints" "$@"
