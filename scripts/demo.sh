#!/usr/bin/env bash
# The main job on the bundled example: validate -> signature -> resolve -> render ->
# build -> push to 127.0.0.1:5000/examples/hello -> print the version.
# Every step must succeed; the first failure stops the demo with its name.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MODELPACK_VENV:-$REPO/.venv}"
EXAMPLE="${MODELPACK_EXAMPLE:-$REPO/examples/hello}"
IMAGE_REPO="${MODELPACK_DEMO_REPO:-127.0.0.1:5000/examples/hello}"
OUT="$(mktemp -d /tmp/modelpack-demo.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

STEP="setup"
trap 'echo "[demo] FAILED at step: $STEP" >&2' ERR

bash "$REPO/scripts/setup.sh"
MP="$VENV/bin/modelpack"
[[ -d "$EXAMPLE" ]] || { echo "[demo] no example at $EXAMPLE" >&2; exit 1; }

step() { STEP="$1"; printf '\n[demo] == %s\n' "$1"; }

step validate;  "$MP" validate "$EXAMPLE"
step signature; "$MP" signature "$EXAMPLE"
step resolve;   "$MP" resolve "$EXAMPLE"
step render;    "$MP" render "$EXAMPLE" --output "$OUT/context"
step build+push
"$MP" build "$EXAMPLE" --tag "$IMAGE_REPO" --push --json >"$OUT/build.json"
VERSION="$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$OUT/build.json")"
DIGEST="$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["digest"])' "$OUT/build.json")"
step versions;  "$MP" versions "$IMAGE_REPO"
step inspect;   "$MP" inspect "$IMAGE_REPO:$VERSION"

printf '\n[demo] %s:%s (%s)\n' "$IMAGE_REPO" "$VERSION" "$DIGEST"
