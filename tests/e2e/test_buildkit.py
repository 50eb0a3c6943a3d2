"""BuildKit builds on an engine of the test's own (a second dockerd, see `second_engine`).

* Secrets: a build with a hub token (`checkpoints.when: build`), an index URL with credentials
  and a CA bundle leaves none of them anywhere in that engine: not in any image (untagged
  intermediates included: history, config), not in the build cache records, not in any file
  of its data root.
* Remote builder: the build and the push go through DOCKER_HOST; the shared engine gets nothing.
* Registry cache: build and push with --cache-registry, wipe the engine (images and build
  cache), build again: the dependency step is CACHED (BuildKit's own step log says so).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import INDEX_VARIABLES, run_modelpack
from wheelindex import PROBE, WheelIndex, make_wheel

from modelpack.oci.registry import RegistryClient
from modelpack.supply.record import fetch_record, find_records

pytestmark = pytest.mark.e2e

TOKEN = "hf_" + uuid.uuid4().hex  # the hub token of this test run
PYPI = "https://pypi.org/simple"
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")
DEPS_STEP = "] RUN --mount=type=bind,source=builder"  # the dependency step, as the step log names it


def modelpack(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed CLI in a subprocess; index variables only from `env`."""
    return run_modelpack(*args, env=env, without=INDEX_VARIABLES)


@pytest.fixture()
def hub(hubserver: Any) -> Iterator[Any]:
    repo = hubserver.HubRepo("acme/secret-weights", private=True)  # needs the token
    repo.add_commit({"config.json": b"{}", "model.safetensors": os.urandom(4096)})
    with hubserver.HubServer([repo], tokens=[TOKEN]) as server:
        yield server


def _files_containing(root: Path, needles: dict[str, bytes]) -> list[str]:
    """Every regular file under `root` holding one of `needles` (name: where)."""
    found: list[str] = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{label}: {path}" for label, needle in needles.items() if needle in data]
    return found


def test_buildkit_secrets_never_reach_the_engine_and_the_build_runs_remotely(
    second_engine: Any,
    hub: Any,
    registry_repo: Any,
    docker_client: Any,
    tmp_path: Path,
    copy_example: Callable[..., Path],
) -> None:
    password = "pw" + uuid.uuid4().hex
    marker = "modelpack-ca-marker-" + uuid.uuid4().hex
    bundle = tmp_path / "ca-bundle.crt"  # the system CAs (PyPI must verify) plus a unique marker line
    bundle.write_text(SYSTEM_CA.read_text() + f"\n# {marker}\n")
    (tmp_path / "wheels").mkdir()
    wheel = make_wheel(tmp_path / "wheels", PROBE, f'TOKEN = "{uuid.uuid4().hex}"\n')
    model = copy_example("hello", tmp_path / "model", skip=("requirements.lock",))
    requirements = model / "requirements.txt"
    requirements.write_text(requirements.read_text() + f"{PROBE}==0.1.0\n")
    config = model / "config.yaml"
    config.write_text(
        config.read_text()
        + "checkpoints:\n  type: huggingface\n  repo_id: acme/secret-weights\n  when: build\n"
    )
    with WheelIndex(wheel.parent) as index:
        index_url = index.url_with(f"user:{password}")  # any credentials: the build must hide them
        env = {
            "DOCKER_HOST": second_engine.host,
            "HF_TOKEN": TOKEN,
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf-home"),
            "XDG_CACHE_HOME": str(tmp_path / "xdg"),
            "UV_INDEX_URL": index_url,
            "UV_EXTRA_INDEX_URL": PYPI,
        }
        built = modelpack(
            ["build", str(model), "--tag", registry_repo.ref, "--push", "--ca-bundle", str(bundle), "--json"],
            env,
        )
        assert built.returncode == 0, built.stderr
        assert "/files/" + wheel.name in index.paths()  # the build's uv asked the index with the URL
    result = json.loads(built.stdout)
    assert result["builder"]["name"] == "buildkit" and result["builder"]["reason"].startswith("default")
    assert result["pushed"] and result["checkpoints"]
    assert "builder: buildkit (default" in built.stderr

    needles = {"hub token": TOKEN, "index password": password, "CA bundle": marker}
    for label, needle in needles.items():
        assert needle not in built.stdout + built.stderr, label
    # every image of the engine (untagged intermediates included): history and config
    ids = sorted(set(second_engine.docker("image", "ls", "--all", "--quiet", "--no-trunc").stdout.split()))
    assert len(ids) >= 2
    for image_id in ids:
        seen = second_engine.docker("history", "--no-trunc", image_id).stdout
        seen += second_engine.docker("image", "inspect", image_id).stdout
        for label, needle in needles.items():
            assert needle not in seen, f"{label} in image {image_id}"
    # the build cache records it lists
    import docker

    client = docker.DockerClient(base_url=second_engine.host)
    try:
        cache = client.df().get("BuildCache") or []
    finally:
        client.close()
    records = json.dumps(cache)
    assert any("mount / from exec" in str(r.get("Description")) for r in cache), records[:2000]
    for label, needle in needles.items():
        assert needle not in records, f"{label} in the build cache records"
    # and no file anywhere in the engine's store (layers, cache database, content store)
    second_engine.stop()  # flushed and closed
    leaks = _files_containing(second_engine.data_root, {k: v.encode() for k, v in needles.items()})
    assert leaks == []
    # the shared engine took no part: the build, the push and the local copy are the remote's
    assert docker_client.images.list(name=registry_repo.ref) == []


