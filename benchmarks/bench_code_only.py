"""Benchmark the fixed cost of a code-only `modelpack build --push`: this interpreter's modelpack
against another installation's (`--against PYTHON`, e.g. a virtualenv of an older checkout).

A code-only change is the common CI build: the runtime stage is unchanged, so what is left is
the process itself (Python start, imports, config load) and a few dozen engine and registry
requests. Both sides build one copy of examples/hello; each build follows a one-line change to
1/model.py, so each pushes a new code layer and version. The first build of each side (the
runtime stage, the caches) is not counted. Rounds alternate which side goes first. Prints
seconds per build, the median of each side, the ratio this/against per round, its median, and
the spread between rounds as the machine's noise. `python -X importtime` of a build is the
place to look at imports alone.

The engine keeps the images the builds load; they are removed at the end (the registry keeps
the small `modelpack-bench/` repository, unreferenced once its tags go).

Needs the services of scripts/setup.sh. Usage:
    python benchmarks/bench_code_only.py --against /path/to/other/venv/bin/python
        [--registry 127.0.0.1:5000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from modelpack.resources import data_dir


def build(python: str, model: Path, repo: str) -> tuple[float, float]:
    """Seconds of one code-only build + push by `python -m modelpack` (a fresh process): wall
    clock, and the CPU time of the process (user + system), which a busy machine disturbs less."""
    model_py = model / "1" / "model.py"
    model_py.write_text(model_py.read_text() + f"# change {uuid.uuid4().hex[:8]}\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [python, "-m", "modelpack", "build", str(model), "--tag", repo, "--push", "--quiet"],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"{python}: modelpack build failed:\n{done.stderr[-3000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def remove_local_images(repo: str) -> None:
    listed = subprocess.run(
        ["docker", "image", "ls", repo, "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
    )
    references = listed.stdout.split()
    if references:
        subprocess.run(["docker", "image", "rm", *references], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--against", required=True, help="the Python of the other installation")
    parser.add_argument("--registry", default="127.0.0.1:5000")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    sides = {"this": sys.executable, "against": args.against}
    with tempfile.TemporaryDirectory(prefix="modelpack-bench-") as work:
        model = Path(work) / "hello"
        shutil.copytree(str(data_dir("examples").joinpath("hello")), model)
        repo = f"{args.registry}/modelpack-bench/code-only-{uuid.uuid4().hex[:8]}"
        try:
            for python in sides.values():  # the runtime stage and the caches, not counted
                build(python, model, repo)
            times: dict[str, list[float]] = {name: [] for name in sides}
            cpu: dict[str, list[float]] = {name: [] for name in sides}
            ratios: list[float] = []
            for round_ in range(args.rounds):
                order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
                for name in order:
                    seconds, cpu_seconds = build(sides[name], model, repo)
                    times[name].append(seconds)
                    cpu[name].append(cpu_seconds)
                ratios.append(times["this"][-1] / times["against"][-1])
                print(
                    f"round {round_ + 1:2d} ({order[0]} first): this {times['this'][-1]:.3f} s "
                    f"(CPU {cpu['this'][-1]:.3f}), against {times['against'][-1]:.3f} s "
                    f"(CPU {cpu['against'][-1]:.3f}), ratio {ratios[-1]:.2f}",
                    flush=True,
                )
        finally:
            remove_local_images(repo)
    for name in sides:
        print(
            f"{name:8s} median {statistics.median(times[name]):.3f} s "
            f"(min {min(times[name]):.3f}, max {max(times[name]):.3f}); "
            f"CPU median {statistics.median(cpu[name]):.3f} s "
            f"(min {min(cpu[name]):.3f}, max {max(cpu[name]):.3f})"
        )
    cpu_ratio = statistics.median(cpu["this"]) / statistics.median(cpu["against"])
    print(
        f"ratio this/against: median {statistics.median(ratios):.2f} "
        f"(rounds {min(ratios):.2f}-{max(ratios):.2f}: the machine's noise); CPU {cpu_ratio:.2f}"
    )


if __name__ == "__main__":
    main()
