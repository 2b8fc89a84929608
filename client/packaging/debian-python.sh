#!/bin/sh
# Debian's own python3 (with venv) as the Python under test: one stage per
# Debian suite in the Dockerfile runs this with the suite's version.
set -eu
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  python3 python3-venv ca-certificates >/dev/null
rm -rf /var/lib/apt/lists/*
ln -s "/usr/bin/python$1" /usr/local/bin/python-under-test
