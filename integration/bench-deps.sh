#!/usr/bin/env bash
# Installs what `titorrent-bench` (the full run) needs on Debian, as root:
# the reference programs (btfs, opentracker, wrk), the FUSE tooling the
# mounts need, and iproute2 (ip netns, tc tbf) for the P7 namespaces.
# The smoke run (`titorrent-bench --smoke`) needs only fuse3.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-deps.sh: run as root (apt-get install)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=900 update -q
apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends \
    fuse3 btfs opentracker wrk fio iproute2 procps findutils coreutils
