"""Benchmark the walks that note the package's file states, which run on every build and before
every command handed to a standby: the standby key, the installation digest answered from a
process's memo, and the runtime library's check of the states it noted.

The side measured is the source tree this script belongs to; `--against-source DIR` adds a second
source tree (e.g. `git -C REPO archive main | tar -x -C DIR`) run by the same interpreter, so one
run gives before and after. Each round runs each side once, in its own process (its tree first
on PYTHONPATH), in an order that alternates between rounds, so a busy machine disturbs both sides
alike; a process times `--calls` calls of each case after one warm-up call. Prints the median and
min-max (the noise) over the rounds of each case's time per call, and this/against.

Cases:
  standby-key    `standby.place.installation_key()` (baseline: `os.scandir` of the same folders
                 and a `stat` of each module, the least such a key can cost)
  installation   `image.build_records.installation_id()`, answered from the process's memo
  library        `pipeline.runtime_library.runtime_library()`, answered from the process's memo

Usage:
    python benchmarks/bench_walks.py [--against-source DIR] [--rounds 15] [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
CASES = ("floor", "standby-key", "installation", "library")
# Run in each side's process: per-call microseconds of each case, as JSON.
CHILD = """
import json, os, sys, time
from modelpack.image import build_records
from modelpack.pipeline import runtime_library
from modelpack.standby import place

def floor():
    pending = [place._PACKAGE]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in ("__pycache__", "_data"):
                        pending.append(entry.path)
                elif entry.name.endswith(".py"):
                    entry.stat()

cases = {
    "floor": floor,
    "standby-key": place.installation_key,
    "installation": build_records.installation_id,
    "library": runtime_library.runtime_library,
}
calls = int(sys.argv[1])
times = {}
for name, case in cases.items():
    case()
    started = time.perf_counter()
    for _ in range(calls):
        case()
    times[name] = (time.perf_counter() - started) / calls * 1e6
assert build_records._INSTALLATION and runtime_library._READ, "a memo was not kept: the files are too new"
print(json.dumps(times))
"""


def run_side(tree: Path, calls: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "MODELPACK_STANDBY": "off"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(calls)], env=env, capture_output=True, text=True, cwd=tree
    )
    if done.returncode != 0:
        sys.exit(f"{tree}: {done.stderr.strip().splitlines()[-1]}")
    return dict(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against-source", type=Path, help="a second source tree to compare with")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    sides = {"this": HERE}
    if args.against_source is not None:
        sides["against"] = args.against_source.resolve()
    results: dict[str, dict[str, list[float]]] = {side: {case: [] for case in CASES} for side in sides}
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for side in order:
            for case, micros in run_side(sides[side], args.calls).items():
                results[side][case].append(micros)
    print(f"{args.rounds} rounds of {args.calls} calls; time per call, median (min-max) in microseconds")
    for case in CASES:
        line = f"{case:13s}"
        for side in sides:
            values = results[side][case]
            line += f"  {side} {statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"
            if case == "standby-key":
                ratio = statistics.median(values) / statistics.median(results[side]["floor"])
                line += f" {ratio:.2f}x floor"
        if "against" in sides:
            this, against = (statistics.median(results[side][case]) for side in ("this", "against"))
            line += f"  this/against {this / against:.3f}"
        print(line)


if __name__ == "__main__":
    main()
