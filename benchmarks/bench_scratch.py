"""Benchmark: what a temporary folder held by its run (`modelpack.scratch.folder`) costs against
the `tempfile.TemporaryDirectory` it replaced: make it, write one small file, remove it.

`scratch.folder` also sweeps: it lists the folder's parent (``$TMPDIR``, else ``/tmp``, as it
is on this machine: every entry, whatever its name) and tries the lock of each folder with the
same prefix. The run adds ``--held`` folders of live runs of this process beside it (each one a
lock tried at every sweep), so the figure covers a busy machine's concurrent builds as well.
``--entries N`` runs in a private parent holding N other entries (a busy ``/tmp``) instead, and
``--ownerless N`` puts N young folders without an owner file beside (an earlier modelpack's live
runs: each is looked at, never removed). ``--against FILE`` adds a second ``scratch.py`` (e.g.
``git show main:modelpack/scratch.py``), so one run gives before and after.

The variants run interleaved, round by round, in an order that alternates; each ratio is the
median over the rounds, with the lowest and highest round beside it as the noise.

Usage: .venv/bin/python benchmarks/bench_scratch.py [--rounds N] [--per-round N] [--held N]
       [--entries N] [--ownerless N] [--prefix P] [--against FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from types import ModuleType

from modelpack import scratch

PREFIX = "modelpack-bench-scratch-"
BASELINE = "tempfile.TemporaryDirectory"


def timed(make: Callable[[], AbstractContextManager[str]], count: int) -> float:
    """Seconds per folder: made, one file written, removed."""
    start = time.perf_counter()
    for _ in range(count):
        with make() as folder:
            (Path(folder) / "f").write_bytes(b"x")
    return (time.perf_counter() - start) / count


def load_against(path: Path) -> ModuleType:
    """Another version of `modelpack.scratch` (a leaf: the standard library only), loaded beside."""
    spec = importlib.util.spec_from_file_location("bench_scratch_against", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def populate(parent: Path, entries: int, ownerless: int, prefix: str) -> None:
    """``entries`` other entries (one in ten a folder) and ``ownerless`` young folders of ``prefix``
    without an owner file, each with a file inside."""
    for number in range(entries):
        if number % 10 == 0:
            (parent / f"other-{number}").mkdir()
        else:
            (parent / f"other-{number}").write_bytes(b"")
    for number in range(ownerless):
        (parent / f"{prefix}ownerless-{number}").mkdir()
        (parent / f"{prefix}ownerless-{number}" / "layer.tar").write_bytes(b"x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--per-round", type=int, default=300)
    parser.add_argument("--held", type=int, default=4)
    parser.add_argument("--entries", type=int, help="a private parent with this many other entries")
    parser.add_argument("--ownerless", type=int, default=0)
    parser.add_argument("--prefix", default=PREFIX)
    parser.add_argument("--against", type=Path, help="another scratch.py to time beside this one")
    options = parser.parse_args()
    with ExitStack() as stack:
        parent: str | None = None
        if options.entries is not None or options.ownerless:
            parent = stack.enter_context(tempfile.TemporaryDirectory(prefix=PREFIX + "parent-"))
            populate(Path(parent), options.entries or 0, options.ownerless, options.prefix)
        prefix = options.prefix
        variants: dict[str, Callable[[], AbstractContextManager[str]]] = {
            BASELINE: lambda: tempfile.TemporaryDirectory(prefix=prefix, dir=parent),
            "scratch.folder": lambda: scratch.folder(prefix, parent),
        }
        if options.against is not None:
            against = load_against(options.against)
            variants["against scratch.folder"] = lambda: against.folder(prefix, parent)
        times: dict[str, list[float]] = {name: [] for name in variants}
        entries = len(os.listdir(parent or tempfile.gettempdir()))
        for _ in range(options.held):
            stack.enter_context(scratch.folder(prefix, parent))
        for make in variants.values():
            timed(make, 20)  # warm-up
        for round_number in range(options.rounds):
            order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
            for name in order:
                times[name].append(timed(variants[name], options.per_round))
        print(
            f"{parent or tempfile.gettempdir()}: {entries} entries, {options.held} folders of live"
            f" runs and {options.ownerless} ownerless ones beside"
        )
    for name, values in times.items():
        print(f"{name:28} median {statistics.median(values) * 1e6:7.1f} us per folder")
    pairs = [("scratch.folder", BASELINE)]
    if options.against is not None:
        pairs += [("against scratch.folder", BASELINE), ("scratch.folder", "against scratch.folder")]
    for ours, base in pairs:
        ratios = sorted(o / b for o, b in zip(times[ours], times[base], strict=True))
        print(
            f"{ours} / {base}: {statistics.median(ratios):.2f}"
            f" (rounds {ratios[0]:.2f}-{ratios[-1]:.2f}, {options.rounds} rounds of {options.per_round})"
        )


if __name__ == "__main__":
    main()
