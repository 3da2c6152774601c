#!/usr/bin/env bash
# Install Debian packages, one apt at a time on this machine:
#   bash .ci/apt.sh postgresql [more packages...]
# Two test runs started at once would otherwise both take dpkg's lock and one would fail. Needs root.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "installing $* needs root (apt-get); run as root or install them first" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
exec 9>"${TMPDIR:-/tmp}/llm-orchestrator-apt.lock"
flock 9
missing=()
for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
[ "${#missing[@]}" -eq 0 ] && exit 0  # installed by the run that held the lock
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
