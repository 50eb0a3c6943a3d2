#!/usr/bin/env bash
# Install the cosign binary from Debian trixie without touching the system's apt setup.
#
# cosign is a static Go binary, so trixie's package runs on bookworm once unpacked.
# We point apt at a private sources list / state dir under a temp directory, fetch
# only the cosign .deb with `apt-get download`, unpack it with `dpkg-deb -x` into
# DEST (default: <repo>/.work/cosign) and print the binary's path on stdout.
# Nothing is installed or upgraded system-wide.
#
# Usage: scripts/install-cosign.sh [DEST]
#   MODELPACK_DEBIAN_MIRROR overrides the mirror (default http://deb.debian.org/debian).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo_root/.work/cosign}"
mirror="${MODELPACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ -x "$dest/usr/bin/cosign" ] && "$dest/usr/bin/cosign" version >/dev/null 2>&1; then
  echo "$dest/usr/bin/cosign"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/sources.list.d" "$tmp/download"
cat >"$tmp/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main
SRC

apt_opts=(
  -o "Dir::Etc::sourcelist=$tmp/sources.list"
  -o "Dir::Etc::sourceparts=$tmp/sources.list.d"
  -o "Dir::State::Lists=$tmp/lists"
  -o "Dir::Cache=$tmp/cache"
  -o "APT::Get::List-Cleanup=0"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)

apt-get "${apt_opts[@]}" -qq update >&2
(cd "$tmp/download" && apt-get "${apt_opts[@]}" -qq download cosign >&2)

deb="$(ls "$tmp"/download/cosign_*.deb | head -n 1)"
mkdir -p "$dest"
dpkg-deb -x "$deb" "$dest"
"$dest/usr/bin/cosign" version >/dev/null 2>&1 || {
  echo "cosign was unpacked to $dest but does not run" >&2
  exit 1
}
echo "$dest/usr/bin/cosign"