def test_registry_cache_lets_a_wiped_engine_skip_the_dependency_step(
    second_engine: Any, registry: str, registry_repo: Any, tmp_path: Path, copy_example: Callable[..., Path]
) -> None:
    # the base image comes from the registry, as on a fresh runner (the wipe removes it)
    base = f"{registry}/modelpack-test/base-{uuid.uuid4().hex[:8]}/python:3.11"
    second_engine.docker("tag", "modelpack-base/python:3.11", base)
    second_engine.docker("push", base)
    model = copy_example("hello", tmp_path / "model")
    config = model / "config.yaml"
    config.write_text(config.read_text().replace("build_info:\n", f"build_info:\n  image: {base}\n", 1))
    assert base in config.read_text()
    cache = f"{registry_repo.ref}-cache"
    env = {"DOCKER_HOST": second_engine.host, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    args = ["build", str(model), "--tag", registry_repo.ref, "--push", "--cache-registry", cache, "--json"]

    first = modelpack(args, env)
    assert first.returncode == 0, first.stderr
    assert (
        f"{DEPS_STEP}" in first.stderr and f"exporting the build cache to {cache}:buildcache" in first.stderr
    )
    deps_lines = [line for line in first.stderr.splitlines() if DEPS_STEP in line]
    assert not any(line.endswith("CACHED") for line in deps_lines), deps_lines

    # the cache image was written from the layers the push put there (the base's mounted from its
    # registry copy, the rest gzipped by modelpack), not pushed by the engine, which would have
    # gzipped them all once more
    client = RegistryClient(registry)
    try:
        cache_layers = client.get_manifest(cache.split("/", 1)[1], "buildcache").json["layers"]
        final = json.loads(first.stdout)
        image_layers = client.get_manifest(registry_repo.name, final["digest"]).json["layers"]
    finally:
        client.close()
    assert cache_layers == image_layers[:-1]
    assert all(layer["mediaType"].endswith(".diff.tar.gzip") for layer in cache_layers)

    second_engine.wipe()
    assert second_engine.docker("image", "ls", "--all", "--quiet").stdout.strip() == ""
    model_py = model / "1" / "model.py"  # a new version: built, not answered from a record
    model_py.write_text(model_py.read_text() + "\n# next version\n")
    again = modelpack([*args[:-1], "--verbose", "--json"], env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["version"] == "v2"
    deps_lines = [line for line in again.stderr.splitlines() if DEPS_STEP in line]
    assert any(line.endswith("CACHED") for line in deps_lines), again.stderr[-4000:]
    # the wiped engine had no base: BuildKit pulled it, and the signed record still names its digest
    assert second_engine.docker("image", "ls", "--quiet", base, check=False).stdout.strip() == ""
    built = json.loads(again.stdout)
    client = RegistryClient(registry)
    try:
        pushed_base = client.head_manifest(base.split("/", 1)[1].rsplit(":", 1)[0], "3.11")
        assert pushed_base is not None and built["base_image_digest"] == pushed_base.digest
        (found,) = find_records(client, registry_repo.name, built["digest"])
        _, record = fetch_record(client, registry_repo.name, found.digest)
    finally:
        client.close()
    assert (record.base_image.reference, record.base_image.digest) == (base, pushed_base.digest)


def test_one_added_package_is_the_only_one_downloaded(
    second_engine: Any, registry_repo: Any, tmp_path: Path, copy_example: Callable[..., Path]
) -> None:
    """The uv cache mount keeps what the last build downloaded: adding one requirement fetches
    that one package (the loopback index's download log), and uv prepares only it (its own log)."""
    run = uuid.uuid4().hex[:8]
    (tmp_path / "wheels").mkdir()
    first, added = (make_wheel(tmp_path / "wheels", f"modelpack-e2e-{name}-{run}") for name in ("kept", "added"))
    model = copy_example("hello", tmp_path / "model", skip=("requirements.lock",))
    requirements = model / "requirements.txt"
    requirements.write_text(requirements.read_text() + f"modelpack-e2e-kept-{run}==0.1.0\n")
    args = ["build", str(model), "--tag", registry_repo.ref, "--verbose", "--json"]
    with WheelIndex(tmp_path / "wheels", like_pypi=True) as index:
        env = {
            "DOCKER_HOST": second_engine.host,
            "XDG_CACHE_HOME": str(tmp_path / "xdg"),
            "UV_INDEX_URL": index.url,
            "UV_EXTRA_INDEX_URL": PYPI,
        }
        built = modelpack(args, env)
        assert built.returncode == 0, built.stderr[-4000:]
        assert index.downloads() == [first.name]
        requirements.write_text(requirements.read_text() + f"modelpack-e2e-added-{run}==0.1.0\n")
        again = modelpack(args, env)
        assert again.returncode == 0, again.stderr[-4000:]
        assert index.downloads() == [first.name, added.name]  # the kept package came from the cache mount
        deps_output = again.stderr.split(DEPS_STEP, 1)[1]
        assert "Prepared 1 package" in deps_output, deps_output[-3000:]

        # a set not built before, every wheel of it in the cache mount: the step asks no index at all
        requirements.write_text(requirements.read_text().replace(f"modelpack-e2e-kept-{run}==0.1.0\n", ""))
        relocked = modelpack(["lock", str(model)], env)
        assert relocked.returncode == 0, relocked.stderr
        index.clear()
        third = modelpack(args, env)
        assert third.returncode == 0, third.stderr[-4000:]
        assert "Installed" in third.stderr.split(DEPS_STEP, 1)[1], third.stderr[-3000:]  # the step ran
        assert index.paths() == [], third.stderr[:6000]
