#!/usr/bin/env bash
# Make this machine able to build and run the stack: a running docker engine,
# the compose and buildx plugins, and the base image named by BASE_IMAGE.
# `ensure-docker.sh IMAGE SUITE` makes IMAGE from Debian SUITE instead (make
# dist's Python 3.11 runs on bookworm).
# Idempotent: every step is skipped when its result is already there.
# Debian 12 has no compose v2 / buildx packages, so those come from Debian 13
# packages unpacked into the CLI plugin directory (the system's apt sources
# are not touched).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../pins/versions.env
. "$here/pins/versions.env"
BASE_IMAGE=${1:-${BASE_IMAGE:-$DEFAULT_BASE_IMAGE}}
BASE_SUITE=${2:-$BASE_SUITE}
export DEBIAN_FRONTEND=noninteractive
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
log() { echo "ensure-docker: $*" >&2; }

apt_updated=0
apt_install() {
  [ $apt_updated = 1 ] || { $sudo apt-get update -qq; apt_updated=1; }
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing the docker engine (docker.io)"
  apt_install docker.io iptables
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/dockerd.log)"
  $sudo sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/dockerd.log"; exit 1; }
fi

plugins=/usr/local/lib/docker/cli-plugins
if ! docker compose version >/dev/null 2>&1 || ! docker buildx version >/dev/null 2>&1; then
  log "installing docker compose and buildx plugins from Debian $PLUGIN_SUITE packages"
  d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
  mkdir -p "$d/lists/partial" "$d/archives/partial" "$d/x"
  echo "deb http://deb.debian.org/debian $PLUGIN_SUITE main" >"$d/sources.list"
  O=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$d/lists" -o "Dir::Cache::Archives=$d/archives" -o Dir::State::Status=/dev/null)
  apt-get "${O[@]}" -qq update
  (cd "$d" && apt-get "${O[@]}" -qq download docker-compose docker-buildx)
  for f in "$d"/*.deb; do dpkg-deb -x "$f" "$d/x"; done
  $sudo install -D -m 0755 -t "$plugins" "$d"/x/usr/libexec/docker/cli-plugins/*
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    log "pulled $BASE_IMAGE"
  else
    # No registry here: build the same Debian suite locally.
    log "no registry for $BASE_IMAGE: debootstrapping $BASE_SUITE into $BASE_IMAGE"
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    root=$(mktemp -d)
    # mktemp makes the directory 0700, and it becomes the image's "/":
    # storage drivers such as vfs keep that mode, locking out non-root users.
    chmod 0755 "$root"
    $sudo debootstrap --variant=minbase "$BASE_SUITE" "$root" http://deb.debian.org/debian >/tmp/debootstrap.log 2>&1 \
      || { log "debootstrap failed; see /tmp/debootstrap.log"; exit 1; }
    $sudo tar -C "$root" -c . | docker import - "$BASE_IMAGE" >/dev/null
    $sudo rm -rf "$root"
  fi
fi
log "docker $(docker version -f '{{.Server.Version}}'), $(docker compose version --short) compose, base image $BASE_IMAGE ready"
