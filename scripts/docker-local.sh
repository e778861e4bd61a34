#!/usr/bin/env bash
# A Docker engine of our own, for the container tests on a machine that has
# no registry access: the base image is debootstrapped from the Debian
# mirror this machine's apt already uses, and crates are vendored so the
# image builds offline.
#
#   bash scripts/docker-local.sh up      install docker.io + debootstrap if missing, start the engine
#   bash scripts/docker-local.sh base SUITE TAG
#                                        debootstrap Debian SUITE (minbase), import it as TAG
#   bash scripts/docker-local.sh image   up, base trixie, then build podmaster:test from this tree
#   bash scripts/docker-local.sh down    stop the engine `up` started
#
# The engine lives under $PODMASTER_DOCKER_ROOT (default /tmp/podmaster-docker)
# and listens on its docker.sock; every command here and the container tests
# talk to it through DOCKER_HOST. It has no bridge network and leaves
# iptables alone: tests run containers with --network none, and `docker
# build` uses --network host so that RUN apt-get works. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${PODMASTER_DOCKER_ROOT:-/tmp/podmaster-docker}
export DOCKER_HOST="unix://$ROOT/docker.sock"
IMAGE=podmaster:test
# How long dockerd may take to answer after it starts.
START_TIMEOUT_S=30

engine_answers() { docker info >/dev/null 2>&1; }

up() {
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
  fi
  mkdir -p "$ROOT"
  if [ -S "$ROOT/docker.sock" ] && engine_answers; then
    echo "engine already running: DOCKER_HOST=$DOCKER_HOST"
    return
  fi
  # setsid: the engine outlives this script and its process group.
  setsid dockerd --host "$DOCKER_HOST" --data-root "$ROOT/data" --exec-root "$ROOT/exec" \
    --pidfile "$ROOT/dockerd.pid" --bridge=none --iptables=false --ip6tables=false \
    </dev/null >"$ROOT/dockerd.log" 2>&1 &
  local deadline=$((SECONDS + START_TIMEOUT_S))
  until engine_answers; do
    if [ $SECONDS -ge $deadline ]; then
      echo "dockerd did not answer within ${START_TIMEOUT_S}s; the end of $ROOT/dockerd.log:" >&2
      tail -n 20 "$ROOT/dockerd.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "engine started: DOCKER_HOST=$DOCKER_HOST"
}

# First Debian archive URI in the apt sources (deb822 or one-line format),
# leaving out the security archive.
debian_mirror() {
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -E '^[[:space:]]*(URIs:|deb[[:space:]])' | grep -v -- '-security' \
    | grep -oE 'https?://[^[:space:]]+/debian/?' | head -n 1 || true)
  if [ -z "$uri" ]; then
    echo "found no Debian mirror in /etc/apt/sources.list{,.d}: cannot debootstrap" >&2
    exit 1
  fi
  echo "$uri"
}

base() {
  local suite=${1:?usage: base SUITE TAG} tag=${2:?usage: base SUITE TAG}
  if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag: already there"
    return
  fi
  local rootfs
  rootfs=$(mktemp -d "$ROOT/rootfs.XXXXXX")
  if ! debootstrap --variant=minbase "$suite" "$rootfs" "$(debian_mirror)" >"$ROOT/debootstrap.log" 2>&1; then
    echo "debootstrap $suite failed; the end of $ROOT/debootstrap.log:" >&2
    tail -n 20 "$ROOT/debootstrap.log" >&2
    rm -rf "$rootfs"
    exit 1
  fi
  tar -C "$rootfs" -c . | docker import - "$tag" >/dev/null
  rm -rf "$rootfs"
  echo "$tag: imported from a debootstrapped $suite"
}

# The Dockerfile's defaults name images from a registry; here both stages
# use the debootstrapped trixie (cargo then comes from Debian), and crates
# come from vendor/.
image() {
  up
  base trixie debian:trixie
  docker tag debian:trixie debian:trixie-slim
  cargo vendor --locked -q vendor >/dev/null
  if ! docker build --network host --build-arg BUILDER_IMAGE=debian:trixie -t "$IMAGE" . >"$ROOT/build.log" 2>&1; then
    echo "docker build failed; the end of $ROOT/build.log:" >&2
    tail -n 40 "$ROOT/build.log" >&2
    exit 1
  fi
  echo "$IMAGE: built from $(pwd)"
}

down() {
  [ -f "$ROOT/dockerd.pid" ] || { echo "no engine started here"; return; }
  local pid
  pid=$(cat "$ROOT/dockerd.pid")
  kill "$pid" 2>/dev/null || true
  # dockerd stops its containers first; give it the time docker stop would.
  local deadline=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "dockerd $pid still running after 15s" >&2; exit 1; }
    sleep 0.25
  done
  echo "engine stopped"
}

case "${1:-}" in
  up) up ;;
  base) shift; base "$@" ;;
  image) image ;;
  down) down ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
