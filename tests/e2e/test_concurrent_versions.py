"""Builds that push different content to one repository at the same moment (a CI matrix) each get
their own version, and every version points at the content of the build that reported it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modelpack.errors import RegistryError
from modelpack.image.push import delete_scratch
from modelpack.oci.reference import parse_repository
from modelpack.oci.registry import EMPTY_JSON, OCI_EMPTY, OCI_MANIFEST, RegistryClient, canonical_json
from modelpack.tags import claimed_version, is_content_tag, version_number

pytestmark = pytest.mark.e2e

BUILDS = 3  # parallel builds per round
ROUNDS = 2


def _start_build(model_dir: Path, repository: str, cache: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelpack", "build", str(model_dir), "--tag", repository, "--push", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
    )


def test_parallel_builds_of_different_content_never_share_a_version(
    tmp_path: Path, registry_repo: Any, local_base_image: str, copy_example: Any
) -> None:
    dirs = [copy_example("hello", tmp_path / f"m{i}") for i in range(BUILDS)]
    reported: dict[str, str] = {}  # version -> digest the build reported
    for round_ in range(ROUNDS):
        for i, model_dir in enumerate(dirs):
            model = model_dir / "1" / "model.py"
            model.write_text(model.read_text() + f"\n# build {i}, round {round_}\n")
        procs = [_start_build(d, registry_repo.ref, tmp_path / f"cache{i}") for i, d in enumerate(dirs)]
        for proc in procs:
            out, err = proc.communicate(timeout=900)
            assert proc.returncode == 0, err
            result = json.loads(out)
            assert result["version"] not in reported, f"{result['version']} reported twice"
            reported[result["version"]] = result["digest"]
    assert len(reported) == BUILDS * ROUNDS
    tags = registry_repo.tags()
    assert not [t for t in tags if claimed_version(t)], "claims left behind"
    with RegistryClient(registry_repo.registry) as client:
        for version, digest in reported.items():
            found = client.head_manifest(registry_repo.name, version)
            assert found is not None and found.digest == digest, f"{version} does not point at its build"
        versioned = {client.head_manifest(registry_repo.name, t).digest for t in tags if version_number(t)}  # type: ignore[union-attr]
        for tag in (t for t in tags if is_content_tag(t)):
            head = client.head_manifest(registry_repo.name, tag)
            assert head is not None and head.digest in versioned, f"content {tag} has no version"


def test_removing_a_scratch_tag_keeps_other_tags_on_the_same_manifest(registry_repo: Any) -> None:
    """Concurrent builds whose runtime stages are identical push identical scratch manifests: one
    build removing its scratch tag must not delete the manifest the other build's tag names."""
    repo = parse_repository(registry_repo.ref)
    with RegistryClient(repo.registry) as client:
        config, _ = client.ensure_blob(repo.repository, EMPTY_JSON, media_type=OCI_EMPTY)
        raw = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.to_dict(), "layers": []})
        first = client.put_manifest(repo.repository, "c-0000000000000001-runtime", raw)
        second = client.put_manifest(repo.repository, "c-0000000000000002-runtime", raw)
        assert first.digest == second.digest  # one manifest, two builds' scratch tags

        assert delete_scratch(client, repo, "c-0000000000000001-runtime") is None

        assert client.head_manifest(repo.repository, "c-0000000000000001-runtime") is None
        kept = client.head_manifest(repo.repository, "c-0000000000000002-runtime")
        assert kept is not None and kept.digest == first.digest
        assert client.get_manifest(repo.repository, "c-0000000000000002-runtime").json["layers"] == []


def test_tags_removed_while_other_clients_write_tags_are_gone(registry_repo: Any) -> None:
    """The real registry fails a manifest DELETE now and then while other clients rewrite tags
    (500, "invalid checksum digest format"), after dropping the manifest but not the tag: the
    tag stays listed and names nothing. That is how a scratch tag once outlived its build."""
    repo = parse_repository(registry_repo.ref)
    failures: list[str] = []

    def churn(worker: int) -> None:
        with RegistryClient(repo.registry) as client:
            config, _ = client.ensure_blob(repo.repository, EMPTY_JSON, media_type=OCI_EMPTY)
            for n in range(30):
                tag = f"c-{worker:08x}{n:08x}-runtime"
                body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.to_dict(), "layers": []}
                client.put_manifest(repo.repository, tag, canonical_json({**body, "annotations": {"n": tag}}))
                try:
                    client.untag(repo.repository, tag)
                except RegistryError as error:
                    failures.append(error.message)

    with RegistryClient(repo.registry) as client:  # the shared config blob exists before the race
        client.ensure_blob(repo.repository, EMPTY_JSON, media_type=OCI_EMPTY)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(churn, range(8)))
    assert failures == []
    assert registry_repo.tags() == []
