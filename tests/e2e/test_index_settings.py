"""One package index for the lock and the image: `modelpack lock` (uv on the host) and the pip
inside `modelpack build` ask the index named by UV_INDEX_URL, or else PIP_INDEX_URL.

A PEP 503 "simple" index on loopback serves one tiny wheel made here, with a token unique to
the test, and records every request. The model requires that wheel; the rest of what the lock
needs (modelpack's runtime dependencies) comes from PyPI as the extra index.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import INDEX_VARIABLES, run_modelpack
from wheelindex import PROBE, WheelIndex, make_wheel

pytestmark = pytest.mark.e2e

PROBE_MODULE = PROBE.replace("-", "_")
VERSION = "0.1.0"
PYPI = "https://pypi.org/simple"


@pytest.fixture
def probe_wheel(tmp_path: Path) -> Path:
    token = secrets.token_hex(8)  # a new wheel hash each time: no engine cache can answer for pip
    (tmp_path / "wheels").mkdir()
    return make_wheel(tmp_path / "wheels", PROBE, f'TOKEN = "{token}"\n', VERSION)


@pytest.fixture
def probe_index(probe_wheel: Path) -> Iterator[WheelIndex]:
    """The probe wheel's own index on loopback (tests/wheelindex.py), logging every path."""
    with WheelIndex(probe_wheel.parent) as index:
        yield index


@pytest.fixture
def probe_model(tmp_path: Path, local_base_image: str, copy_example: Callable[..., Path]) -> Path:
    model = copy_example("hello", tmp_path / "probe-model", skip=("requirements.lock",))
    requirements = model / "requirements.txt"
    requirements.write_text(requirements.read_text() + f"{PROBE}=={VERSION}\n")
    return model


def modelpack(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, with the index variables of `env` only."""
    return run_modelpack(*args, env=env, without=INDEX_VARIABLES)


@pytest.mark.parametrize("prefix", ["UV", "PIP"])
def test_lock_and_the_build_ask_the_index_from_the_environment(
    prefix: str,
    probe_index: WheelIndex,
    probe_wheel: Path,
    probe_model: Path,
    registry_repo: Any,
    docker_client: Any,
) -> None:
    env = {f"{prefix}_INDEX_URL": probe_index.url, f"{prefix}_EXTRA_INDEX_URL": PYPI}
    page = f"/simple/{PROBE}/"
    download = f"/files/{probe_wheel.name}"

    locked = modelpack(["lock", str(probe_model), "--json"], env)
    assert locked.returncode == 0, locked.stderr
    assert page in probe_index.paths(), probe_index.paths()  # uv asked the loopback index
    wheel_hash = "sha256:" + hashlib.sha256(probe_wheel.read_bytes()).hexdigest()
    pinned = {p["name"]: p for p in json.loads(locked.stdout)["packages"]}
    assert pinned[PROBE]["version"] == VERSION and pinned[PROBE]["hashes"] == [wheel_hash]

    probe_index.clear()  # from here on, only the pip inside the build asks (the lock is reused)
    built = modelpack(
        ["build", str(probe_model), "--tag", registry_repo.ref, "--network", "host", "--json"], env
    )
    assert built.returncode == 0, built.stderr
    requested = probe_index.paths()
    assert page in requested and download in requested, requested

    image = json.loads(built.stdout)["image"]
    output = docker_client.containers.run(
        image,
        entrypoint=["/opt/venv/bin/python", "-c", f"import {PROBE_MODULE}; print({PROBE_MODULE}.TOKEN)"],
        network_mode="none",
        remove=True,
    )
    with zipfile.ZipFile(probe_wheel) as archive:
        expected = archive.read(f"{PROBE_MODULE}/__init__.py").decode().split('"')[1]
    assert output.decode().strip() == expected  # the image holds the wheel this index served


def _registry_blobs(registry: str, repository: str, digest: str) -> list[bytes]:
    """Every manifest and blob the registry holds for an image and what is attached to it
    (record, SBOM, signatures), layers decompressed."""
    import gzip

    from modelpack.oci.registry import RegistryClient

    found: list[bytes] = []
    with RegistryClient(registry) as client:
        pending, seen = [digest], set()
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            manifest = client.get_manifest(repository, current)
            found.append(manifest.raw)
            body = manifest.json
            for blob in [body.get("config") or {}, *(body.get("layers") or [])]:
                if blob.get("digest"):
                    data = client.get_blob(repository, str(blob["digest"]))
                    found.append(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
            pending.extend(str(m["digest"]) for m in body.get("manifests") or [])
            pending.extend(d.digest for d in client.referrers(repository, current))
    return found


@pytest.mark.parametrize("where", ["requirements.txt", "nested"])
def test_index_credentials_written_in_requirements_reach_no_part_of_the_image(
    where: str,
    tmp_path: Path,
    local_base_image: str,
    copy_example: Callable[..., Path],
    registry_repo: Any,
    docker_client: Any,
) -> None:
    """`--extra-index-url http://user:TOKEN@host/simple` in requirements.txt: lock and build use it
    (the index answers only with those credentials), and the token is in no layer, no history entry,
    no config, not in the signed record or the SBOM. `nested`: the option sits in a file that
    requirements.txt includes with `-r`, and counts exactly the same."""
    token = "tok-" + secrets.token_hex(8)
    (tmp_path / "wheels").mkdir()
    wheel = make_wheel(tmp_path / "wheels", PROBE, version=VERSION)
    with WheelIndex(wheel.parent, credentials=f"ci:{token}") as index:
        model = copy_example("hello", tmp_path / "cred-model", skip=("requirements.lock",))
        requirements = model / "requirements.txt"
        option = f"--extra-index-url {index.url}\n"  # index.url carries the credentials
        if where == "nested":
            (model / "deps").mkdir()
            (model / "deps" / "private.txt").write_text(option)
            option = "-r deps/private.txt\n"
        requirements.write_text(requirements.read_text() + f"{option}{PROBE}=={VERSION}\n")
        env = {"UV_INDEX_URL": PYPI}
        locked = modelpack(["lock", str(model), "--json"], env)
        assert locked.returncode == 0, locked.stderr
        index.clear()
        built = modelpack(["build", str(model), "--tag", registry_repo.ref, "--push", "--json"], env)
        assert built.returncode == 0, built.stderr
        assert f"/files/{wheel.name}" in index.paths()  # the build's pip used the credentials
    result = json.loads(built.stdout)
    assert token not in built.stdout + built.stderr + locked.stdout + locked.stderr
    for blob in _registry_blobs(registry_repo.registry, registry_repo.name, result["digest"]):
        assert token.encode() not in blob
    image = docker_client.images.get(result["image"])
    assert token not in json.dumps(image.attrs) and token not in json.dumps(image.history())
    shipped = docker_client.containers.run(
        result["image"], entrypoint=["cat", "/app/requirements.txt"], network_mode="none", remove=True
    )
    assert token.encode() not in shipped and PROBE.encode() in shipped
    if where == "nested":
        nested = docker_client.containers.run(
            result["image"], entrypoint=["cat", "/app/deps/private.txt"], network_mode="none", remove=True
        )
        assert token.encode() not in nested and b"127.0.0.1" not in nested
