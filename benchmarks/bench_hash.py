"""Checkpoint hashing: modelpack's sha256 vs `sha256sum` on the same files.

Generates --size-mib of files under /tmp (default 1 GiB in 8 files), reads them once
so both sides hash from the page cache, then times each side (best of --repeat) and
prints the throughput ratio. Target: modelpack single-threaded >= 90% of sha256sum.
The files are deleted afterwards.

    .venv/bin/python benchmarks/bench_hash.py [--size-mib 1024] [--files 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from modelpack.digests import sha256_file, sha256_files


def best_of(repeat: int, run: Callable[[], object]) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("sha256sum") is None:
        print("sha256sum not found", file=sys.stderr)
        return 1

    workdir = Path(tempfile.mkdtemp(prefix="modelpack-bench-hash-", dir="/tmp"))
    try:
        per_file = args.size_mib * (1 << 20) // args.files
        block = os.urandom(1 << 20)
        paths = []
        for i in range(args.files):
            path = workdir / f"model-{i:05d}.safetensors"
            with open(path, "wb") as f:
                for _ in range(per_file // len(block)):
                    f.write(block)
                f.write(block[: per_file % len(block)])
            paths.append(path)
        total = per_file * args.files
        for path in paths:  # warm the page cache for both contenders
            with open(path, "rb") as reader:
                while reader.read(1 << 24):
                    pass

        def run_sha256sum() -> list[str]:
            out = subprocess.run(
                ["sha256sum", *map(str, paths)], check=True, capture_output=True, text=True
            ).stdout
            return [line.split()[0] for line in out.splitlines()]

        t_ref, ref = best_of(args.repeat, run_sha256sum)
        t_one, one = best_of(args.repeat, lambda: [sha256_file(p) for p in paths])
        t_par, par = best_of(args.repeat, lambda: sha256_files(paths))
        if not (ref == one == par):
            print("digest mismatch between sha256sum and modelpack", file=sys.stderr)
            return 1

        mib = total / (1 << 20)
        print(f"data: {mib:.0f} MiB in {len(paths)} files, best of {args.repeat}")
        print(f"sha256sum               : {mib / t_ref:8.1f} MiB/s")
        print(f"modelpack (1 thread)    : {mib / t_one:8.1f} MiB/s  ratio {t_ref / t_one:.2f}")
        print(f"modelpack (sha256_files): {mib / t_par:8.1f} MiB/s  ratio {t_ref / t_par:.2f}")
        print(f"target: single-thread ratio >= 0.90 -> {'met' if t_ref / t_one >= 0.9 else 'NOT met'}")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
