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
(`uv pip compile --universal --no-cache-dir`). modelpack's lock is created once
before timing (network) and reused, as it is on every run after the first.

The headline is the equal-work ratio: neither side touches the network (the SDK's
`_validate_requirements` patched to a no-op, modelpack reusing its lock). The SDK as
shipped (its online resolve included) is printed beside it. The variants run
interleaved, round by round, in an order that alternates; the SDK's in-process
figures come from a fresh interpreter per round, after one warm-up call, as do
modelpack's (one warm-up in this process). Ratios are medians over the rounds, with
the lowest and highest round beside them as the noise.

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


class ModelpackInProcess:
    """load → signature → resolve → lock (reused) → render, in this interpreter."""

    def __init__(self, model_dir: Path, out_root: Path) -> None:
        import importlib

        from modelpack.pipeline.resolver import resolve
        from modelpack.project.config import load
        from modelpack.project.methods import signature

        self.load, self.signature, self.resolve = load, signature, resolve
        self.lock_mod = importlib.import_module("modelpack.pipeline.locking")
        self.render_mod = importlib.import_module("modelpack.pipeline.rendering")
        self.model_dir, self.out_root, self.count = model_dir, out_root, 0
        self.once()  # warm-up, like the SDK's below

    def once(self) -> float:
        self.count += 1
        start = time.perf_counter()
        loaded = self.load(self.model_dir)
        sig = self.signature(loaded.root)
        resolved = self.resolve(loaded)
        locked = self.lock_mod.lock(loaded, resolved=resolved)
        assert locked.up_to_date_before
        self.render_mod.render(
            loaded,
            self.out_root / f"inproc-{self.count}",
            resolved=resolved,
            lock=locked,
            signature=sig.signature,
        )
        return time.perf_counter() - start


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, done.stdout


def clarifai_in_process(python: Path, model_dir: Path, mode: str, env: dict[str, str]) -> float:
    """One fresh interpreter: a warm-up call, then the timed one."""
    _, out = timed([str(python), "-c", CLARIFAI_SCRIPT, str(model_dir), mode, "2"], env)
    return float(json.loads(out.strip().splitlines()[-1])["runs"][1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="rounds; each runs every variant once")
    args = parser.parse_args()

    python = ensure_clarifai()
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('clarifai'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    uv_dir = str(Path(shutil.which("uv") or Path(sys.executable).with_name("uv")).parent)
    env = dict(os.environ, PATH=f"{uv_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        work = Path(tmp)
        model_dir = example_copy(work, version)
        subprocess.run(
            [sys.executable, "-m", "modelpack", "lock", str(model_dir)], check=True, capture_output=True
        )
        outs = work / "out"
        outs.mkdir()
        inproc = ModelpackInProcess(model_dir, outs)
        render = [
            sys.executable,
            "-m",
            "modelpack",
            "render",
            str(model_dir),
            "-o",
            str(outs / "proc"),
            "--force",
        ]
        sdk = [str(python), "-c", CLARIFAI_SCRIPT, str(model_dir)]
        variants = {
            "mp_proc": lambda: timed(render)[0],
            "cl_proc_offline": lambda: timed([*sdk, "offline", "1"], env)[0],
            "cl_proc_online": lambda: timed([*sdk, "online", "1"], env)[0],
            "mp_inproc": inproc.once,
            "cl_inproc_offline": lambda: clarifai_in_process(python, model_dir, "offline", env),
            "cl_inproc_online": lambda: clarifai_in_process(python, model_dir, "online", env),
        }
        timed(render)  # warm the file cache for the first process
        for round_number in range(args.runs):
            order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
            for name in order:
                times.setdefault(name, []).append(variants[name]())

    def med(name: str) -> float:
        return statistics.median(times[name])

    def ratio(sdk_name: str, mp_name: str) -> str:
        per_round = [s / m for s, m in zip(times[sdk_name], times[mp_name], strict=True)]
        return (
            f"{statistics.median(per_round):5.1f}x  (rounds {min(per_round):.1f}x–{max(per_round):.1f}x; "
            f"medians {med(sdk_name) * 1000:.0f} / {med(mp_name) * 1000:.0f} ms)"
        )

    print(
        f"clarifai {version}; {args.runs} interleaved rounds; ratio = clarifai / modelpack (higher = modelpack faster)"
    )
    print("equal work, no network on either side (headline):")
    print(f"  process:    {ratio('cl_proc_offline', 'mp_proc')}")
    print(f"  in-process: {ratio('cl_inproc_offline', 'mp_inproc')}")
    print("clarifai as shipped (resolves requirements online on every call), modelpack as above:")
    print(f"  process:    {ratio('cl_proc_online', 'mp_proc')}")
    print(f"  in-process: {ratio('cl_inproc_online', 'mp_inproc')}")


if __name__ == "__main__":
    main()
