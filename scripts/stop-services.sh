#!/usr/bin/env bash
# Stop the dockerd and registry that scripts/setup.sh started (by their recorded pids).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${MODELPACK_WORK:-$REPO/.work}"
for name in registry dockerd; do
  pidfile="$WORK/$name.pid"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "[stop] stopping $name (pid $(cat "$pidfile"))"
    kill "$(cat "$pidfile")"
  fi
  rm -f "$pidfile"
done
