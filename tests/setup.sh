#!/usr/bin/env bash
# Install the servers and load generator the integration tests start on
# loopback: the OCI registry (Debian's docker-registry, CNCF distribution
# 2.8) and wrk. Idempotent: installs only what is missing. Debian, as root
# (or with sudo).
#
#   tests/setup.sh
set -euo pipefail

say() { echo "tests/setup.sh: $*"; }

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null || { say "run as root (or install sudo)"; exit 1; }
  SUDO=(sudo)
fi

missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v wrk >/dev/null || missing+=(wrk)
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  "${SUDO[@]}" apt-get update
  # policy-rc.d keeps the package's service from starting: the tests start
  # their own registries on free ports.
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
    apt-get install -y --no-install-recommends "${missing[@]}"
else
  say "already installed: docker-registry, wrk"
fi
docker-registry --version
