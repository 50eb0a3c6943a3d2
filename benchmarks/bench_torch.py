"""Benchmark a torch model built and pushed by modelpack against what a user writes by hand.

By hand: a Dockerfile ``FROM`` the same OS/Python image modelpack's torch base starts from
(``modelpack-base/python:3.11``, the debootstrap image), ``pip install -r requirements.txt``,
``COPY . /app``, then ``docker build`` + ``docker push``. modelpack: ``modelpack build --push``
of examples/torch-mlp on the torch base ``modelpack-base/torch:2.5.1-py3.11-cu124``.
Every model gets a unique requirement comment, so no build cache answers for it.

Scenarios, both ways in the same run:

- cold (``--cold``, rounds alternate which side goes first): each side on a fresh engine of its
  own (a second dockerd, tests/dockerd.py: own data root and socket) that holds only the OS/Python
  image, and a fresh cache: modelpack builds the torch base, then the model, then pushes; by hand
  pip installs torch in the model's image. The engine and its data root are removed after.
- warm: on the shared engine, where the torch base is present (by hand: the Python image is),
  and in a base registry as a team hosts it (``REGISTRY/bench-bases``, pushed once, untimed).
- second model: another model on the same torch (its own method text and one more
  requirement), pushed after the first; the bytes it pushes, against the bytes of the torch
  layer as the registry holds it (gzip).
- one dependency added: each side builds and pushes a model, then adds a requirement and
  builds and pushes again (timed). By hand is what a team with a torch base writes: ``FROM`` the
  base as their registry holds it (pulled, untimed), so the engine pushes only new layers. No
  target: it shows what a dependency change costs modelpack on a 5 GB base (the engine's
  ``docker save`` of the whole image), against a by-hand path that has the torch layers already.

Registry repositories are unique to the run (``bench/torch-<run>-...``); their manifests are
deleted at the end (the registry keeps the blobs until its garbage collection runs).

Targets: warm build+push at least 3x faster than by hand; the second model pushes under 1%
of the torch bytes. Needs scripts/setup.sh's services, root and about 15 GB of disk; the warm
scenario takes about 10 minutes, each cold round about 15 more (both sides download about
2.5 GB of wheels and push them). Prints seconds, bytes and ratios, and the spread of rounds.
Usage: python benchmarks/bench_torch.py [--registry 127.0.0.1:5000] [--cold] [--rounds 2]
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

from modelpack.errors import RegistryError
from modelpack.oci.registry import RegistryClient
from modelpack.resources import data_dir

TORCH_BASE = "modelpack-base/torch:2.5.1-py3.11-cu124"
PYTHON_IMAGE = "modelpack-base/python:3.11"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HAND_DOCKERFILE = """FROM {base}
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
    with RegistryClient(registry) as client:
        layers: list[dict[str, object]] = client.get_manifest(repository, tag).json["layers"]
    return layers


def modelpack_build(
    model_dir: Path, repo: str, env: dict[str, str] | None = None
) -> tuple[float, dict[str, object]]:
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
        # the PyPI wheel, as the test does
        env={"MODELPACK_TORCH_INDEX_URL": "http://127.0.0.1:9/whl", **(env or {})},
    )
    return seconds, json.loads(out)


def hand_build(
    model_dir: Path, registry: str, repository: str, env: dict[str, str] | None = None
) -> tuple[float, int]:
    """docker build + docker push of the hand-written Dockerfile; (seconds, bytes uploaded)."""
    (model_dir / "Dockerfile").write_text(HAND_DOCKERFILE.format(base=PYTHON_IMAGE))
    seconds = hand_push(model_dir, f"{registry}/{repository}:v1", env)
    pushed = sum(int(str(layer["size"])) for layer in manifest_layers(registry, repository, "v1"))
    return seconds, pushed


def hand_push(model_dir: Path, reference: str, env: dict[str, str] | None = None) -> float:
    """Seconds of `docker build` (BuildKit) + `docker push` of model_dir's Dockerfile."""
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
        env={"DOCKER_BUILDKIT": "1", **(env or {})},
    )
    run([cli, "push", reference], env=env)
    return time.perf_counter() - start


