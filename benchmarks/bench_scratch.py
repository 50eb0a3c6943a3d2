"""Benchmark: what a temporary folder held by its run (`modelpack.scratch.folder`) costs against
the `tempfile.TemporaryDirectory` it replaced: make it, write one small file, remove it.

`scratch.folder` also sweeps: it lists the folder's parent (``$TMPDIR``, else ``/tmp``, as it
is on this machine: every entry, whatever its name) and tries the lock of each folder with the
same prefix. The run adds ``--held`` folders of live runs of this process beside it (each one a
lock tried at every sweep), so the figure covers a busy machine's concurrent builds as well.

The two run interleaved, round by round, in an order that alternates; the ratio is the median
over the rounds, with the lowest and highest round beside it as the noise.

Usage: .venv/bin/python benchmarks/bench_scratch.py [--rounds N] [--per-round N] [--held N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

from modelpack import scratch

PREFIX = "modelpack-bench-scratch-"


def timed(make: Callable[[], AbstractContextManager[str]], count: int) -> float:
    """Seconds per folder: made, one file written, removed."""
    start = time.perf_counter()
    for _ in range(count):
        with make() as folder:
            (Path(folder) / "f").write_bytes(b"x")
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--per-round", type=int, default=300)
    parser.add_argument("--held", type=int, default=4)
    options = parser.parse_args()
    variants: dict[str, Callable[[], AbstractContextManager[str]]] = {
        "tempfile.TemporaryDirectory": lambda: tempfile.TemporaryDirectory(prefix=PREFIX),
        "scratch.folder": lambda: scratch.folder(PREFIX),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    entries = len(os.listdir(tempfile.gettempdir()))
    with ExitStack() as held:
        for _ in range(options.held):
            held.enter_context(scratch.folder(PREFIX))
        for make in variants.values():
            timed(make, 20)  # warm-up
        for round_number in range(options.rounds):
            order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
            for name in order:
                times[name].append(timed(variants[name], options.per_round))
    base, ours = times["tempfile.TemporaryDirectory"], times["scratch.folder"]
    ratios = sorted(o / b for o, b in zip(ours, base, strict=True))
    print(f"{tempfile.gettempdir()}: {entries} entries, {options.held} folders of live runs beside")
    for name, values in times.items():
        print(f"{name:28} median {statistics.median(values) * 1e6:7.1f} us per folder")
    print(
        f"scratch.folder / TemporaryDirectory: {statistics.median(ratios):.2f}"
        f" (rounds {ratios[0]:.2f}-{ratios[-1]:.2f}, {options.rounds} rounds of {options.per_round})"
    )


if __name__ == "__main__":
    main()
