"""Benchmark a torch model built and pushed by modelpack against what a user writes by hand.

By hand: a Dockerfile ``FROM`` the same OS/Python image modelpack's torch base starts from
(``modelpack-base/python:3.11``), ``pip install -r requirements.txt``, ``COPY . /app``, then
``docker build`` + ``docker push``. modelpack: ``modelpack build --push`` of examples/torch-mlp
on the torch base ``modelpack-base/torch:2.5.1-py3.11-cu124``.

Scenarios, both ways in the same run, each model with a unique requirement comment so no
build cache answers for it:

- warm: the torch base is in the engine (by hand: the Python image is);
- cold (``--cold``): the torch base's tag is removed first, so modelpack builds it (by hand there
  is nothing to remove: the Dockerfile installs torch every time anyway). Only a fresh engine
  gives a true cold number: where model images still hold the base's layers, BuildKit's cache
  answers the rebuild;
- second model: another model with the same torch, pushed after the first; the bytes it
  pushes, against the bytes of the torch layer.

Targets: warm build+push at least 3x faster than by hand; the second model pushes under 1%
of the torch bytes. Needs scripts/setup.sh's services and a few GB of disk; takes about 15
minutes (the hand-made image installs and pushes torch). Prints seconds, bytes and ratios.
Usage: python benchmarks/bench_torch.py [--registry 127.0.0.1:5000] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from modelpack.resources import data_dir

TORCH_BASE = "modelpack-base/torch:2.5.1-py3.11-cu124"
PYTHON_IMAGE = "modelpack-base/python:3.11"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HAND_DOCKERFILE = """FROM {python_image}
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=secret,id=ca PIP_CERT=/run/secrets/ca \\
    pip install --no-cache-dir --break-system-packages -r requirements.txt
COPY . /app
CMD ["python3", "-m", "modelpack.runtime"]
"""


def copy_example(target: Path, tag: str) -> Path:
    def copy(node: object, to: Path) -> None:
        to.mkdir(parents=True, exist_ok=True)
        for child in node.iterdir():  # type: ignore[attr-defined]
            if child.name in ("__pycache__", "requirements.lock"):
                continue
            if child.is_dir():
                copy(child, to / child.name)
            else:
                (to / child.name).write_bytes(child.read_bytes())

    copy(data_dir("examples").joinpath("torch-mlp"), target)
    requirements = target / "requirements.txt"
    requirements.write_text(requirements.read_text() + f"# benchmark run {tag}\n")
    return target


def run(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode:
        sys.exit(f"{' '.join(command[:4])} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout


def docker_cli() -> str:
    from modelpack.image.bases import docker_cli as find

    return find()[0]


def manifest_layers(registry: str, repository: str, tag: str) -> list[dict[str, object]]:
    accept = (
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    )
    response = requests.get(
        f"http://{registry}/v2/{repository}/manifests/{tag}", headers={"Accept": accept}, timeout=30
    )
    response.raise_for_status()
    layers: list[dict[str, object]] = response.json()["layers"]
    return layers


def modelpack_build(model_dir: Path, repo: str) -> tuple[float, dict[str, object]]:
    seconds, out = run(
        [
            sys.executable,
            "-m",
            "modelpack",
            "build",
            str(model_dir),
            "--tag",
            repo,
            "--push",
            "--json",
            "--ca-bundle",
            CA_BUNDLE,
        ],
        env={"MODELPACK_TORCH_INDEX_URL": "http://127.0.0.1:9/whl"},  # the PyPI wheel, as the test does
    )
    return seconds, json.loads(out)


def hand_build(model_dir: Path, registry: str, repository: str) -> tuple[float, int]:
    """docker build + docker push of the hand-written Dockerfile; (seconds, bytes uploaded)."""
    (model_dir / "Dockerfile").write_text(HAND_DOCKERFILE.format(python_image=PYTHON_IMAGE))
    reference = f"{registry}/{repository}:v1"
    cli = docker_cli()
    start = time.perf_counter()
    run(
        [
            cli,
            "build",
            "--network",
            "host",
            "--secret",
            f"id=ca,src={CA_BUNDLE}",
            "-t",
            reference,
            str(model_dir),
        ],
        env={"DOCKER_BUILDKIT": "1"},
    )
    run([cli, "push", reference])
    seconds = time.perf_counter() - start
    pushed = sum(int(str(layer["size"])) for layer in manifest_layers(registry, repository, "v1"))
    return seconds, pushed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default="127.0.0.1:5000")
    parser.add_argument(
        "--cold", action="store_true", help="remove the torch base first (modelpack rebuilds it)"
    )
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-torch-") as tmp:
        work = Path(tmp)
        if args.cold:
            removed = subprocess.run(
                ["docker", "rmi", TORCH_BASE], capture_output=True, text=True, check=False
            )
            if removed.returncode != 0 and "No such image" not in removed.stderr:
                sys.exit(f"--cold: cannot remove {TORCH_BASE}: {removed.stderr.strip()}")
        first = copy_example(work / "mp1", tag)
        mp_seconds, mp_result = modelpack_build(first, f"{args.registry}/bench/torch-mp-{tag}")
        scenario = "cold (torch base built)" if args.cold else "warm (torch base present)"

        hand = copy_example(work / "hand1", tag + "h")
        hand_seconds, hand_bytes = hand_build(hand, args.registry, f"bench/torch-hand-{tag}")

        second = copy_example(work / "mp2", tag + "b")
        model_py = second / "1" / "model.py"
        model_py.write_text(model_py.read_text().replace("The network's 3 outputs", "The 3 outputs"))
        repo_two = f"bench/torch-mp2-{tag}"
        _, second_result = modelpack_build(second, f"{args.registry}/{repo_two}")
        layers = manifest_layers(args.registry, repo_two, str(second_result["version"]))
        torch_bytes = max(int(str(layer["size"])) for layer in layers)
        second_bytes = int(str(second_result.get("bytes_pushed") or 0))
        for repository in (
            f"bench/torch-mp-{tag}",
            f"bench/torch-hand-{tag}",
            repo_two,
        ):  # keep the engine lean
            listed = subprocess.run(
                ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"{args.registry}/{repository}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            subprocess.run(["docker", "rmi", *listed], capture_output=True, check=False)

    print(f"build+push, {scenario}:")
    print(
        f"  modelpack        {mp_seconds:8.1f} s   pushed {int(str(mp_result.get('bytes_pushed') or 0)):>13,} bytes"
    )
    print(f"  by hand          {hand_seconds:8.1f} s   image  {hand_bytes:>13,} bytes (compressed layers)")
    print(f"  ratio            {hand_seconds / mp_seconds:8.1f}x faster (target: 3x warm)")
    print("second model on the same torch:")
    print(f"  modelpack pushed {second_bytes:>13,} bytes; torch layer {torch_bytes:,} bytes")
    print(
        f"  share            {100 * second_bytes / torch_bytes:8.3f} % of the torch bytes (target: under 1%)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
