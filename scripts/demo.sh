#!/usr/bin/env bash
# The main job on the bundled example, end to end:
#   set-up -> validate -> signature -> resolve -> render -> keygen (throwaway key) ->
#   build --push --sign -> versions -> inspect -> verify (+ --deep) ->
#   docker run --network host -> call every method with the client -> stop.
# Every step must succeed; the first failure stops the demo with its name. Temporary files
# (including the throwaway key) and the container are removed on exit, whatever happens.
#
# Knobs: MODELPACK_VENV (default <repo>/.venv), MODELPACK_EXAMPLE (default examples/hello),
# MODELPACK_DEMO_REPO (default 127.0.0.1:5000/examples/hello),
# MODELPACK_DEMO_SKIP_SETUP=1 to skip scripts/setup.sh when the services already run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MODELPACK_VENV:-$REPO/.venv}"
EXAMPLE="${MODELPACK_EXAMPLE:-$REPO/examples/hello}"
IMAGE_REPO="${MODELPACK_DEMO_REPO:-127.0.0.1:5000/examples/hello}"
OUT="$(mktemp -d /tmp/modelpack-demo.XXXXXX)"
CONTAINER=""
STEP="setup"
TIMES=()
T0=$(date +%s.%N)
T_STEP=$T0

cleanup() {
  if [[ -n "$CONTAINER" ]]; then docker rm -f "$CONTAINER" >/dev/null 2>&1 || true; fi
  rm -rf "$OUT"
}
trap cleanup EXIT
trap 'echo "[demo] FAILED at step: $STEP" >&2' ERR

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
record() {  # the time the current step took
  local now
  now=$(date +%s.%N)
  TIMES+=("$(printf '%-16s %6ss' "$STEP" "$(elapsed "$T_STEP" "$now")")")
  T_STEP=$now
}
step() {
  record
  STEP="$1"
  printf '\n[demo] == %s\n' "$1"
}
json_field() { "$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

if [[ "${MODELPACK_DEMO_SKIP_SETUP:-}" != "1" ]]; then
  bash "$REPO/scripts/setup.sh"
fi
MP="$VENV/bin/modelpack"
[[ -d "$EXAMPLE" ]] || { echo "[demo] no example at $EXAMPLE" >&2; exit 1; }

step validate;  "$MP" validate "$EXAMPLE"
step signature; "$MP" signature "$EXAMPLE"
step resolve;   "$MP" resolve "$EXAMPLE"
step render;    "$MP" render "$EXAMPLE" --output "$OUT/context"

step keygen
# A throwaway key pair for this run; its password lives only in this process's environment.
MODELPACK_KEY_PASSWORD="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')"
export MODELPACK_KEY_PASSWORD
"$MP" keygen --output "$OUT/keys/demo" >/dev/null
echo "key pair: $OUT/keys/demo.key (encrypted), $OUT/keys/demo.pub"

step build+push+sign
"$MP" build "$EXAMPLE" --tag "$IMAGE_REPO" --push --sign --key "$OUT/keys/demo.key" --json >"$OUT/build.json"
VERSION="$(json_field "$OUT/build.json" version)"
DIGEST="$(json_field "$OUT/build.json" digest)"
echo "built $IMAGE_REPO:$VERSION ($DIGEST)"

step versions;  "$MP" versions "$IMAGE_REPO"
step inspect;   "$MP" inspect "$IMAGE_REPO:$VERSION"
step verify;    "$MP" verify "$IMAGE_REPO:$VERSION" --key "$OUT/keys/demo.pub"
step verify-deep; "$MP" verify "$IMAGE_REPO:$VERSION" --key "$OUT/keys/demo.pub" --deep

step run
PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# run exactly the digest that was just verified
CONTAINER="$(docker run --rm -d --network host -e PORT="$PORT" "$IMAGE_REPO@$DIGEST")"
URL="http://127.0.0.1:$PORT"
for _ in $(seq 1 300); do
  curl -fsS "$URL/ready" >/dev/null 2>&1 && break
  docker inspect "$CONTAINER" >/dev/null 2>&1 || { echo "[demo] the container exited" >&2; false; }
  sleep 0.2
done
curl -fsS "$URL/ready" >/dev/null || { docker logs "$CONTAINER" >&2; false; }
echo "serving on $URL (container ${CONTAINER:0:12})"

step call
"$VENV/bin/python" - "$URL" <<'PY'
import sys

from modelpack.runtime.client import Model

with Model(sys.argv[1], timeout=60) as model:
    for line in (model.method_signature(name) for name in model.available_methods()):
        print("  " + line.splitlines()[0])
    print("predict  ->", model.predict(name="demo"))
    print("generate ->", list(model.generate(text="build push sign run", repeat=1)))
    print("echo     ->", list(model.echo(chunks=iter(["stream", "in", "stream", "out"]))))
    print("batch    ->", model.predict([{"name": "a"}, {"name": "b"}]))
PY

step stop
docker stop --time 30 "$CONTAINER" >/dev/null
CONTAINER=""
record

printf '\n[demo] summary\n'
printf '  image:    %s:%s\n' "$IMAGE_REPO" "$VERSION"
printf '  digest:   %s\n' "$DIGEST"
printf '  manifest: %s (signed)\n' "$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["supply_chain"]["manifest_digest"])' "$OUT/build.json")"
printf '  timings:\n'
for line in "${TIMES[@]}"; do printf '    %s\n' "$line"; done
printf '    %-16s %6ss\n' total "$(elapsed "$T0" "$(date +%s.%N)")"
