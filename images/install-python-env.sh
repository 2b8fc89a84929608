#!/bin/sh
# Shared by every image: make the venv in $VIRTUAL_ENV, install the named
# packages at the versions in pins/constraints.txt, then the htcdaskgateway
# package from client/. Checks that the image's Python is the pinned one.
# The host's CA bundle, when passed as the build secret "hostca", is used
# for HTTPS (needed behind a TLS-inspecting proxy) and never stored.
set -eu
actual=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$actual" = "$PYTHON_VERSION" ] || {
  echo "image has Python $actual but pins/versions.env says $PYTHON_VERSION" >&2; exit 1; }
[ -f /run/secrets/hostca ] && export PIP_CERT=/run/secrets/hostca
python3 -m venv "$VIRTUAL_ENV"
pip="$VIRTUAL_ENV/bin/pip --no-cache-dir --disable-pip-version-check -q"
$pip install -c /tmp/build/pins/constraints.txt "$@"
$pip install -c /tmp/build/pins/constraints.txt --no-deps /tmp/build/client
