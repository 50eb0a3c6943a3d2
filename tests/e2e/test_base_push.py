"""`modelpack base push` for real: modelpack uploads the base (not the engine's push), another
engine pulls and runs it, and a model built on the pushed base mounts its layers.

Each test has its own modelpack cache (no record of an earlier push) and its own repositories.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clirun import run_modelpack

from modelpack.oci.registry import RegistryClient
from modelpack.supply.record import fetch_record, find_records

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600, check=False)


def _push(
    base: str, prefix: str, cache: Path, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], str]:
    done = run_modelpack(
        "base",
        "push",
        base,
        "--base-registry",
        prefix,
        "--json",
        env={"XDG_CACHE_HOME": str(cache), **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout)["bases"][0]
    return outcome, done.stderr


def test_base_push_uploads_a_pullable_image_and_sends_no_layer_twice(
    local_base_image: str, registry: str, second_engine: Any, tmp_path: Path
) -> None:
    """Pushed from an engine of its own that knows no copy of the base (a fresh runner), so every
    layer goes up; then that engine drops the image and pulls it back, and runs Python in it."""
    from modelpack.oci.registry import RegistryClient

    prefix = f"{registry}/modelpack-test/bases-{uuid.uuid4().hex[:8]}"
    remote = f"{prefix}/{local_base_image}"
    env = {"DOCKER_HOST": second_engine.host}
    image_id = second_engine.docker(
        "image", "inspect", "--format", "{{.Id}}", local_base_image
    ).stdout.strip()
    outcome, progress = _push(local_base_image, prefix, tmp_path / "cache", env)
    assert outcome["reference"] == remote and outcome["pushed"]
    assert {layer["status"] for layer in outcome["layers"]} == {"pushed"}
    # one line per layer, by modelpack's upload (the engine's push says no byte counts)
    assert progress.count(": Pushed (") == len(outcome["layers"])
    repository, tag = remote.split("/", 1)[1].rsplit(":", 1)
    with RegistryClient(registry) as client:
        manifest = client.get_manifest(repository, tag)
    assert manifest.digest == outcome["digest"] and manifest.media_type == DOCKER_MANIFEST
    assert manifest.json["config"]["digest"] == image_id  # the engine's own config, exactly
    assert {layer["mediaType"] for layer in manifest.json["layers"]} == {GZIP}

    again, _ = _push(local_base_image, prefix, tmp_path / "cache", env)
    assert {layer["status"] for layer in again["layers"]} == {"present"}
    assert again["bytes_pushed"] == 0 and again["digest"] == outcome["digest"]
    other, progress = _push(local_base_image, f"{prefix}-other", tmp_path / "cache", env)
    assert {layer["status"] for layer in other["layers"]} == {"mounted"}
    assert f"Mounted from {repository}" in progress and other["bytes_pushed"] == 0

    # the engine forgets the image, pulls it back (layers and all) and runs it: same image id
    second_engine.docker("rmi", local_base_image, remote, f"{prefix}-other/{local_base_image}")
    assert second_engine.docker("image", "inspect", image_id, check=False).returncode != 0
    second_engine.docker("pull", remote)
    pulled = second_engine.docker("image", "inspect", "--format", "{{.Id}}", remote).stdout.strip()
    assert pulled == image_id
    ran = second_engine.docker("run", "--rm", "--network", "none", remote, "python3", "-c", "print(6 * 7)")
    assert ran.stdout.strip() == "42"


def test_a_model_built_on_a_pushed_base_mounts_its_layers(
    local_base_image: str,
    registry: str,
    registry_repo: Any,
    tmp_path: Path,
    copy_example: Callable[..., Path],
) -> None:
    """The engine sets no repo digest for a base modelpack pushed: the build finds the copy by the
    record `base push` kept, and mounts the base's layers instead of uploading them."""
    prefix = f"{registry}/modelpack-test/bases-{uuid.uuid4().hex[:8]}"
    remote = f"{prefix}/{local_base_image}"
    cache = tmp_path / "cache"
    try:
        pushed, _ = _push(local_base_image, prefix, cache)
        assert docker("image", "inspect", "--format", "{{.RepoDigests}}", remote).stdout.strip() == "[]"
        hello = copy_example("hello", tmp_path / "hello")
        done = run_modelpack(
            "build", str(hello), "--tag", registry_repo.ref, "--base-registry", prefix, "--push", "--json",
            env={"XDG_CACHE_HOME": str(cache)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        built = json.loads(done.stdout)
        assert built["base_image"] == remote
        base_repository = remote.split("/", 1)[1].rsplit(":", 1)[0]
        for layer in pushed["layers"]:
            assert f"{layer['diff_id'][7:19]}: Mounted from {base_repository}" in done.stderr
            mine = next(m for m in built["layers"] if m["diff_id"] == layer["diff_id"])
            assert mine["digest"] == layer["digest"] and mine["status"] == "present"
        assert built["bytes_pushed"] < min(layer["size"] for layer in pushed["layers"])
        # the signed record names the base by the manifest `base push` put there, which one can
        # pull by, not by the engine's image id
        with RegistryClient(registry) as client:
            manifest = client.get_manifest(base_repository, remote.rsplit(":", 1)[1])
            (found,) = find_records(client, registry_repo.name, built["digest"])
            _, record = fetch_record(client, registry_repo.name, found.digest)
        assert manifest.digest == pushed["digest"]
        assert (record.base_image.reference, record.base_image.digest) == (remote, pushed["digest"])
    finally:
        docker("rmi", remote)
