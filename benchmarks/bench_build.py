"""Benchmark `modelpack build --push` against `docker build` + `docker push` by hand.

Three scenarios on a private copy of examples/hello, each measured both ways in the
same run (the baseline builds and pushes the very context modelpack renders):

- cold: requirements changed (a unique comment), so the dependency stage reinstalls;
- warm: nothing changed (modelpack answers from its record of the last push, confirmed
  by the registry; docker rebuilds from cache and pushes, finding every layer present);
- code: a one-line change to 1/model.py (modelpack reuses the runtime-stage image and
  uploads its own code layer; docker re-runs the final stage and pushes).

The example gets about 200 MB of dependencies (numpy, scipy, pandas) unless
`--light`, so the dependency layer dominates the cold build as it does for real
models. Besides the ratios against docker, it prints the code-only rebuild+push
as a share of the cold build+push (target: under 10%) and the bytes it pushed
(target: under 1 MiB plus the size of the code).

Needs the services of scripts/setup.sh. Prints seconds and modelpack/baseline ratios.
Usage: python benchmarks/bench_build.py [--registry 127.0.0.1:5000] [--light]
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from importlib.resources.abc import Traversable
from pathlib import Path


def copy_tree(node: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for child in node.iterdir():
        if child.name in ("__pycache__", "requirements.lock"):
            continue
        if child.is_dir():
            copy_tree(child, target / child.name)
        else:
            (target / child.name).write_bytes(child.read_bytes())


HEAVY_REQUIREMENTS = "numpy==2.2.6\nscipy==1.15.3\npandas==2.2.3\n"  # about 200 MB installed


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command[:4])} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout


def render_context(model_dir: Path, out: Path) -> Path:
    """The same context `modelpack build` renders, for the hand-made baseline."""
    config = importlib.import_module("modelpack.project.config")
    resolve = importlib.import_module("modelpack.pipeline.resolver")
    lock = importlib.import_module("modelpack.pipeline.locking")
    render = importlib.import_module("modelpack.pipeline.rendering")
    signature = importlib.import_module("modelpack.project.methods")
    loaded = config.load(model_dir)
    resolved = resolve.resolve(loaded)
    locked = lock.lock(loaded, resolved=resolved)
    sig = signature.signature(model_dir).signature
    if out.exists():
        shutil.rmtree(out)
    from modelpack.pipeline.settings import env_ca_bundle

    ca = env_ca_bundle()  # what `modelpack build` picks up from PIP_CERT & co.
    settings = render.BuildSettings(ca_bundle=Path(ca) if ca else None)
    result = render.render(loaded, out, resolved=resolved, lock=locked, signature=sig, settings=settings)
    return Path(result.out_dir)


def one_round(
    registry: str, light: bool, docker_first: bool
) -> tuple[list[tuple[str, float, float]], dict[str, int], int]:
    """Cold, warm and code-change rows (modelpack s, docker s), bytes pushed, code size.

    `docker_first` runs the baseline before modelpack in each scenario: a caching proxy
    in front of PyPI favours whoever downloads second, so rounds alternate the order.
    """
    from modelpack.resources import data_dir

    run_id = uuid.uuid4().hex[:8]
    ours_repo = f"{registry}/bench/modelpack-{run_id}"
    base_repo = f"{registry}/bench/docker-{run_id}"
    # the installed command, as users run it (`python -m modelpack` from the repository
    # root would import the source tree instead)
    executable = Path(sys.executable).with_name("modelpack")
    mp = [str(executable) if executable.exists() else "modelpack", "build"]
    rows: list[tuple[str, float, float]] = []
    pushed: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="modelpack-bench-") as tmp:
        ours = Path(tmp) / "ours"
        theirs = Path(tmp) / "theirs"
        for target in (ours, theirs):
            copy_tree(data_dir("examples").joinpath("hello"), target)
            with (target / "requirements.txt").open("a") as handle:
                handle.write("" if light else HEAVY_REQUIREMENTS)
                handle.write(f"\n# bench {run_id} {target.name}\n")  # cold: a lock no cache has seen

        def baseline(tag: str) -> float:
            start = time.perf_counter()
            context = render_context(theirs, Path(tmp) / "context")
            build = ["docker", "build", "-q", "--network", "host", "-t", f"{base_repo}:{tag}", str(context)]
            for command in (build, ["docker", "push", f"{base_repo}:{tag}"]):
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"{' '.join(command[:2])} failed:\n{done.stderr[-2000:]}")
            return time.perf_counter() - start

        def modelpack(name: str) -> float:
            seconds, out = timed([*mp, str(ours), "--tag", ours_repo, "--push", "--json"])
            pushed[name] = int(json.loads(out).get("bytes_pushed", 0))
            return seconds

        def scenario(title: str, key: str, tag: str) -> None:
            if docker_first:
                theirs_s = baseline(tag)
                ours_s = modelpack(key)
            else:
                ours_s = modelpack(key)
                theirs_s = baseline(tag)
            rows.append((title, ours_s, theirs_s))

        scenario("cold build + push", "cold", "v1")
        scenario("warm rebuild (unchanged)", "warm", "v1")
        for target in (ours, theirs):
            model_py = target / "1" / "model.py"
            model_py.write_text(model_py.read_text() + "\n# one-line change\n")
        scenario("one-line model.py change", "code", "v2")
        code_size = sum(f.stat().st_size for f in (ours / "1").rglob("*") if f.is_file())
    return rows, pushed, code_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default="127.0.0.1:5000")
    parser.add_argument("--light", action="store_true", help="skip the ~200 MB of dependencies")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating who goes first")
    args = parser.parse_args()

    totals: dict[str, list[tuple[float, float]]] = {}
    shares: list[float] = []
    for index in range(args.rounds):
        rows, pushed, code_size = one_round(args.registry, args.light, docker_first=index % 2 == 1)
        print(f"round {index + 1} ({'docker' if index % 2 else 'modelpack'} first)")
        print(f"  {'scenario':<28} {'modelpack s':>12} {'docker s':>10} {'ratio':>7} {'pushed MB':>10}")
        for (name, ours_s, theirs_s), key in zip(rows, ("cold", "warm", "code"), strict=True):
            totals.setdefault(name, []).append((ours_s, theirs_s))
            print(
                f"  {name:<28} {ours_s:>12.2f} {theirs_s:>10.2f} {ours_s / theirs_s:>7.2f}"
                f" {pushed[key] / 1e6:>10.3f}"
            )
        shares.append(rows[2][1] / rows[0][1])
        limit = 2**20 + code_size
        print(
            f"  code-only push: {pushed['code']} bytes (target < {limit} = 1 MiB + {code_size} bytes of code)"
        )
    print(
        "summed over rounds (ratio = modelpack / (docker build + docker push by hand), both render the context):"
    )
    for name, pairs in totals.items():
        ours_total = sum(p[0] for p in pairs)
        theirs_total = sum(p[1] for p in pairs)
        print(
            f"  {name:<28} {ours_total:>8.2f} s vs {theirs_total:>8.2f} s  ratio {ours_total / theirs_total:.2f}"
        )
    print(f"code-only rebuild+push / cold build+push = {max(shares):.1%} at worst (target < 10%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
