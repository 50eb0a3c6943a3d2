"""Base images for real: a torch base from PyPI, the torch example on it, a Python 3.13 base made
offline, and a base that cannot be made.

The torch base is a few GB: it is built at most once per machine (`modelpack base build`
answers from the engine when it is there) and kept, like `modelpack-base/python:3.11`.
"""

from __future__ import annotations

import json
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dockerd
import pytest
from clirun import run_modelpack

TORCH_BASE = "modelpack-base/torch:2.5.1-py3.11-cu124"
PY313_BASE = "modelpack-base/python:3.13"
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
# a torch index nobody answers on: CPU models take the PyPI wheel (the base above), as here
UNREACHABLE_TORCH_INDEX = "http://127.0.0.1:9/whl"


def modelpack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_modelpack(
        *args, env={"MODELPACK_TORCH_INDEX_URL": UNREACHABLE_TORCH_INDEX, **(env or {})}, timeout=3600
    )


def docker(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def torch_base(docker_client: Any, local_base_image: str) -> str:
    """The torch base, built from PyPI by `modelpack base build` unless the engine has it."""
    done = modelpack("base", "build", TORCH_BASE, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bases"][0]["name"] == TORCH_BASE
    return TORCH_BASE


def test_torch_base_has_the_pinned_release_and_the_catalogs_default_cuda(torch_base: str) -> None:
    from modelpack.pipeline.catalog import load_catalog

    release = load_catalog().torch_release("2.5.1")
    assert release is not None
    probe = "import torch; print(torch.__version__.split('+')[0], torch.version.cuda)"
    ran = docker("run", "--rm", "--network", "none", torch_base, "python3", "-c", probe)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["2.5.1", release.default_cuda]
    # nothing of the build host stays: no CA bundle, no uv, no index settings
    leftovers = docker(
        "run", "--rm", "--network", "none", torch_base, "sh", "-c", "ls -A /tmp/modelpack-uv; env"
    )
    assert "ca.crt" not in leftovers.stdout and "SSL_CERT_FILE" not in leftovers.stdout
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", torch_base).stdout
    assert "BEGIN CERTIFICATE" not in history


def _expected_outputs(weights: Path, values: list[float]) -> list[float]:
    """The network's outputs computed from the safetensors bytes with plain Python (no torch)."""
    raw = weights.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    data = raw[8 + length :]

    def tensor(name: str) -> list[float]:
        start, end = header[name]["data_offsets"]
        return list(struct.unpack(f"<{(end - start) // 4}f", data[start:end]))

    w1, b1, w2, b2 = tensor("0.weight"), tensor("0.bias"), tensor("2.weight"), tensor("2.bias")
    hidden = [max(0.0, sum(w1[4 * j + i] * values[i] for i in range(4)) + b1[j]) for j in range(8)]
    return [sum(w2[8 * k + j] * hidden[j] for j in range(8)) + b2[k] for k in range(3)]


def _call_offline(image: str, method: str, payload: dict[str, Any]) -> Any:
    """Run `image` with no network at all and call `method` from inside the container."""
    started = docker("run", "-d", "--network", "none", image)
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    script = (
        "import json, sys, time, urllib.request\n"
        "for _ in range(600):\n"
        "    try:\n"
        "        urllib.request.urlopen('http://127.0.0.1:8080/ready', timeout=2); break\n"
        "    except Exception:\n"
        "        time.sleep(0.2)\n"
        f"request = urllib.request.Request('http://127.0.0.1:8080/v1/methods/{method}', "
        "data=sys.argv[1].encode(), headers={'Content-Type': 'application/json'})\n"
        "print(urllib.request.urlopen(request, timeout=60).read().decode())\n"
    )
    try:
        called = docker("exec", container, "python", "-c", script, json.dumps(payload))
        assert called.returncode == 0, called.stderr + docker("logs", container).stderr
        return json.loads(called.stdout)["result"]
    finally:
        docker("rm", "-f", container)


def _build(model_dir: Path, repo: str, *extra: str) -> dict[str, Any]:
    done = modelpack("build", str(model_dir), "--tag", repo, "--ca-bundle", SYSTEM_CA, "--json", *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _manifest_layers(registry: str, repository: str, tag: str) -> list[dict[str, Any]]:
    from modelpack.oci.registry import RegistryClient

    with RegistryClient(registry) as client:
        layers: list[dict[str, Any]] = client.get_manifest(repository, tag).json["layers"]
    return layers


def _registry_blob_store() -> Path | None:
    """The blob folder of the registry on this machine (scripts/setup.sh's), when it is local."""
    root = dockerd.registry_root()
    return None if root is None else root / "docker/registry/v2/blobs/sha256"


def _new_blob_bytes(store: Path, digests: list[str], since: float) -> int:
    """Bytes of the given blobs that the registry stored after `since` (a file's mtime says when)."""
    total = 0
    for digest in digests:
        data = store / digest[7:9] / digest[7:] / "data"
        if data.stat().st_mtime >= since:
            total += data.stat().st_size
    return total


@pytest.fixture
def torch_repos(registry: str, docker_client: Any) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for repo in made:
        for image in docker_client.images.list(name=repo):
            for tag in image.tags:
                docker("rmi", tag)


def test_torch_example_builds_runs_offline_and_a_second_model_pushes_no_torch_bytes(
    torch_base: str,
    registry: str,
    tmp_path: Path,
    copy_example: Callable[..., Path],
    torch_repos: list[str],
) -> None:
    first = copy_example("torch-mlp", tmp_path / "torch-mlp")
    suffix = uuid.uuid4().hex[:8]
    repo_one = f"{registry}/modelpack-test/torch-mlp-{suffix}"
    repo_two = f"{registry}/modelpack-test/torch-mlp2-{suffix}"
    torch_repos.extend([repo_one, repo_two])

    built = _build(first, repo_one, "--push")
    assert built["base_image"] == torch_base
    values = [1.0, -2.0, 0.5, 3.0]
    answer = _call_offline(built["image"], "predict", {"values": values})
    assert answer == _expected_outputs(first / "1" / "checkpoints" / "mlp.safetensors", values)
    assert _call_offline(built["image"], "info", {}) == "torch 2.5.1+cu124 on cpu"

    # a different model on the same torch: its own code, same base
    second = copy_example("torch-mlp", tmp_path / "torch-mlp2")
    model_py = second / "1" / "model.py"
    model_py.write_text(model_py.read_text().replace('"""The network\'s 3 outputs', '"""The 3 outputs'))
    config = second / "config.yaml"
    config.write_text(config.read_text().replace("id: torch-mlp", "id: torch-mlp-two"))
    store = _registry_blob_store()
    started = time.time() - 1
    pushed = _build(second, repo_two, "--push")
    torch_layer = max(
        _manifest_layers(registry, repo_one.split("/", 1)[1], built["version"]),
        key=lambda layer: layer["size"],
    )
    layers_two = _manifest_layers(registry, repo_two.split("/", 1)[1], pushed["version"])
    assert torch_layer["digest"] in {layer["digest"] for layer in layers_two}
    assert pushed["bytes_pushed"] < torch_layer["size"] / 100
    if store is not None:  # what the registry itself stored for the second model
        assert (
            _new_blob_bytes(store, [layer["digest"] for layer in layers_two], started)
            < torch_layer["size"] / 100
        )


@pytest.fixture(scope="module")
def py313_base(docker_client: Any) -> str:
    """Python 3.13 made offline (debootstrap trixie) by `modelpack base build`; kept between runs."""
    done = modelpack("base", "build", PY313_BASE, "--json")
    assert done.returncode == 0, done.stderr
    return PY313_BASE


def test_python_313_base_builds_offline_and_hello_runs_on_it(
    py313_base: str, registry_repo: Any, tmp_path: Path, copy_example: Callable[..., Path]
) -> None:
    ran = docker(
        "run",
        "--rm",
        "--network",
        "none",
        py313_base,
        "python3",
        "-c",
        "import sys, venv; print(sys.version_info[:2])",
    )
    assert ran.stdout.strip() == "(3, 13)"
    hello = copy_example("hello", tmp_path / "hello", skip=("requirements.lock",))
    config = hello / "config.yaml"
    config.write_text(config.read_text().replace('python_version: "3.11"', 'python_version: "3.13"'))
    built = _build(hello, registry_repo.ref)
    assert built["base_image"] == py313_base
    assert _call_offline(built["image"], "predict", {"name": "trixie"}) == "Hello, trixie!"


def test_missing_base_without_a_reachable_source_fails_in_one_line_and_leaves_nothing(
    registry: str, registry_repo: Any, tmp_path: Path, copy_example: Callable[..., Path], docker_client: Any
) -> None:
    hello = copy_example("hello", tmp_path / "hello", skip=("requirements.lock",))
    config = hello / "config.yaml"
    config.write_text(config.read_text().replace('python_version: "3.11"', 'python_version: "3.12"'))
    prefix = f"{registry}/modelpack-test/bases-{uuid.uuid4().hex[:8]}"
    nowhere = f"{registry}/modelpack-test/no-such-{uuid.uuid4().hex[:8]}/python:{{python}}-slim"
    before = {image.id for image in docker_client.images.list(all=True)}
    done = modelpack(
        "build",
        str(hello),
        "--tag",
        registry_repo.ref,
        "--base-registry",
        prefix,
        env={"MODELPACK_PYTHON_IMAGE": nowhere, "UV_PYTHON_INSTALL_MIRROR": ""},
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors == [lines[-1]]
    assert errors[0].startswith("error: cannot build modelpack-base/python:3.12: ")  # ours, not a bug
    assert "could not be pulled ($MODELPACK_PYTHON_IMAGE" in errors[0]
    assert "UV_PYTHON_INSTALL_MIRROR" in errors[0]
    assert registry_repo.tags() == []
    assert docker_client.images.list(name=registry_repo.ref) == []
    assert docker("image", "inspect", "modelpack-base/python:3.12").returncode != 0
    assert docker("image", "inspect", f"{prefix}/modelpack-base/python:3.12").returncode != 0
    new = {image.id for image in docker_client.images.list(all=True)} - before
    labels = [docker("image", "inspect", "--format", "{{json .Config.Labels}}", i).stdout for i in new]
    assert not any("python:3.12" in text for text in labels)  # no half-made base (other tests may build)


def test_base_registry_copy_is_pulled_and_no_build_base_builds_nothing(
    py313_base: str, registry: str, registry_repo: Any, tmp_path: Path, copy_example: Callable[..., Path]
) -> None:
    prefix = f"{registry}/modelpack-test/bases-{uuid.uuid4().hex[:8]}"
    remote = f"{prefix}/{py313_base}"
    pushed = modelpack("base", "push", py313_base, "--base-registry", prefix, "--json")
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["bases"][0]["reference"] == remote
    hello = copy_example("hello", tmp_path / "hello", skip=("requirements.lock",))
    config = hello / "config.yaml"
    config.write_text(config.read_text().replace('python_version: "3.11"', 'python_version: "3.13"'))
    keep = f"modelpack-test/keep-base:{uuid.uuid4().hex[:8]}"  # holds the image while its names are gone
    assert docker("tag", py313_base, keep).returncode == 0
    try:
        docker("rmi", py313_base, remote)
        done = modelpack(
            "build", str(hello), "--tag", registry_repo.ref, "--base-registry", prefix, "--no-build-base"
        )
        assert done.returncode == 0, done.stderr
        assert f"pulled {remote}" in done.stderr
        assert "building modelpack-base" not in done.stderr
    finally:
        docker("tag", keep, py313_base)
        docker("rmi", keep, remote)
