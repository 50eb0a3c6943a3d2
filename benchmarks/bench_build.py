"""Benchmark `modelpack build --push` against the Dockerfile a user writes by hand, built with BuildKit.

The baseline, per the issue: `FROM` the same base, `COPY requirements.txt`, `pip install -r
requirements.txt` (into a venv), `COPY . /app`, then `docker build` (BuildKit, Debian's CLI) and
`docker push`. Both sides build examples/hello with about 200 MB of dependencies (numpy, scipy,
pandas) on an engine of the benchmark's own (a second dockerd: its own data root and socket),
which it wipes between cases, so the shared engine is never touched. Per side and round:

1. cold: wiped engine (no layers, no build cache, no uv cache) -> build + push;
2. one dependency added to requirements.txt -> build + push;
3. a one-line model.py change -> build + push (modelpack: share of cold, bytes pushed);
4. fresh runner: the engine wiped again, a code change -> build + push; modelpack imports its
   `--cache-registry` cache, the hand-written path has no cache to use.

Rounds alternate which side goes first. The base image stays in the engine across wipes (on a
real runner both sides pull it alike). Prints seconds and modelpack/baseline ratios per round,
and the spread between rounds as the machine's noise.

`--logs DIR` keeps each modelpack build's progress output, every line stamped with the seconds
since the build started (lock, the BuildKit steps with their own timings, each layer's upload):
where the time goes.

A code-only change (case 3) is a fresh Python process: starting it and importing requests, the
docker SDK, click, yaml and modelpack's stages is about 0.35-0.4 s of it on a quiet machine,
which the Go `docker` CLI of the baseline does not pay. The rest is five engine calls, 33
registry requests (the runtime layers checked, code layer, config and manifest sent, the version
claimed, the version note, SBOM and record attached) and the engine's `docker load` of the final
image under its content tag and version (started first and run alongside the registry work).

With `--standby`, modelpack's side starts `modelpack standby start` before its first build, as a
developer iterating on a model would, and cases 1-3 go through it (no interpreter start, no
imports); the fresh-runner case runs without it, as a new CI runner has none.

Needs the services of scripts/setup.sh and root (dockerd). Usage:
    python benchmarks/bench_build.py [--registry 127.0.0.1:5000] [--rounds 2] [--light] [--logs DIR] [--standby]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from importlib.resources.abc import Traversable
from pathlib import Path

CLI = "/usr/bin/docker"  # BuildKit built in
BASE = "modelpack-base/python:3.11"
HEAVY_REQUIREMENTS = "numpy==2.2.6\nscipy==1.15.3\npandas==2.2.3\n"  # about 200 MB installed
ADDED_REQUIREMENT = "toolz==1.0.0\n"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # pip/uv reach PyPI through it here
HAND_WRITTEN = """FROM {base}
RUN python3 -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca /opt/venv/bin/pip install --cert /run/secrets/ca -r /tmp/requirements.txt
COPY . /app
"""
CASES = ("cold build + push", "one dependency added", "code-only change", "fresh runner + cache")
TARGETS = (0.6, 0.3, None, 0.3)
LOGS: Path | None = None  # --logs DIR: each modelpack build's progress output
STANDBY = False  # --standby: cases 1-3 run through `modelpack standby` (a developer's loop)


def copy_tree(node: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for child in node.iterdir():
        if child.name in ("__pycache__", "requirements.lock"):
            continue
        if child.is_dir():
            copy_tree(child, target / child.name)
        else:
            (target / child.name).write_bytes(child.read_bytes())


class Engine:
    """A private dockerd (as tests/e2e/conftest.py's SecondEngine), wiped between cases."""

    def __init__(self, root: Path) -> None:
        self.root, self.host = root, f"unix://{root}/docker.sock"
        log = open(root / "dockerd.log", "wb")
        self.process = subprocess.Popen(
            ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "pid"), "--host", self.host, "--bridge=none",
             "--iptables=false", "--ip6tables=false", "--storage-driver", "overlay2"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(120):
            if self.docker("info", check=False).returncode == 0:
                break
            time.sleep(0.5)
        archive = root / "base.tar"
        subprocess.run([CLI, "save", "-o", str(archive), BASE], check=True)
        self.docker("load", "-i", str(archive))
        archive.unlink()

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER_HOST": self.host}
        done = subprocess.run([CLI, *args], capture_output=True, text=True, env=env)
        if check and done.returncode:
            sys.exit(f"docker {' '.join(args[:3])} failed:\n{done.stderr[-2000:]}")
        return done

    def wipe(self) -> None:
        """No layers, no build cache (cache mounts included); the base image stays."""
        self.docker("builder", "prune", "--all", "--force")
        base_id = self.docker("image", "inspect", "-f", "{{.Id}}", BASE).stdout.strip()
        ids = set(self.docker("image", "ls", "--all", "--quiet", "--no-trunc").stdout.split()) - {base_id}
        if ids:
            self.docker("image", "rm", "--force", *sorted(ids), check=False)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def side_modelpack(engine: Engine, work: Path, registry: str, light: bool) -> tuple[list[float], int]:
    """The four cases for modelpack: seconds each, and bytes pushed by the code-only change."""
    run = uuid.uuid4().hex[:8]
    model = work / f"mp-{run}"
    copy_tree(data_dir().joinpath("hello"), model)
    with (model / "requirements.txt").open("a") as handle:
        handle.write(("" if light else HEAVY_REQUIREMENTS) + f"# bench {run}\n")
    repo = f"{registry}/bench/modelpack-{run}"
    executable = Path(sys.executable).with_name("modelpack")
    env = {**os.environ, "DOCKER_HOST": engine.host, "XDG_CACHE_HOME": str(work / f"xdg-{run}")}
    command = [str(executable), "build", str(model), "--tag", repo, "--push", "--json", "--verbose"]
    command += ["--cache-registry", f"{repo}-cache"]
    if STANDBY:  # started once, as a developer would; its own folder, so the bench owns it
        (work / f"run-{run}").mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(work / f"run-{run}")
        subprocess.run([str(executable), "standby", "start"], env=env, check=True, capture_output=True)

    def build() -> tuple[float, dict[str, object]]:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert process.stderr is not None and process.stdout is not None
        # each progress line stamped with the seconds since the start: where the time goes
        lines = [f"{time.perf_counter() - start:7.2f} {line}" for line in process.stderr]
        stdout = process.stdout.read()
        seconds = time.perf_counter() - start
        if process.wait():
            sys.exit("modelpack build failed:\n" + "".join(lines)[-3000:])
        if LOGS is not None:
            LOGS.mkdir(parents=True, exist_ok=True)
            log = LOGS / f"{run}-{len(list(LOGS.glob(run + '-*')))}.log"
            log.write_text(f"{seconds:.2f}s\n" + "".join(lines))
        return seconds, json.loads(stdout)

    engine.wipe()
    times = [build()[0]]
    with (model / "requirements.txt").open("a") as handle:
        handle.write(ADDED_REQUIREMENT)
    times.append(build()[0])
    model_py = model / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# one-line change\n")
    seconds, result = build()
    times.append(seconds)
    code_bytes = int(str(result.get("bytes_pushed", 0)))
    engine.wipe()
    if STANDBY:  # a fresh runner has no standby process either
        subprocess.run([str(executable), "standby", "stop"], env=env, check=True, capture_output=True)
        env["MODELPACK_STANDBY"] = "off"
    shutil.rmtree(work / f"xdg-{run}", ignore_errors=True)  # a fresh runner has no modelpack cache
    model_py.write_text(model_py.read_text() + "# fresh runner\n")
    times.append(build()[0])
    return times, code_bytes


def side_by_hand(engine: Engine, work: Path, registry: str, light: bool) -> list[float]:
    run = uuid.uuid4().hex[:8]
    context = work / f"hand-{run}"
    copy_tree(data_dir().joinpath("hello"), context)
    with (context / "requirements.txt").open("a") as handle:
        handle.write(("" if light else HEAVY_REQUIREMENTS) + f"# bench {run}\n")
    (context / "Dockerfile").write_text(HAND_WRITTEN.format(base=BASE))
    image = f"{registry}/bench/by-hand-{run}:latest"

    def build() -> float:
        start = time.perf_counter()
        engine.docker(
            "build", "--network", "host", "--secret", f"id=ca,src={CA_BUNDLE}", "-t", image, str(context)
        )
        engine.docker("push", image)
        return time.perf_counter() - start

    engine.wipe()
    times = [build()]
    with (context / "requirements.txt").open("a") as handle:
        handle.write(ADDED_REQUIREMENT)
    times.append(build())
    model_py = context / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# one-line change\n")
    times.append(build())
    engine.wipe()
    model_py.write_text(model_py.read_text() + "# fresh runner\n")
    times.append(build())
    return times


def data_dir() -> Traversable:
    from modelpack.resources import data_dir as folder

    return folder("examples")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default="127.0.0.1:5000")
    parser.add_argument("--light", action="store_true", help="skip the ~200 MB of dependencies")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating who goes first")
    parser.add_argument(
        "--by-hand-first", action="store_true", help="the first round starts with the baseline"
    )
    parser.add_argument("--logs", type=Path, help="keep each modelpack build's step log in this folder")
    parser.add_argument(
        "--standby",
        action="store_true",
        help="modelpack's cases 1-3 through `modelpack standby` (started before them); the fresh "
        "runner without it",
    )
    args = parser.parse_args()
    global LOGS, STANDBY
    LOGS, STANDBY = args.logs, args.standby
    root = Path(tempfile.mkdtemp(prefix="mp-bench-", dir="/tmp"))
    engine = Engine(root)
    ratios: dict[str, list[float]] = {case: [] for case in CASES}
    try:
        for index in range(args.rounds):
            ours_first = (index % 2 == 0) != args.by_hand_first
            if ours_first:
                ours, code_bytes = side_modelpack(engine, root, args.registry, args.light)
                theirs = side_by_hand(engine, root, args.registry, args.light)
            else:
                theirs = side_by_hand(engine, root, args.registry, args.light)
                ours, code_bytes = side_modelpack(engine, root, args.registry, args.light)
            through = ", modelpack cases 1-3 through a standby process" if STANDBY else ""
            print(f"round {index + 1} ({'modelpack' if ours_first else 'by hand'} first{through})")
            print(f"  {'case':<24} {'modelpack s':>12} {'by hand s':>10} {'ratio':>7} {'target':>7}")
            for case, target, mine, hand in zip(CASES, TARGETS, ours, theirs, strict=True):
                ratios[case].append(mine / hand)
                shown = f"{target:.2f}" if target else "-"
                print(f"  {case:<24} {mine:>12.2f} {hand:>10.2f} {mine / hand:>7.2f} {shown:>7}")
            share = ours[2] / ours[0]
            print(
                f"  code-only change: {share:.1%} of cold (target < 2%), {code_bytes} bytes pushed (< 1 MiB)"
            )
        print("ratios over rounds (min-max: the machine's noise):")
        for case, values in ratios.items():
            print(f"  {case:<24} {min(values):.2f} - {max(values):.2f}")
    finally:
        engine.stop()
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
