"""`modelpack build` end to end: real model directory, local debootstrap base image, real
dockerd and registry. Covers the CLI, layer reuse on a code change, a failing requirement
and the absence of secrets in the final image."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from clirun import run_modelpack

from modelpack.errors import EngineError
from modelpack.oci.registry import RegistryClient

pytestmark = pytest.mark.e2e

SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def modelpack(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
    return run_modelpack(*args, env=env, stdin=stdin, timeout=900)


def test_cli_build_rebuild_and_code_change(
    hello_dir_unlocked: Path, registry_repo: Any, tmp_path: Path
) -> None:
    # a cache of its own: records of earlier runs would let the layers be mounted, not pushed
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}

    def mp(*args: str, env: dict[str, str] | None = None) -> Any:
        return modelpack(*args, env={**cache, **(env or {})})

    first = mp("build", str(hello_dir_unlocked), "--tag", registry_repo.ref, "--push", "--json")
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)
    assert one["version"] == "v1" and one["pushed"] and one["bytes_pushed"] > 0
    assert {layer["status"] for layer in one["layers"]} <= {"pushed", "mounted", "present"}
    # the runtime stage's layers went up from modelpack, gzipped (not the plain tars `docker save`
    # gives): each pushed blob is a gzip whose content is the layer (its sha256 the diff id)
    runtime_layers = one["layers"][:-1]
    pushed_layers = [layer for layer in runtime_layers if layer["status"] == "pushed"]
    assert pushed_layers, runtime_layers
    client = RegistryClient(registry_repo.registry)
    try:
        for layer in pushed_layers:
            blob = client.get_blob(registry_repo.name, layer["digest"])
            assert blob[:2] == b"\x1f\x8b" and layer["digest"] != layer["diff_id"], layer
            assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == layer["diff_id"]
            assert len(blob) == layer["size"]
    finally:
        client.close()
    assert one["bytes_pushed"] >= sum(
        layer["size"] for layer in runtime_layers if layer["status"] == "pushed"
    )

    # unchanged: answered from the record of the first push (confirmed by the registry), no engine
    offline = {"DOCKER_HOST": "unix:///nonexistent"}
    again = mp("build", str(hello_dir_unlocked), "--tag", registry_repo.ref, "--push", "--json", env=offline)
    assert again.returncode == 0, again.stderr
    same = json.loads(again.stdout)
    assert (same["version"], same["digest"], same["pushed"], same["bytes_pushed"]) == (
        "v1",
        one["digest"],
        False,
        0,
    )
    assert same["supply_chain"]["manifest_digest"] == one["supply_chain"]["manifest_digest"]

    model_py = hello_dir_unlocked / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# a one-line change\n")
    changed = mp("build", str(hello_dir_unlocked), "--tag", registry_repo.ref, "--push", "--json")
    assert changed.returncode == 0, changed.stderr
    two = json.loads(changed.stdout)
    assert two["version"] == "v2"
    statuses = [layer["status"] for layer in two["layers"]]
    assert len(statuses) == len(one["layers"])
    # Every layer before the model-code layer (base, deps, runtime, checkpoints, config) is
    # reused; only the code layer (the last one) is uploaded.
    assert set(statuses[:-1]) == {"present"} and statuses[-1] == "pushed", statuses
    pushed_sizes = [layer["size"] for layer in two["layers"] if layer["status"] == "pushed"]
    total = sum(layer["size"] for layer in two["layers"])
    assert sum(pushed_sizes) <= two["bytes_pushed"] < max(pushed_sizes) + 50_000 < total / 100

    listing = mp("versions", registry_repo.ref, "--json")
    assert listing.returncode == 0, listing.stderr
    versions = json.loads(listing.stdout)["versions"]
    assert [v["version"] for v in versions] == ["v2", "v1"]
    assert versions[0]["digest"] == two["digest"] and versions[0]["created"]

    remote = mp("inspect", "--remote", "--json", f"{registry_repo.ref}:v2")
    assert remote.returncode == 0, remote.stderr
    labels = json.loads(remote.stdout)["labels"]
    assert labels and all(key.startswith("dev.modelpack.") for key in labels)


def test_failing_requirement_is_named_and_nothing_is_pushed(
    hello_dir_unlocked: Path, registry_repo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib
    import tempfile

    from modelpack.image.builder import build

    lock_stage = importlib.import_module("modelpack.pipeline.locking")
    lock_file = hello_dir_unlocked / "requirements.lock"
    lock_file.write_text("nosuchpkg-modelpack-test==9.9.9 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    fake = lock_stage.LockResult(
        path=lock_file, up_to_date_before=True, packages=(), input_digest="sha256:" + "0" * 64
    )
    monkeypatch.setattr(lock_stage, "lock", lambda *args, **kwargs: fake)
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    with pytest.raises(EngineError) as failure:
        build(
            hello_dir_unlocked,
            repository=registry_repo.ref,
            push=True,
            settings=_settings(ca_bundle=SYSTEM_CA),
        )
    message = failure.value.message
    assert "nosuchpkg-modelpack-test" in message and "\n" not in message
    assert registry_repo.tags() == []
    assert list(temp_root.iterdir()) == []  # temporary context removed


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_unreachable_engine_and_registry(hello_dir_unlocked: Path, registry: str) -> None:
    no_engine = modelpack(
        "build",
        str(hello_dir_unlocked),
        "--tag",
        f"{registry}/modelpack-test/x",
        env={"DOCKER_HOST": "unix:///nonexistent"},
    )
    assert no_engine.returncode == 1
    assert no_engine.stderr.strip().splitlines()[-1].startswith("error: cannot reach the Docker engine")
    assert "Traceback" not in no_engine.stderr

    closed = f"127.0.0.1:{_closed_port()}/modelpack-test/x"
    no_registry = modelpack("build", str(hello_dir_unlocked), "--tag", closed, "--push")
    assert no_registry.returncode == 1
    assert "cannot connect" in no_registry.stderr.strip().splitlines()[-1]
    assert "Traceback" not in no_registry.stderr


def test_registry_password_is_read_from_stdin_and_never_printed(
    hello_dir_unlocked: Path, registry_repo: Any
) -> None:
    result = modelpack(
        "build",
        str(hello_dir_unlocked),
        "--tag",
        registry_repo.ref,
        "--push",
        "--registry-username",
        "someone",
        "--registry-password-stdin",
        stdin="pw-not-needed-s3cr3t\n",
    )
    # the test registry has no auth, so the credentials are simply not needed
    assert result.returncode == 0, result.stderr
    assert "pw-not-needed-s3cr3t" not in result.stdout + result.stderr


def _settings(**values: Any) -> Any:
    import importlib

    render_stage = importlib.import_module("modelpack.pipeline.rendering")
    return render_stage.BuildSettings(**values)


@pytest.mark.parametrize("push", [False, True], ids=["engine-built", "pushed-and-composed"])
def test_final_image_holds_no_secrets(
    hello_dir_unlocked: Path,
    registry_repo: Any,
    docker_client: Any,
    tmp_path: Path,
    push: bool,
    private_wheel_index: Any,
) -> None:
    from modelpack.image.builder import build

    marker = "MODELPACK-CA-MARKER-5f1d9a"
    credential = private_wheel_index.credentials.split(":", 1)[1]  # the loopback index requires it
    bundle = tmp_path / "corporate-ca.pem"
    bundle.write_text(f"# {marker}\n" + SYSTEM_CA.read_text())
    index_url = private_wheel_index.url
    steps: list[str] = []
    result = build(
        hello_dir_unlocked,
        repository=registry_repo.ref,
        push=push,
        settings=_settings(ca_bundle=bundle, index_url=index_url),
        progress=lambda event: steps.append(event.message) if event.stage == "step" else None,
    )
    # the builder stage did get both (so the scan below is not vacuous)
    assert any("ca-bundle" in step for step in steps) and any("PIP_INDEX_URL" in step for step in steps)
    # the lock (uv) and the builder stage's pip fetched from the index with the credential
    assert any(path.startswith("/files/six-") for path in private_wheel_index.paths())
    expected = "Basic " + base64.b64encode(private_wheel_index.credentials.encode()).decode()
    assert expected in private_wheel_index.authorizations()
    archive = tmp_path / "image.tar"
    with archive.open("wb") as handle:
        for chunk in docker_client.images.get(result.image).save(named=True):
            handle.write(chunk)
    needles = [marker.encode(), credential.encode(), index_url.encode()]
    found: list[str] = []
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member)
            assert data is not None
            content = data.read()
            if member.name.endswith("layer.tar"):
                found += _scan_layer(content, needles, member.name)
            else:  # config (with history), manifest.json, repositories
                found += [f"{member.name}: {n.decode()}" for n in needles if n in content]
    history = json.dumps(docker_client.api.history(result.image)).encode()
    inspect = json.dumps(docker_client.api.inspect_image(result.image)).encode()
    found += [f"history/inspect: {n.decode()}" for n in needles if n in history or n in inspect]
    assert found == []
    shutil.rmtree(tmp_path / "hello", ignore_errors=True)


def _scan_layer(content: bytes, needles: list[bytes], name: str) -> list[str]:
    import io

    hits: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(content)) as layer:
        for entry in layer.getmembers():
            if not entry.isfile():
                continue
            handle = layer.extractfile(entry)
            data = handle.read() if handle else b""
            hits += [f"{name}:{entry.name}: {n.decode()}" for n in needles if n in data]
    return hits


def _container_view(docker_client: Any, image: str) -> tuple[dict[str, Any], str]:
    """What a container of `image` gets: its settings and every file under /app (mode, owner, hash)."""
    config = docker_client.api.inspect_image(image)["Config"]
    keys = ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "ExposedPorts", "Healthcheck", "Labels")
    listing = docker_client.containers.run(
        image,
        entrypoint=["/bin/sh", "-c"],
        command=[
            "cd /app && find . -printf '%p %y %m %U:%G %s\\n' | sort && find . -type f | sort | xargs sha256sum"
        ],
        user="0",
        network_mode="host",
        remove=True,
    )
    return {key: config.get(key) for key in keys}, listing.decode()


def test_pushed_image_is_what_the_dockerfile_builds(
    hello_dir_unlocked: Path, registry_repo: Any, docker_client: Any, tmp_path: Path
) -> None:
    """`build --push` composes the final stage itself; a plain `docker build` of the rendered
    Dockerfile must give a container the same files and settings."""
    from dataclasses import replace

    from modelpack.image.builder import build
    from modelpack.pipeline.locking import lock
    from modelpack.pipeline.rendering import render
    from modelpack.pipeline.resolver import resolve
    from modelpack.project.config import load
    from modelpack.project.methods import signature

    settings = _settings(ca_bundle=SYSTEM_CA)
    pushed = build(hello_dir_unlocked, repository=registry_repo.ref, push=True, settings=settings)
    assert pushed.builder is not None and pushed.builder.name == "buildkit"  # the default here
    settings = replace(settings, builder=pushed.builder.name)
    model_dir = load(hello_dir_unlocked)
    resolved = resolve(model_dir)
    rendered = render(
        model_dir,
        tmp_path / "context",
        resolved=resolved,
        lock=lock(model_dir, resolved=resolved),
        signature=signature(hello_dir_unlocked).signature,
        settings=settings,
    )
    assert pushed.content_tag[2:] == rendered.content_digest[7:23]
    by_hand = f"{registry_repo.ref}:by-hand"
    # by hand: BuildKit through Debian's CLI, the CA bundle as the secret the Dockerfile names
    command = ["/usr/bin/docker", "build", "--network", "host", "-t", by_hand, str(rendered.out_dir)]
    command[2:2] = ["--secret", f"id=modelpack-ca-bundle,src={SYSTEM_CA}"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    try:
        ours = _container_view(docker_client, pushed.image)
        theirs = _container_view(docker_client, by_hand)
        assert ours[0] == theirs[0]
        assert ours[1] == theirs[1] and "./1/model.py f 644 0:0" in ours[1]
        layers = docker_client.api.inspect_image(pushed.image)["RootFS"]["Layers"]
        assert len(layers) == len(docker_client.api.inspect_image(by_hand)["RootFS"]["Layers"])
        # the engine holds exactly what the registry holds
        assert docker_client.api.inspect_image(pushed.image)["Id"] == _registry_config_digest(
            registry_repo, pushed
        )
    finally:
        docker_client.api.remove_image(by_hand)


def _registry_config_digest(registry_repo: Any, result: Any) -> str:
    from modelpack.oci.registry import RegistryClient

    with RegistryClient(registry_repo.registry) as client:
        return str(client.get_manifest(registry_repo.name, result.digest).json["config"]["digest"])


def test_a_record_the_registry_contradicts_is_not_believed(
    hello_dir_unlocked: Path, registry_repo: Any
) -> None:
    first = modelpack("build", str(hello_dir_unlocked), "--tag", registry_repo.ref, "--push", "--json")
    assert first.returncode == 0, first.stderr
    from modelpack.oci.registry import RegistryClient

    with RegistryClient(registry_repo.registry) as client:  # the registry lost the image
        client.delete_manifest(registry_repo.name, json.loads(first.stdout)["digest"])
    # so the pipeline runs, and it needs the engine
    offline = modelpack(
        "build", str(hello_dir_unlocked), "--tag", registry_repo.ref, "--push",
        env={"DOCKER_HOST": "unix:///nonexistent"},
    )  # fmt: skip
    assert offline.returncode == 1 and "cannot reach the Docker engine" in offline.stderr
    rebuilt = modelpack("build", str(hello_dir_unlocked), "--tag", registry_repo.ref, "--push", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["pushed"]


def test_code_change_reuses_the_runtime_image(
    hello_dir_unlocked: Path, registry_repo: Any, docker_client: Any
) -> None:
    first = modelpack("build", str(hello_dir_unlocked), "--tag", registry_repo.ref, "--push", "--json")
    assert first.returncode == 0, first.stderr
    model_py = hello_dir_unlocked / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# changed\n")
    second = modelpack("build", str(hello_dir_unlocked), "--tag", registry_repo.ref, "--push", "--json")
    assert second.returncode == 0, second.stderr
    assert "runtime stage of" in second.stderr and "unchanged" in second.stderr
    assert "Step " not in second.stderr  # the engine built nothing
    result = json.loads(second.stdout)
    image = docker_client.api.inspect_image(result["image"])
    assert image["Config"]["Labels"]["dev.modelpack.model-id"]
    out = docker_client.containers.run(
        result["image"], entrypoint=["/bin/sh", "-c"], command=["tail -n 1 /app/1/model.py"], remove=True
    )
    assert out.decode().strip() == "# changed"
