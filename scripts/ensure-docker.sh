#!/usr/bin/env bash
# A Docker Engine for the container runtime's tests and benchmarks, and the base image kinetic's
# Dockerfile and the examples' Dockerfiles build on (`debian:bookworm-slim`).
#
# - An engine already answering at $DOCKER_HOST (default unix:///var/run/docker.sock) is used as is.
# - Otherwise Debian's docker.io is installed (apt-get, once) and `dockerd` is started in the
#   background; its PID is printed on stdout, so that the caller stops it (by that PID) when done.
#   Nothing is printed when the engine was already running.
# - No image registry need be reachable: when the engine has no `debian:bookworm-slim`, one is made
#   from Debian's packages with debootstrap (minbase, with CA certificates), cached as a tarball under
#   ~/.cache/kinetic-docker, and imported (once per engine).
#
# Progress goes to stderr. Usage: `pid=$(bash scripts/ensure-docker.sh)`.
set -euo pipefail

cache=${KINETIC_DOCKER_CACHE:-$HOME/.cache/kinetic-docker}
mkdir -p "$cache"
base_image=debian:bookworm-slim

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >&2
}

engine_answers() {
  docker info >/dev/null 2>&1
}

started=""
if ! command -v docker >/dev/null 2>&1 || ! engine_answers; then
  if ! command -v dockerd >/dev/null 2>&1; then
    echo "Docker Engine is not installed; installing docker.io (apt-get, once)..." >&2
    apt_install docker.io
  fi
  if ! engine_answers; then
    echo "starting dockerd (log: $cache/dockerd.log)..." >&2
    dockerd >"$cache/dockerd.log" 2>&1 &
    started=$!
    for _ in $(seq 1 300); do
      engine_answers && break
      if ! kill -0 "$started" 2>/dev/null; then
        echo "dockerd exited at start; its log:" >&2
        tail -n 30 "$cache/dockerd.log" >&2
        exit 1
      fi
      sleep 0.1
    done
    if ! engine_answers; then
      echo "dockerd did not answer within 30 s; its log:" >&2
      tail -n 30 "$cache/dockerd.log" >&2
      kill "$started" 2>/dev/null || true
      exit 1
    fi
  fi
fi

if ! docker image inspect "$base_image" >/dev/null 2>&1; then
  # With CA certificates, so images on it (kinetic's own) need nothing from the network.
  tarball="$cache/bookworm-minbase-ca.tar"
  if [ ! -s "$tarball" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
      echo "installing debootstrap (apt-get, once)..." >&2
      apt_install debootstrap
    fi
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d)
    echo "making $base_image from Debian's packages (debootstrap from $mirror, ~70 s once)..." >&2
    if ! debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1; then
      echo "debootstrap failed; its log: $cache/debootstrap.log" >&2
      rm -rf "$rootfs"
      exit 1
    fi
    tar -C "$rootfs" -cf "$tarball.partial" .
    rm -rf "$rootfs"
    mv "$tarball.partial" "$tarball"
  fi
  echo "importing $base_image..." >&2
  docker import "$tarball" "$base_image" >/dev/null
fi

echo "$started"
