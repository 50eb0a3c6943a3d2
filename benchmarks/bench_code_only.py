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

`--warm` times the work alone, as a resident process would do it: each side keeps one process
that has imported everything (after one build, and what `modelpack standby`'s preload does), and
runs each build in a child forked from it; the builds also use `--cache-registry`. It prints the
requests each build sent to the engine and the registry too, and when the engine's image list
was asked: the work before it (parse, load, record check, session, lock check, render) is done. `--against-source DIR` runs the other side from a source tree (put first
on its PYTHONPATH), e.g. `git archive main | tar -x -C DIR`, with this interpreter.

Needs the services of scripts/setup.sh. Usage:
    python benchmarks/bench_code_only.py --against /path/to/other/venv/bin/python
        [--registry 127.0.0.1:5000] [--rounds 10] [--warm]
    python benchmarks/bench_code_only.py --against-source /path/to/other/checkout --warm
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

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


def warm_worker(model: str, repo: str) -> None:
    """`--worker`: import what a build uses, then one forked child per line of stdin, each a build;
    one JSON line per build on stdout (seconds, exit status, requests to engine and registry)."""
    from modelpack.resources import own_process

    own_process()
    import urllib3.connectionpool

    import modelpack.cli
    import modelpack.cli.build_cmd
    import modelpack.image.stages

    try:  # what a standby process does before it forks a child per command
        from modelpack.cli.standby_cmd import preload
    except ImportError:  # an installation from before the standby process
        pass
    else:
        preload()
    registry = repo.split("/", 1)[0]
    sent: list[str] = []
    listed: list[float] = []  # when the engine's image list was asked: the work before it is done
    pool = urllib3.connectionpool.HTTPConnectionPool
    original = pool._make_request

    def noted(self: Any, conn: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        sent.append("registry" if f"{self.host}:{self.port}" == registry else "engine")
        if sent[-1] == "engine" and "/images/json" in url and not listed:
            listed.append(time.perf_counter())
        return original(self, conn, method, url, *args, **kwargs)

    pool._make_request = noted  # type: ignore[method-assign]
    argv = ["build", model, "--tag", repo, "--push", "--cache-registry", f"{repo}-cache", "--quiet"]
    imported = False
    for _ in sys.stdin:
        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(reader)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            start, code = time.perf_counter(), 0
            try:
                modelpack.cli.main(argv)
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else 1
            seconds = time.perf_counter() - start
            usage = resource.getrusage(resource.RUSAGE_SELF)  # this child's own (a fork starts at 0)
            counts = {where: sent.count(where) for where in ("engine", "registry")}
            modules = [] if imported else sorted(sys.modules)
            result = {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "code": code, **counts}
            result["before_list"] = listed[0] - start if listed else seconds
            os.write(writer, json.dumps({**result, "modules": modules}).encode())
            os._exit(0)
        os.close(writer)
        with os.fdopen(reader, "rb") as answer:
            result = json.loads(answer.read())
        os.waitpid(child, 0)
        if not imported:  # what the first build loaded, imported once here for every later one
            for name in result.pop("modules"):
                try:
                    __import__(name)
                except Exception:  # a module only some path can import
                    pass
            imported = True
        result.pop("modules", None)
        print(json.dumps(result), flush=True)


class WarmSide:
    """One side's resident worker, its copy of the model and its repository."""

    def __init__(self, python: str, source: str | None, work: Path, name: str, registry: str) -> None:
        self.model = work / name / "hello"
        shutil.copytree(str(data_dir("examples").joinpath("hello")), self.model)
        self.repo = f"{registry}/modelpack-bench/warm-{name}-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "XDG_CACHE_HOME": str(work / name / "cache")}
        if source:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH", "")) if p)
        command = [python, str(Path(__file__).resolve()), "--worker", str(self.model), self.repo]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def build(self) -> dict[str, Any]:
        model_py = self.model / "1" / "model.py"
        model_py.write_text(model_py.read_text() + f"# change {uuid.uuid4().hex[:8]}\n")
        stdin: IO[str] | None = self.process.stdin
        stdout: IO[str] | None = self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write("build\n")
        stdin.flush()
        result: dict[str, Any] = json.loads(stdout.readline())
        if result["code"]:
            sys.exit(f"{self.repo}: modelpack build failed (exit {result['code']})")
        return result

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()
        remove_local_images(self.repo)
        remove_local_images(f"{self.repo}-cache")


def warm(args: argparse.Namespace) -> None:
    """Alternating warm builds of both sides: seconds, requests, the ratio per round."""
    pythons = {"this": (sys.executable, None), "against": (args.against or sys.executable, args.against_source)}
    with tempfile.TemporaryDirectory(prefix="modelpack-bench-") as work:
        sides = {
            name: WarmSide(python, source, Path(work), name, args.registry)
            for name, (python, source) in pythons.items()
        }
        try:
            for side in sides.values():  # the runtime stage, the caches and the imports: not counted
                side.build()
                side.build()
            times: dict[str, list[float]] = {name: [] for name in sides}
            cpu: dict[str, list[float]] = {name: [] for name in sides}
            before: dict[str, list[float]] = {name: [] for name in sides}
            ratios: list[float] = []
            before_ratios: list[float] = []
            for round_ in range(args.rounds):
                order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
                shown = []
                for name in order:
                    result = sides[name].build()
                    times[name].append(result["seconds"])
                    cpu[name].append(result["cpu"])
                    before[name].append(result["before_list"])
                    requests = f"{result['registry']} registry + {result['engine']} engine requests"
                    shown.append(
                        f"{name} {result['seconds']:.3f} s (CPU {result['cpu']:.3f}; "
                        f"image list at {result['before_list'] * 1000:.0f} ms; {requests})"
                    )
                ratios.append(times["this"][-1] / times["against"][-1])
                before_ratios.append(before["this"][-1] / before["against"][-1])
                print(f"round {round_ + 1:2d}: {', '.join(shown)}, ratio {ratios[-1]:.2f}", flush=True)
        finally:
            for side in sides.values():
                side.close()
    for name, seconds in times.items():
        print(
            f"{name:8s} median {statistics.median(seconds):.3f} s (min {min(seconds):.3f}, max {max(seconds):.3f}); "
            f"CPU median {statistics.median(cpu[name]):.3f} s (min {min(cpu[name]):.3f}, max {max(cpu[name]):.3f})"
        )
    print(
        f"ratio this/against: median {statistics.median(ratios):.2f} "
        f"(rounds {min(ratios):.2f}-{max(ratios):.2f}: the machine's noise)"
    )
    for name, seconds in before.items():
        print(
            f"{name:8s} work before the engine's image list: median {statistics.median(seconds) * 1000:.1f} ms "
            f"(min {min(seconds) * 1000:.1f}, max {max(seconds) * 1000:.1f})"
        )
    print(
        f"its ratio this/against: median {statistics.median(before_ratios):.2f} "
        f"(rounds {min(before_ratios):.2f}-{max(before_ratios):.2f})"
    )


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        warm_worker(*sys.argv[2:4])
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--against", help="the Python of the other installation")
    parser.add_argument("--against-source", help="the other side's source tree (with this Python)")
    parser.add_argument("--registry", default="127.0.0.1:5000")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warm", action="store_true", help="time the work in a resident process")
    args = parser.parse_args()
    if not args.against and not args.against_source:
        parser.error("give --against PYTHON or --against-source DIR")
    if args.warm:
        warm(args)
        return
    if args.against_source:
        parser.error("--against-source needs --warm")
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
