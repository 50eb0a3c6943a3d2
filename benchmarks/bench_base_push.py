"""Benchmark `modelpack base push` against the engine's own push of the same base image.

Baseline: what `base push` did before, the engine's push (`docker push`): every layer gzipped by
the engine with zlib on one core, then uploaded. modelpack: `modelpack base push`, which gzips
with ISA-L while `docker save` streams the layers and uploads each as it is done.

Each side and round runs on an engine of its own (a second dockerd, tests/dockerd.py) that holds
only the base (copied from the shared engine, untimed) and knows of no earlier push, with an
empty modelpack cache, and pushes to a repository of its own under ``scratch/``: nothing is
mounted or skipped, every layer is compressed and sent, as on a fresh CI runner. Rounds alternate
which side goes first; the spread between rounds is the machine's noise. Prints seconds, the
bytes each side sent (its blobs' sizes) and what the registry's folder grew by.

The registry cannot delete (distribution without delete enabled): each round stores the base
twice (two different gzip streams). The torch base (5.45 GB) takes about 6 GB per round.
Needs scripts/setup.sh's services and root. Usage:
    python benchmarks/bench_base_push.py [--image modelpack-base/python:3.11] [--rounds 2]
        [--registry 127.0.0.1:5000] [--registry-root DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType

from modelpack.oci.registry import RegistryClient

ROOT = Path(__file__).resolve().parents[1]


def load_dockerd() -> ModuleType:
    """tests/dockerd.py: the second engine the e2e tests use too."""
    spec = importlib.util.spec_from_file_location("modelpack_tests_dockerd", ROOT / "tests" / "dockerd.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def folder_bytes(folder: Path | None) -> int:
    if folder is None:
        return 0
    done = subprocess.run(["du", "-sb", str(folder)], capture_output=True, text=True, check=False)
    return int(done.stdout.split()[0]) if done.returncode == 0 and done.stdout else 0


def blob_bytes(registry: str, repository: str, tag: str) -> int:
    """The bytes of the pushed image's blobs (its layers and config), as the registry names them."""
    with RegistryClient(registry) as client:
        manifest = client.get_manifest(repository, tag).json
    return int(manifest["config"]["size"]) + sum(int(layer["size"]) for layer in manifest["layers"])


def engine_side(engine: object, image: str, registry: str, prefix: str) -> tuple[float, str]:
    """The old path: tag, then the engine's push. (seconds, repository:tag pushed)."""
    reference = f"{registry}/{prefix}/{image}"
    engine.docker("tag", image, reference)  # type: ignore[attr-defined]
    start = time.perf_counter()
    engine.docker("push", reference, timeout=7200)  # type: ignore[attr-defined]
    return time.perf_counter() - start, reference


def modelpack_side(engine: object, image: str, registry: str, prefix: str, cache: Path) -> tuple[float, str]:
    """`modelpack base push` against that engine, with an empty cache. (seconds, repository:tag)."""
    env = {**os.environ, "DOCKER_HOST": engine.host, "XDG_CACHE_HOME": str(cache)}  # type: ignore[attr-defined]
    command = [
        sys.executable,
        "-m",
        "modelpack",
        "base",
        "push",
        image,
        "--base-registry",
        f"{registry}/{prefix}",
    ]
    start = time.perf_counter()
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"modelpack base push failed: {done.stderr[-2000:]}")
    statuses = [layer["status"] for layer in json.loads(done.stdout)["bases"][0]["layers"]]
    assert set(statuses) == {"pushed"}, f"not a cold push: {statuses}"
    return seconds, f"{registry}/{prefix}/{image}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="modelpack-base/python:3.11")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--registry", default="127.0.0.1:5000")
    parser.add_argument("--registry-root", type=Path, default=None, help="default: the local registry's")
    args = parser.parse_args()
    dockerd = load_dockerd()
    args.registry_root = args.registry_root or dockerd.registry_root()
    run_tag = uuid.uuid4().hex[:8]
    results: list[dict[str, tuple[float, int, int]]] = []
    for number in range(args.rounds):
        order = ("modelpack", "engine") if number % 2 == 0 else ("engine", "modelpack")
        measured: dict[str, tuple[float, int, int]] = {}
        for side in order:
            prefix = f"scratch/bench-base-{run_tag}-{number}-{side}"
            engine = dockerd.SecondEngine.create(args.image)
            cache = Path(tempfile.mkdtemp(prefix="bench-base-cache-"))
            try:
                before = folder_bytes(args.registry_root)
                if side == "engine":
                    seconds, reference = engine_side(engine, args.image, args.registry, prefix)
                else:
                    seconds, reference = modelpack_side(engine, args.image, args.registry, prefix, cache)
                grown = folder_bytes(args.registry_root) - before
            finally:
                engine.remove()
                shutil.rmtree(cache, ignore_errors=True)
            name, tag = reference.split("/", 1)[1].rsplit(":", 1)
            sent = blob_bytes(args.registry, name, tag)
            measured[side] = (seconds, sent, grown)
            print(
                f"  round {number + 1}, {side}: {seconds:.1f} s, {sent:,} bytes sent, registry +{grown:,} bytes",
                flush=True,
            )
        results.append(measured)
    print(f"base push of {args.image} to a fresh repository (fresh engine, empty cache):")
    ratios = []
    for number, measured in enumerate(results, 1):
        (mp_s, mp_b, _), (en_s, en_b, _) = measured["modelpack"], measured["engine"]
        ratios.append(en_s / mp_s)
        print(
            f"  round {number}  modelpack {mp_s:7.1f} s {mp_b:>14,} bytes | engine push {en_s:7.1f} s "
            f"{en_b:>14,} bytes | {en_s / mp_s:5.2f}x faster, {mp_b / en_b:5.2f} of the bytes"
        )
    spread = (max(ratios) - min(ratios)) / 2
    print(
        f"  ratio  {sum(ratios) / len(ratios):5.2f}x (engine push / modelpack), +-{spread:.2f} between rounds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