def load_dockerd() -> ModuleType:
    """tests/dockerd.py: the second engine the e2e tests use too."""
    path = Path(__file__).resolve().parents[1] / "tests" / "dockerd.py"
    spec = importlib.util.spec_from_file_location("modelpack_tests_dockerd", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cold_side(side: str, work: Path, registry: str, repository: str) -> tuple[float, int]:
    """One side's cold build+push on a fresh engine holding only the OS/Python image."""
    engine = load_dockerd().SecondEngine.create(PYTHON_IMAGE)
    try:
        model = copy_example(work / repository.rsplit("/", 1)[-1], repository)
        env = {"DOCKER_HOST": engine.host, "XDG_CACHE_HOME": str(work / f"xdg-{side}")}
        if side == "modelpack":
            seconds, result = modelpack_build(model, f"{registry}/{repository}", env)
            return seconds, int(str(result.get("bytes_pushed") or 0))
        return hand_build(model, registry, repository, env)
    finally:
        engine.remove()
        shutil.rmtree(work / f"xdg-{side}", ignore_errors=True)


def delete_repositories(registry: str, repositories: list[str]) -> None:
    """Delete every manifest the run pushed (tags of its unique repositories); best effort."""
    with RegistryClient(registry) as client:
        for repository in repositories:
            try:
                found = (client.head_manifest(repository, tag) for tag in client.list_tags(repository))
                for digest in {descriptor.digest for descriptor in found if descriptor is not None}:
                    client.delete_manifest(repository, digest)
            except RegistryError as error:
                print(f"  cleanup of {repository}: {error}", file=sys.stderr)


def cold_rounds(work: Path, registry: str, run_tag: str, rounds: int) -> list[dict[str, tuple[float, int]]]:
    """Cold build+push per side and round, alternating which side goes first."""
    results: list[dict[str, tuple[float, int]]] = []
    for number in range(rounds):
        order = ("modelpack", "hand") if number % 2 == 0 else ("hand", "modelpack")
        measured: dict[str, tuple[float, int]] = {}
        for side in order:
            repository = f"bench/torch-{run_tag}-cold{number}-{side}"
            measured[side] = cold_side(side, work, registry, repository)
            seconds, pushed = measured[side]
            print(f"  cold round {number + 1}, {side}: {seconds:.1f} s, pushed {pushed:,} bytes", flush=True)
        results.append(measured)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default="127.0.0.1:5000")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="also build both sides on fresh engines (modelpack builds the base)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="cold rounds (sides alternate going first)")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    repositories: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-torch-") as tmp:
            work = Path(tmp)
            cold = cold_rounds(work, args.registry, tag, args.rounds) if args.cold else []
            repositories += [
                f"bench/torch-{tag}-cold{n}-{side}"
                for n in range(len(cold))
                for side in ("modelpack", "hand")
            ]
            warm = warm_and_second(work, args.registry, tag, repositories)
            warm.update(one_dependency(work, args.registry, tag, repositories))
    finally:
        delete_repositories(args.registry, repositories)
    report(cold, warm)
    return 0


def warm_and_second(work: Path, registry: str, tag: str, repositories: list[str]) -> dict[str, float]:
    """The warm scenario on the shared engine and the second model's bytes; engine tags removed.

    Warm is the team set-up base-images/README.md describes: the torch base is in the engine and
    in the base registry (``REGISTRY/bench-bases``, published once with ``modelpack base push``,
    untimed), so its layers are mounted, not sent. The second model is a different model on the
    same torch: another method text and one more requirement, so its dependency layer is its own.
    """
    bases = f"{registry}/bench-bases"
    env = {"MODELPACK_BASE_REGISTRY": bases}
    run([sys.executable, "-m", "modelpack", "base", "push", TORCH_BASE, "--base-registry", bases])
    repo_mp, repo_hand, repo_two = (f"bench/torch-{tag}-{name}" for name in ("warm-mp", "warm-hand", "mp2"))
    repositories += [repo_mp, repo_hand, repo_two]
    first = copy_example(work / "mp1", tag)
    mp_seconds, mp_result = modelpack_build(first, f"{registry}/{repo_mp}", env)
    hand = copy_example(work / "hand1", tag + "h")
    hand_seconds, hand_bytes = hand_build(hand, registry, repo_hand)
    second = copy_example(work / "mp2", tag + "b")
    model_py = second / "1" / "model.py"
    model_py.write_text(model_py.read_text().replace("The network's 3 outputs", "The 3 outputs"))
    requirements = second / "requirements.txt"
    requirements.write_text(requirements.read_text() + "toolz==1.0.0\n")
    _, second_result = modelpack_build(second, f"{registry}/{repo_two}", env)
    layers = manifest_layers(registry, repo_two, str(second_result["version"]))
    remove_local_tags(registry, [repo_mp, repo_hand, repo_two, f"bench-bases/{TORCH_BASE.split(':')[0]}"])
    return {
        "mp_seconds": mp_seconds,
        "mp_bytes": int(str(mp_result.get("bytes_pushed") or 0)),
        "hand_seconds": hand_seconds,
        "hand_bytes": hand_bytes,
        "torch_bytes": max(int(str(layer["size"])) for layer in layers),
        "second_bytes": int(str(second_result.get("bytes_pushed") or 0)),
    }


