"""Benchmark: validate + resolve + render of the bundled example, against the Clarifai SDK.

Times, in one run on the same copy of `examples/hello`:
  * modelpack in-process: load → signature → resolve → lock (reused) → render
  * modelpack as a process: `modelpack render DIR -o OUT --force`
  * the Clarifai SDK's Dockerfile generation, `ModelBuilder(folder,
    validate_api_ids=False).create_dockerfile(generate_dockerfile=True)`, as a
    process and in-process, from a separate venv (default /tmp/clarifai-venv;
    created with `pip install clarifai` when missing).

The Clarifai SDK insists on two things: `clarifai==X` in requirements.txt (the
copy gets that line; modelpack leaves it out of its lock), and `uv` on PATH, with
which it resolves requirements.txt against PyPI on every call
(`uv pip compile --universal --no-cache-dir`). It is timed as shipped (that
network resolve included) and, for an offline comparison, with
`_validate_requirements` patched to a no-op. modelpack's lock is created once
before timing (network) and reused, as it is on every run after the first.

Prints medians and the ratios clarifai / modelpack (target: >= 5x as a process).
Usage: .venv/bin/python benchmarks/bench_render.py [--runs N]
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
from pathlib import Path

CLARIFAI_VENV = Path(os.environ.get("CLARIFAI_VENV", "/tmp/clarifai-venv"))

CLARIFAI_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
from clarifai.runners.models.model_builder import ModelBuilder
if sys.argv[2] == "offline":
    ModelBuilder._validate_requirements = lambda self, python_version: True
import_s = time.perf_counter() - t0
runs = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    ModelBuilder(sys.argv[1], validate_api_ids=False).create_dockerfile(generate_dockerfile=True)
    runs.append(time.perf_counter() - t)
print(json.dumps({"import_s": import_s, "runs": runs}))
"""


def ensure_clarifai() -> Path:
    python = CLARIFAI_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {CLARIFAI_VENV} with `pip install clarifai` ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(CLARIFAI_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "clarifai"], check=True)
    return python


def example_copy(workdir: Path, clarifai_version: str) -> Path:
    from modelpack.resources import data_dir

    target = workdir / "hello"

    def copy(node: object, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for child in node.iterdir():  # type: ignore[attr-defined]
            if child.is_dir():
                if child.name != "__pycache__":
                    copy(child, dest / child.name)
            elif child.name != "requirements.lock":
                (dest / child.name).write_bytes(child.read_bytes())

    copy(data_dir("examples").joinpath("hello"), target)
    with (target / "requirements.txt").open("a", encoding="utf-8") as handle:
        handle.write(f"clarifai=={clarifai_version}\n")
    return target


def modelpack_in_process(model_dir: Path, out_root: Path, runs: int) -> list[float]:
    import importlib

    from modelpack.pipeline.resolver import resolve
    from modelpack.project.config import load
    from modelpack.project.methods import signature

    lock_mod = importlib.import_module("modelpack.pipeline.locking")
    render_mod = importlib.import_module("modelpack.pipeline.rendering")
    times = []
    for i in range(runs):
        start = time.perf_counter()
        loaded = load(model_dir)
        sig = signature(loaded.root)
        resolved = resolve(loaded)
        locked = lock_mod.lock(loaded, resolved=resolved)
        assert locked.up_to_date_before
        render_mod.render(
            loaded, out_root / f"inproc-{i}", resolved=resolved, lock=locked, signature=sig.signature
        )
        times.append(time.perf_counter() - start)
    return times


def modelpack_process(model_dir: Path, out_root: Path, runs: int) -> list[float]:
    command = [
        sys.executable,
        "-m",
        "modelpack",
        "render",
        str(model_dir),
        "-o",
        str(out_root / "proc"),
        "--force",
    ]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def clarifai_runs(
    python: Path, model_dir: Path, mode: str, runs: int, uv_dir: str
) -> tuple[list[float], dict]:
    env = dict(os.environ, PATH=f"{uv_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    process_times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [str(python), "-c", CLARIFAI_SCRIPT, str(model_dir), mode, "1"],
            check=True,
            capture_output=True,
            env=env,
        )
        process_times.append(time.perf_counter() - start)
    inner = subprocess.run(
        [str(python), "-c", CLARIFAI_SCRIPT, str(model_dir), mode, str(runs)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return process_times, json.loads(inner.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    python = ensure_clarifai()
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('clarifai'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    uv_dir = str(Path(shutil.which("uv") or Path(sys.executable).with_name("uv")).parent)

    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        work = Path(tmp)
        model_dir = example_copy(work, version)
        subprocess.run(
            [sys.executable, "-m", "modelpack", "lock", str(model_dir)], check=True, capture_output=True
        )
        outs = work / "out"
        outs.mkdir()

        mp_inproc = modelpack_in_process(model_dir, outs, args.runs)
        mp_proc = modelpack_process(model_dir, outs, args.runs)
        cl_proc_online, cl_inner_online = clarifai_runs(python, model_dir, "online", args.runs, uv_dir)
        cl_proc_offline, cl_inner_offline = clarifai_runs(python, model_dir, "offline", args.runs, uv_dir)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    rows = [
        ("modelpack in-process (load+signature+resolve+lock reuse+render)", med(mp_inproc)),
        ("modelpack process (`modelpack render`)", med(mp_proc)),
        (f"clarifai {version} process, as shipped (uv resolve online)", med(cl_proc_online)),
        (f"clarifai {version} in-process, as shipped", med(cl_inner_online["runs"])),
        (f"clarifai {version} process, requirement check patched out", med(cl_proc_offline)),
        (f"clarifai {version} in-process, requirement check patched out", med(cl_inner_offline["runs"])),
    ]
    print(f"median of {args.runs} runs each")
    for label, value in rows:
        print(f"  {label:<70} {value * 1000:9.1f} ms")
    print(f"  clarifai import time: {cl_inner_offline['import_s'] * 1000:.1f} ms")
    print("ratios (clarifai / modelpack; higher = modelpack faster):")
    print(f"  process, as shipped:      {med(cl_proc_online) / med(mp_proc):6.1f}x   (target >= 5x)")
    print(f"  process, offline clarifai: {med(cl_proc_offline) / med(mp_proc):6.1f}x")
    print(f"  in-process, as shipped:   {med(cl_inner_online['runs']) / med(mp_inproc):6.1f}x")
    print(f"  in-process, offline:      {med(cl_inner_offline['runs']) / med(mp_inproc):6.1f}x")


if __name__ == "__main__":
    main()
