"""Benchmark adding a checkpoint (weights) layer: modelpack's direct upload vs docker build + push.

Both ways add the same files (default 1 GiB of incompressible bytes, like real weights,
in a few files) as one layer on top of the same base image, already in the registry:

- modelpack: `weights_layer.write_layer` (deterministic uncompressed tar) + `append_layer`
  (HEAD, streamed blob upload, new config + manifest in the registry);
- baseline: `docker build` (`FROM base` + `COPY weights/`) + `docker push` (the engine
  compresses the layer and uploads it).

Also timed: a second modelpack run for the same files (a code-only rebuild), where the
registry has the blob and nothing is re-sent. Prints seconds and ratios (target: the
baseline takes at least 2x as long). Needs the services of scripts/setup.sh.
Usage: python benchmarks/bench_weights.py [--size-mib 1024] [--registry 127.0.0.1:5000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def make_files(folder: Path, size: int) -> None:
    """A few files of random bytes (the main one holds most of the size), plus a config."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"architectures": ["Bench"]}\n')
    sizes = {"model-00001-of-00002.safetensors": size * 3 // 4, "model-00002-of-00002.safetensors": size // 4}
    for name, n in sizes.items():
        with open(folder / name, "wb") as handle:
            remaining = n
            while remaining:
                chunk = min(remaining, 16 << 20)
                handle.write(os.urandom(chunk))
                remaining -= chunk


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"docker {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--registry", default=os.environ.get("MODELPACK_TEST_REGISTRY", "127.0.0.1:5000"))
    parser.add_argument(
        "--base", default=os.environ.get("MODELPACK_TEST_BASE_IMAGE", "modelpack-base/python:3.11")
    )
    args = parser.parse_args()

    from modelpack.image.weights_layer import append_layer, write_layer
    from modelpack.oci.registry import RegistryClient

    size = args.size_mib << 20
    name = f"modelpack-bench/weights-{uuid.uuid4().hex[:8]}"
    ref = f"{args.registry}/{name}"
    work = Path(tempfile.mkdtemp(prefix="bench-weights-"))
    registry = RegistryClient(args.registry)
    pushed_manifests: list[str] = []
    try:
        files = work / "context" / "weights"
        make_files(files, size)
        # the same base image in the registry for both ways (not timed)
        docker("tag", args.base, f"{ref}:base")
        docker("push", f"{ref}:base")
        base_digest = registry.head_manifest(name, "base")
        assert base_digest is not None
        pushed_manifests.append(base_digest.digest)

        # modelpack: write the layer, upload it, compose the image
        start = time.perf_counter()
        layer = write_layer(files, work / "weights.tar")
        appended = append_layer(registry, name, "base", layer)
        registry.put_manifest(name, "modelpack", appended.raw, appended.media_type)
        modelpack_s = time.perf_counter() - start
        pushed_manifests.append(appended.digest)
        assert appended.layer_pushed

        # modelpack again, same files (a code-only rebuild): HEAD finds the blob, nothing re-sent
        start = time.perf_counter()
        again = append_layer(registry, name, "base", layer, known=(layer.digest, layer.size))
        warm_s = time.perf_counter() - start
        assert not again.layer_pushed

        # baseline: docker build + docker push of the same files on the same base
        (work / "context" / "Dockerfile").write_text(f"FROM {ref}:base\nCOPY weights/ /app/1/checkpoints/\n")
        start = time.perf_counter()
        docker("build", "-q", "-t", f"{ref}:docker", str(work / "context"))
        docker("push", f"{ref}:docker")
        docker_s = time.perf_counter() - start
        found = registry.head_manifest(name, "docker")
        if found is not None:
            pushed_manifests.append(found.digest)
    finally:
        for digest in pushed_manifests:
            try:
                registry.delete_manifest(name, digest)
            except Exception:
                pass
        for tag in ("base", "docker"):
            subprocess.run(["docker", "rmi", f"{ref}:{tag}"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"weights layer of {args.size_mib} MiB ({layer.size} bytes tar), same base image in {args.registry}"
    )
    print(f"  modelpack write_layer + upload + compose : {modelpack_s:7.2f} s")
    print(f"  docker build + docker push               : {docker_s:7.2f} s")
    print(f"  ratio docker / modelpack                 : {docker_s / modelpack_s:7.2f}x  (target >= 2x)")
    print(
        f"  modelpack, same files again (nothing sent): {warm_s:7.2f} s  ({warm_s / docker_s:.1%} of docker)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