def one_dependency(work: Path, registry: str, tag: str, repositories: list[str]) -> dict[str, float]:
    """A requirement added to a torch model that is built and pushed already, both ways.

    By hand is the Dockerfile a team with a torch base writes: ``FROM`` that base as the team's
    registry holds it (pulled first, untimed, so the engine knows its layers are there and
    pushes only new ones), ``pip install -r requirements.txt``, ``COPY . /app``. Each side builds
    and pushes its model once untimed, then again with ``six`` added: that second build is timed.
    """
    bases = f"{registry}/bench-bases"
    base_ref = f"{bases}/{TORCH_BASE}"
    cli = docker_cli()
    run([cli, "pull", base_ref])
    repo_mp, repo_hand = (f"bench/torch-{tag}-dep-{side}" for side in ("mp", "hand"))
    repositories += [repo_mp, repo_hand]
    env = {"MODELPACK_BASE_REGISTRY": bases}
    model = copy_example(work / "dep-mp", tag + "d")
    modelpack_build(model, f"{registry}/{repo_mp}", env)
    add_requirement(model)
    mp_seconds, mp_result = modelpack_build(model, f"{registry}/{repo_mp}", env)
    hand = copy_example(work / "dep-hand", tag + "e")
    (hand / "Dockerfile").write_text(HAND_DOCKERFILE.format(base=base_ref))
    hand_push(hand, f"{registry}/{repo_hand}:v1")
    add_requirement(hand)
    hand_seconds = hand_push(hand, f"{registry}/{repo_hand}:v2")
    remove_local_tags(registry, [repo_mp, repo_hand, f"bench-bases/{TORCH_BASE.split(':')[0]}"])
    return {
        "dep_mp_seconds": mp_seconds,
        "dep_mp_bytes": int(str(mp_result.get("bytes_pushed") or 0)),
        "dep_hand_seconds": hand_seconds,
    }


def remove_local_tags(registry: str, repositories: list[str]) -> None:
    """Untag every local image of these registry repositories: keep the engine lean."""
    for repository in repositories:
        listed = subprocess.run(
            ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"{registry}/{repository}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if listed:
            subprocess.run(["docker", "rmi", *listed], capture_output=True, check=False)


def add_requirement(model_dir: Path) -> None:
    requirements = model_dir / "requirements.txt"
    requirements.write_text(requirements.read_text() + "six==1.16.0\n")


def report(cold: list[dict[str, tuple[float, int]]], warm: dict[str, float]) -> None:
    if cold:
        print(
            "build+push, cold (fresh engine with only the OS/Python image; modelpack builds the torch base):"
        )
        ratios = []
        for number, measured in enumerate(cold, 1):
            (mp_s, mp_b), (hand_s, hand_b) = measured["modelpack"], measured["hand"]
            ratios.append(hand_s / mp_s)
            print(
                f"  round {number}  modelpack {mp_s:7.1f} s, pushed {mp_b:>13,} bytes | by hand {hand_s:7.1f} s, "
                f"pushed {hand_b:>13,} bytes | {hand_s / mp_s:5.2f}x"
            )
        spread = (max(ratios) - min(ratios)) / 2
        print(
            f"  ratio            {sum(ratios) / len(ratios):5.2f}x faster (by hand / modelpack), +-{spread:.2f} between rounds"
        )
    print("build+push, warm (torch base present):")
    print(f"  modelpack        {warm['mp_seconds']:8.1f} s   pushed {int(warm['mp_bytes']):>13,} bytes")
    print(
        f"  by hand          {warm['hand_seconds']:8.1f} s   image  {int(warm['hand_bytes']):>13,} bytes (compressed layers)"
    )
    print(f"  ratio            {warm['hand_seconds'] / warm['mp_seconds']:8.1f}x faster (target: 3x warm)")
    print("second model on the same torch:")
    print(
        f"  modelpack pushed {int(warm['second_bytes']):>13,} bytes; torch layer {int(warm['torch_bytes']):,} bytes"
    )
    print(
        f"  share            {100 * warm['second_bytes'] / warm['torch_bytes']:8.3f} % of the torch bytes (target: under 1%)"
    )
    print(
        "one dependency added to a pushed model (by hand: FROM the torch base, pulled from the team's registry):"
    )
    print(
        f"  modelpack        {warm['dep_mp_seconds']:8.1f} s   pushed {int(warm['dep_mp_bytes']):>13,} bytes"
    )
    print(f"  by hand          {warm['dep_hand_seconds']:8.1f} s")
    print(
        f"  ratio            {warm['dep_mp_seconds'] / warm['dep_hand_seconds']:8.2f} (modelpack / by hand)"
    )


if __name__ == "__main__":
    sys.exit(main())
