#!/usr/bin/env bash
# Installs what the full `titorrent-bench` run needs on Debian, as root:
# the references (btfs for P2, opentracker and wrk for P8, bindfs for P11
# and P12), the FUSE tooling every mount needs, and ip/tc/nsenter for P7's
# network namespaces (iproute2, util-linux). The smoke run
# (`titorrent-bench --smoke`, what CI runs) needs fuse3 and bindfs, which
# .ci/run installs.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-deps.sh: run as root (apt-get install)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Other sessions on the machine may hold the dpkg lock for a while.
apt-get -o DPkg::Lock::Timeout=900 update -q
apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends \
    fuse3 btfs bindfs opentracker wrk iproute2 util-linux procps findutils coreutils
