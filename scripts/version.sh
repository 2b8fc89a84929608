#!/usr/bin/env bash
# The release version lives in pins/versions.env (HTCDASKGATEWAY_VERSION).
# Python reads it from client/src/htcdaskgateway/_version.py and Helm from
# charts/htcdaskgateway/Chart.yaml, neither of which can read an env file:
#   scripts/version.sh write   copy it into both (`make version`)
#   scripts/version.sh check   fail if either differs (`make dist`, CI)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../pins/versions.env
. pins/versions.env
version=$HTCDASKGATEWAY_VERSION
python_file=client/src/htcdaskgateway/_version.py
chart=charts/htcdaskgateway/Chart.yaml

case "${1:-}" in
  write)
    cat >"$python_file" <<PY
# Written by scripts/version.sh from pins/versions.env: edit it there.
__version__ = "$version"
PY
    sed -i -E "s/^version: .*/version: $version/; s/^appVersion: .*/appVersion: \"$version\"/" "$chart"
    echo "version $version written to $python_file and $chart"
    ;;
  check)
    found_python=$(sed -n -E 's/^__version__ = "(.*)"$/\1/p' "$python_file" 2>/dev/null || true)
    found_chart=$(sed -n -E 's/^version: (.*)$/\1/p' "$chart")
    found_app=$(sed -n -E 's/^appVersion: "(.*)"$/\1/p' "$chart")
    bad=0
    for pair in "$python_file:$found_python" "$chart version:$found_chart" "$chart appVersion:$found_app"; do
      if [ "${pair##*:}" != "$version" ]; then
        echo "version: ${pair%:*} says '${pair##*:}', pins/versions.env says '$version'; run make version" >&2
        bad=1
      fi
    done
    [ $bad = 0 ] && echo "version $version in pins/versions.env, $python_file and $chart"
    exit $bad
    ;;
  *) echo "usage: $0 write|check" >&2; exit 2 ;;
esac
