#!/usr/bin/env bash
# Full check: set-up, lint, types, then every test (unit + e2e) against the INSTALLED
# wheel. Extra arguments go to pytest, e.g. `scripts/test.sh -k build -x`.
# All three checks always run; the exit status is non-zero if any failed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MODELPACK_VENV:-$REPO/.venv}"
cd "$REPO"

bash scripts/setup.sh

say() { printf '[test] %s\n' "$*"; }
failed=()

say "ruff check"
"$VENV/bin/ruff" check modelpack tests benchmarks || failed+=("ruff")
say "mypy"
"$VENV/bin/mypy" modelpack || failed+=("mypy")
# the tests and benchmarks as pytest imports them: the helpers beside the tests by name (tests/ on
# MYPYPATH, as pytest's pythonpath), fakes.py as tests.unit.fakes (through the tests that import
# it), and tests/e2e apart (its conftest.py and some test files share names with others)
MYPYPATH=tests "$VENV/bin/mypy" tests/unit tests/*.py benchmarks \
  --exclude '/(data|test_runtime_models)/|/fakes\.py$' || failed+=("mypy tests benchmarks")
MYPYPATH=tests "$VENV/bin/mypy" tests/e2e --exclude '/models/' || failed+=("mypy tests/e2e")
# bundled examples are what users copy: their model code must type-check too (one at a time:
# every example's module is named model)
for example in examples/*/1/model.py; do
  "$VENV/bin/mypy" --follow-imports=silent "$example" || failed+=("mypy $example")
done

# Services were just started, so a missing one is a failure, not a skip.
export CI="${CI:-true}"
# tests/conftest.py fails the session if modelpack is imported from the source tree.
export MODELPACK_REQUIRE_INSTALLED=1
say "pytest against $("$VENV/bin/python" -I -c 'import modelpack, os; print(os.path.dirname(modelpack.__file__))')"
# The pytest entry point (not `python -m pytest`) keeps the repo root off sys.path,
# and --import-mode=importlib (pyproject addopts) does not insert test dirs either.
set +e
"$VENV/bin/pytest" -p no:cacheprovider tests "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  say "pytest collected no tests"
  failed+=("pytest (no tests)")
elif [[ $status -ne 0 ]]; then
  failed+=("pytest")
fi

if ((${#failed[@]})); then
  say "FAILED: ${failed[*]}"
  exit 1
fi
say "all checks passed"
