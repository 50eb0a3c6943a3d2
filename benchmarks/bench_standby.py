"""Benchmark the hand-over to a standby process: the `modelpack` executable's own imports against
`python -c pass` (the floor any Python program pays), and short commands through a standby
process against the same commands in a process of their own.

The side measured is the source tree this script belongs to; `--against-source DIR` adds a second
source tree (e.g. `git -C REPO archive main | tar -x -C DIR`) run by the same interpreter, so one
run gives before and after. Each side's tree goes first on PYTHONPATH and each side starts its
own standby process in a private runtime folder (stopped at the end). Every round runs every
case of every side once, in an order that alternates between rounds, so a busy machine
disturbs both sides alike. Prints medians and min-max (the noise) of the wall time of each
case, the ratio to its baseline, and this/against per case.

Cases:
  imports      `from modelpack.__main__ import run`, what the executable (bin/modelpack) runs
               before `run()` (baseline: `python -c pass`; `import re, sys`, what an installer's
               console-script wrapper would add, is measured too)
  version      `modelpack --version` through the standby (baseline: MODELPACK_STANDBY=off)
  validate     `modelpack validate examples/hello` through the standby (baseline: alone)

Usage:
    python benchmarks/bench_standby.py [--against-source DIR] [--rounds 25]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
CASES = ("imports", "version", "validate")


@dataclass
class Side:
    name: str
    source: Path
    runtime: Path
    env: dict[str, str] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # PYTHONDONTWRITEBYTECODE goes: the compiled files are written, as a wheel's install has them
        dropped = ("MODELPACK_STANDBY", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
        self.env = {k: v for k, v in os.environ.items() if k not in dropped}
        self.env["PYTHONPATH"] = str(self.source)
        self.env["XDG_RUNTIME_DIR"] = str(self.runtime)


def executable() -> list[str]:
    """The installed `modelpack` executable beside this Python, else `python -m modelpack`."""
    script = Path(sys.executable).parent / "modelpack"
    return [sys.executable, str(script)] if script.is_file() else [sys.executable, "-m", "modelpack"]


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/")
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def commands(side: Side, model: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each timed command: (argv, environment), a case's baseline under `<case>-base`."""
    alone = {**side.env, "MODELPACK_STANDBY": "off"}
    program = executable()
    return {
        "imports": ([sys.executable, "-c", "from modelpack.__main__ import run"], side.env),
        "imports-base": ([sys.executable, "-c", "pass"], side.env),
        "imports-script": ([sys.executable, "-c", "import re, sys"], side.env),  # a console-script wrapper's
        "version": ([*program, "--version"], side.env),
        "version-base": ([*program, "--version"], alone),
        "validate": ([*program, "validate", str(model)], side.env),
        "validate-base": ([*program, "validate", str(model)], alone),
    }


def standby(side: Side, action: str) -> dict[str, object]:
    done = subprocess.run(
        [*executable(), "standby", action, "--json"], env=side.env, capture_output=True, text=True, cwd="/"
    )
    if done.returncode:
        sys.exit(f"{side.name}: standby {action} failed:\n{done.stderr[-2000:]}")
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def spread(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f} ms ({min(values) * 1000:.1f}-{max(values) * 1000:.1f})"


def report(sides: list[Side]) -> None:
    for side in sides:
        print(f"\n{side.name} ({side.source})")
        for case in CASES:
            own, base = side.times[case], side.times[f"{case}-base"]
            ratios = [a / b for a, b in zip(own, base, strict=True)]
            label = "python -c pass" if case == "imports" else "alone"
            print(
                f"  {case:9} {spread(own)}   {label:14} {spread(base)}   "
                f"ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
            )
        floor, script = (statistics.median(side.times[f"imports-{n}"]) for n in ("base", "script"))
        extra = statistics.median(side.times["imports"]) - floor
        print(
            f"  imports over the floor: {extra * 1000:.1f} ms; a console-script wrapper's `import re` "
            f"would add {(script - floor) * 1000:.1f} ms ({spread(side.times['imports-script']).strip()})"
        )
    if len(sides) == 2:
        this, other = sides
        print(f"\n{this.name}/{other.name} per round (median, min-max)")
        for case in CASES:
            ratios = [a / b for a, b in zip(this.times[case], other.times[case], strict=True)]
            print(f"  {case:9} {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--against-source", help="another source tree, run by this interpreter")
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mp-bench-", dir="/tmp"))  # a socket's path is short
    sides = [Side("this", HERE, folder / "a")]
    if args.against_source:
        sides.append(Side("against", Path(args.against_source).resolve(), folder / "b"))
    model = HERE / "examples" / "hello"
    try:
        for side in sides:
            side.runtime.mkdir(mode=0o700)
            standby(side, "start")
        plan = [(side, name) for side in sides for name in commands(side, model)]
        for side, name in plan:  # one untimed pass: caches, compiled files
            timed(*commands(side, model)[name])
        for number in range(args.rounds):
            order = plan if number % 2 == 0 else plan[::-1]
            for side, name in order:
                side.times.setdefault(name, []).append(timed(*commands(side, model)[name]))
        for side in sides:
            if int(str(standby(side, "status").get("served", 0))) < args.rounds * 2:
                sys.exit(f"{side.name}: the standby process served fewer commands than were sent to it")
        print(f"{args.rounds} rounds, alternating order; wall time of each process (subprocess.run)")
        report(sides)
    finally:
        for side in sides:
            subprocess.run([*executable(), "standby", "stop"], env=side.env, capture_output=True, cwd="/")
        time.sleep(0.5)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
