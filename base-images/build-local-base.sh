#!/usr/bin/env bash
# Build a CPU Python base without pulling any image: debootstrap a minimal
# Debian release whose python3 is the wanted version and `docker import` it.
# Debian bookworm has Python 3.11, trixie has 3.13. `modelpack base build` runs
# this script when no official python:X.Y-slim image can be pulled; the bases
# keep the same contract (python3 on PATH with venv and pip; nothing in /opt/venv).
#
# Usage: build-local-base.sh [TAG] [PYTHON_VERSION]   (run as root; dockerd must be running)
#   TAG defaults to modelpack-base/python:PYTHON_VERSION; PYTHON_VERSION to the
#   version in a modelpack-base/python:X.Y tag, else 3.11.
# Environment: MODELPACK_DEBOOTSTRAP_MIRROR (default http://deb.debian.org/debian)
#              MODELPACK_REBUILD_BASE=1  rebuild even if TAG already exists
set -euo pipefail

TAG="${1:-modelpack-base/python:${2:-3.11}}"
PYTHON_VERSION="${2:-}"
if [[ -z "$PYTHON_VERSION" ]]; then
  case "$TAG" in
    *python:*) PYTHON_VERSION="${TAG##*python:}" ;;
    *) PYTHON_VERSION="3.11" ;;
  esac
fi
case "$PYTHON_VERSION" in
  3.11) SUITE="bookworm" ;;
  3.13) SUITE="trixie" ;;
  *) echo "build-local-base: no Debian release ships Python $PYTHON_VERSION as python3 (bookworm: 3.11, trixie: 3.13)" >&2
     exit 1 ;;
esac
MIRROR="${MODELPACK_DEBOOTSTRAP_MIRROR:-http://deb.debian.org/debian}"

die() {
  echo "build-local-base: $*" >&2
  exit 1
}

command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
command -v docker >/dev/null 2>&1 || die "docker is not installed (apt-get install docker.io)"
[[ "$(id -u)" == 0 ]] || die "must run as root (debootstrap and chroot need it)"
docker info >/dev/null 2>&1 || die "cannot reach the Docker engine; start dockerd first"

case "$TAG" in
  *python:*) [[ "${TAG##*python:}" == "$PYTHON_VERSION" ]] \
    || die "$TAG names Python ${TAG##*python:}, but Debian $SUITE has Python $PYTHON_VERSION" ;;
esac

if [[ "${MODELPACK_REBUILD_BASE:-0}" != 1 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "build-local-base: $TAG already exists; nothing to do"
  exit 0
fi

ROOTFS="$(mktemp -d "${TMPDIR:-/tmp}/modelpack-rootfs.XXXXXX")"
cleanup() {
  local mount
  for mount in dev/pts proc sys; do  # left behind if debootstrap failed midway
    if mountpoint -q "$ROOTFS/$mount"; then umount -l "$ROOTFS/$mount" || true; fi
  done
  rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

echo "build-local-base: debootstrap $SUITE into $ROOTFS"
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
  "$SUITE" "$ROOTFS" "$MIRROR"

# The contract: python3 is Python $PYTHON_VERSION with working venv and pip.
chroot "$ROOTFS" /usr/bin/python3 -c \
  "import sys, venv, ensurepip; assert '%d.%d' % sys.version_info[:2] == '$PYTHON_VERSION', sys.version"

# Nothing host-specific in the layer: apt caches, the build host's DNS and name.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log
: >"$ROOTFS/etc/resolv.conf"
echo localhost >"$ROOTFS/etc/hostname"

echo "build-local-base: importing as $TAG"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PYTHONUNBUFFERED=1' \
  --change "LABEL org.modelpack.base.name=modelpack-base/python:$PYTHON_VERSION" \
  --change "LABEL org.modelpack.base.python=$PYTHON_VERSION" \
  --change 'CMD ["python3"]' \
  --message "modelpack local base (debootstrap $SUITE minbase)" \
  - "$TAG" >/dev/null

docker image inspect "$TAG" >/dev/null || die "docker import did not produce $TAG"
echo "build-local-base: built $TAG"
