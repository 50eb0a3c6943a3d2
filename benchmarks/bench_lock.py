"""Benchmark: `modelpack lock` after one requirement is added to requirements.txt.

examples/hello plus numpy, scipy and pandas (bench_build's requirements) is locked once; each
round then appends `toolz==1.0.0` to a fresh copy of that directory and its lock and times
`modelpack lock DIR` as a process, three ways:

  * added: the re-lock as it runs now (only the added line resolved, against the existing pins);
  * kept pins: the whole input resolved, preferring the existing pins (what a lock without
    recorded input lines, or any change other than an addition, takes);
  * fresh: `modelpack lock --force`, the whole input resolved without preferences: what every
    re-lock did before locks kept their pins. The baseline.

The package index is asked each time (uv revalidates its cache: PyPI's proxy here sends no cache
headers). The variants run in an order that rotates round by round; the ratios are medians over
the rounds against the fresh resolve, with the lowest and highest round beside them as the noise.
Also checks that the three locks pin the same packages.

Needs the package index (PyPI, or UV_INDEX_URL / PIP_INDEX_URL). Usage:
    .venv/bin/python benchmarks/bench_lock.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello"
HEAVY_REQUIREMENTS = "numpy==2.2.6\nscipy==1.15.3\npandas==2.2.3\n"
ADDED_REQUIREMENT = "toolz==1.0.0\n"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
VARIANTS = ("added", "kept pins", "fresh")


def modelpack_lock(model: Path, *extra: str) -> float:
    env = dict(os.environ)
    if "SSL_CERT_FILE" not in env and Path(CA_BUNDLE).is_file():
        env["SSL_CERT_FILE"] = CA_BUNDLE
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "modelpack", "lock", str(model), "-q", *extra],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"modelpack lock failed: {done.stderr.strip()[-2000:]}")
    return elapsed


def pins(model: Path) -> list[str]:
    text = (model / "requirements.lock").read_text(encoding="utf-8")
    return sorted(line.rstrip(" \\") for line in text.splitlines() if line and line[0] not in "# ")


def prepare(base: Path, target: Path, variant: str) -> None:
    """A copy of the locked base with one requirement added; `kept pins` loses the recorded
    input lines, so the re-lock resolves the whole input from the existing pins."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(base, target)
    with (target / "requirements.txt").open("a", encoding="utf-8") as handle:
        handle.write(ADDED_REQUIREMENT)
    if variant == "kept pins":
        lock = target / "requirements.lock"
        text = lock.read_text(encoding="utf-8")
        lock.write_text("".join(line for line in text.splitlines(True) if not line.startswith("# input-")))


def locked_base(tmp: str) -> Path:
    """examples/hello plus the heavy requirements, locked once (not timed)."""
    base = Path(tmp) / "base"
    shutil.copytree(EXAMPLE, base, ignore=shutil.ignore_patterns("__pycache__", "requirements.lock"))
    with (base / "requirements.txt").open("a", encoding="utf-8") as handle:
        handle.write(HEAVY_REQUIREMENTS)
    print(f"first lock (not timed): {modelpack_lock(base):.2f} s")
    return base


def timed_rounds(
    tmp: str,
    variants: tuple[str, ...],
    rounds: int,
    run: Callable[[Path, str], float],
    baseline: str,
) -> None:
    """`run(copy, variant)` for each variant in each round (their order rotating round by round),
    then the pins of the last round's locks compared and each variant's times and ratios against
    `baseline` printed (median over the rounds, the lowest and highest beside it as the noise)."""
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    results: dict[str, list[str]] = {}
    for round_number in range(rounds):
        shift = round_number % len(variants)
        line = []
        for variant in variants[shift:] + variants[:shift]:
            model = Path(tmp) / variant.replace(" ", "-")
            times[variant].append(run(model, variant))
            results[variant] = pins(model)
            line.append(f"{variant} {times[variant][-1]:.2f} s")
        print(f"round {round_number + 1}: " + ", ".join(line))
    same = all(results[variant] == results[baseline] for variant in variants)
    print(f"same pins in all {len(variants)} locks: {'yes' if same else 'NO'}")
    for variant in variants:
        seconds = times[variant]
        ratios = [mine / base for mine, base in zip(seconds, times[baseline], strict=True)]
        print(
            f"{variant:>12}: median {statistics.median(seconds):.2f} s "
            f"(range {min(seconds):.2f}-{max(seconds):.2f}); / {baseline}: median "
            f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelpack-bench-lock-") as tmp:
        base = locked_base(tmp)

        def run(model: Path, variant: str) -> float:
            prepare(base, model, variant)
            return modelpack_lock(model, *(["--force"] if variant == "fresh" else []))

        timed_rounds(tmp, VARIANTS, args.rounds, run, "fresh")


if __name__ == "__main__":
    main()
