"""`modelpack base push` through modelpack's layer path (`runtime_layers.image_in_registry`), not
the engine's push: gzip layers and the engine's exact config in a Docker schema 2 manifest,
nothing sent twice, layers mounted from other repositories, and a record of the copy that a
later build on the base mounts from (the engine sets no RepoDigests when it did not push)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from modelpack.errors import RegistryError
from modelpack.image import bases, engine, runtime_layers, stages
from modelpack.oci.reference import ImageRef
from modelpack.pipeline.base_recipes import BaseSettings
from modelpack.progress import ProgressRecorder, reporter
from tests.unit.fakes import FakeRegistry, blob_digest, tar_of

BASE = "modelpack-base/python:3.11"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


pytestmark = pytest.mark.usefixtures("own_cache")


class RepoRegistry(FakeRegistry):
    """A registry whose blobs belong to repositories (as distribution's links do), with mounts."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[str, set[str]] = {}
        self.mounts: list[tuple[str, str, str]] = []  # (repository, from, digest)
        self.uploads: list[str] = []
        self.fail_uploads = False

    def head_blob(self, repository: str, digest: str) -> int | None:
        return len(self.blobs[digest]) if digest in self.held.get(repository, set()) else None

    def get_blob(self, repository: str, digest: str) -> bytes:
        if self.head_blob(repository, digest) is None:
            raise RegistryError(f"blob {digest} not found")
        return self.blobs[digest]

    def ensure_blob(self, repository: str, data: bytes | Path, **kwargs: Any) -> tuple[Any, bool]:
        if self.fail_uploads:
            raise RegistryError("registry 127.0.0.1:5000: PUT blob: 500")
        body = data.read_bytes() if isinstance(data, Path) else data
        sent = self.head_blob(repository, blob_digest(body)) is None
        if sent:
            self.uploads.append(blob_digest(body))
        self.blobs[blob_digest(body)] = body
        self.held.setdefault(repository, set()).add(blob_digest(body))
        return SimpleNamespace(digest=blob_digest(body), size=len(body)), sent

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        assert method == "POST" and "mount=" in url, url
        query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
        repository = url.split("/v2/", 1)[1].split("/blobs/", 1)[0]
        digest, source = query["mount"].replace("%3A", ":"), query["from"].replace("%2F", "/")
        if digest in self.held.get(source, set()):
            self.held.setdefault(repository, set()).add(digest)
            self.mounts.append((repository, source, digest))
            return SimpleNamespace(status_code=201, headers={})
        return SimpleNamespace(status_code=202, headers={})


class SavingApi:
    """The engine calls a base push makes: inspect, tag, and `docker save` of a real tar stream."""

    def __init__(self, layers: list[bytes]) -> None:
        self.layers = layers
        self.diff_ids = [blob_digest(layer) for layer in layers]
        self.config = json.dumps(
            {"rootfs": {"type": "layers", "diff_ids": self.diff_ids}, "os": "linux"}
        ).encode()
        self.id = blob_digest(self.config)
        self.tags = {BASE}
        self.saves = 0

    def inspect_image(self, reference: str) -> dict[str, Any]:
        if reference not in self.tags and reference != self.id:
            raise docker.errors.ImageNotFound(reference)
        return {"Id": self.id, "RepoDigests": [], "RootFS": {"Type": "layers", "Layers": self.diff_ids}}

    def tag(self, image: str, repository: str, tag: str, force: bool = False) -> bool:
        self.tags.add(f"{repository}:{tag}")
        return True

    def remove_image(self, reference: str, noprune: bool = False) -> None:
        self.tags.discard(reference)

    def get_image(self, image: str, chunk_size: int) -> Iterator[bytes]:
        self.saves += 1
        data = tar_of(
            {
                **{f"l{i}/layer.tar": layer for i, layer in enumerate(self.layers)},
                f"{self.id[7:]}.json": self.config,
                "manifest.json": b"[]",
            }
        )
        return (data[i : i + 65536] for i in range(0, len(data), 65536))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    registry = RepoRegistry()
    api = CountingApi(
        [tar_of({"etc/os-release": b"debian\n" * 5000}), tar_of({"usr/bin/python3": b"\x7fELF" * 9000})]
    )
    monkeypatch.setattr(bases, "registry_for", lambda repo, auth: registry, raising=False)
    recorder = ProgressRecorder()

    def job(prefix: str) -> bases.BaseJob:
        return bases.BaseJob(SimpleNamespace(api=api), BaseSettings(), reporter(recorder), prefix)

    return SimpleNamespace(registry=registry, api=api, job=job, events=recorder.events)


def _lines(events: list[Any]) -> list[str]:
    """Each layer's line (not the line before the engine's docker save, nor byte counts)."""
    return [
        event.message
        for event in events
        if event.stage == "push" and not event.unit and not event.message.startswith("reading ")
    ]


def test_a_base_is_pushed_as_gzip_layers_with_the_engines_exact_config(world: SimpleNamespace) -> None:
    registry, api = world.registry, world.api
    outcome = bases.push(world.job("127.0.0.1:5000/team"), BASE)

    repository = "team/modelpack-base/python"
    raw, media_type = registry.manifests[registry.tags[repository]["3.11"]]
    assert media_type == DOCKER_MANIFEST and outcome.digest == blob_digest(raw)
    manifest = json.loads(raw)
    assert manifest["mediaType"] == DOCKER_MANIFEST and manifest["schemaVersion"] == 2
    assert manifest["config"]["digest"] == api.id  # the image id stays what the engine says
    assert registry.get_blob(repository, api.id) == api.config
    for layer, diff_id, plain in zip(manifest["layers"], api.diff_ids, api.layers, strict=True):
        assert layer["mediaType"] == GZIP
        assert blob_digest(gzip.decompress(registry.get_blob(repository, layer["digest"]))) == diff_id
        assert len(plain) > layer["size"]
    assert [layer.status for layer in outcome.layers] == ["pushed", "pushed"]
    assert outcome.bytes_pushed == sum(layer["size"] for layer in manifest["layers"]) + len(api.config)
    assert [line.split(":")[0] for line in _lines(world.events)] == [d[7:19] for d in api.diff_ids]
    assert all(": Pushed (" in line for line in _lines(world.events))
    # the engine has no repo digest for it; modelpack keeps where the copy is
    assert runtime_layers.recorded_copies(api.id) == [f"127.0.0.1:5000/{repository}@{outcome.digest}"]
    assert outcome.to_dict()["layers"][0]["status"] == "pushed"
    # and names the base by that manifest's digest afterwards (`base build`, `base list`)
    assert bases.ensure(world.job("127.0.0.1:5000/team"), BASE).digest == outcome.digest


def test_a_second_push_sends_nothing_and_another_prefix_mounts_without_reading_the_engine(
    world: SimpleNamespace,
) -> None:
    registry, api = world.registry, world.api
    first = bases.push(world.job("127.0.0.1:5000/team"), BASE)
    uploads, saves = list(registry.uploads), api.saves
    world.events.clear()

    again = bases.push(world.job("127.0.0.1:5000/team"), BASE)
    assert [layer.status for layer in again.layers] == ["present", "present"]
    assert again.bytes_pushed == 0 and again.digest == first.digest
    assert all(": Layer already exists (" in line for line in _lines(world.events))
    world.events.clear()

    other = bases.push(world.job("127.0.0.1:5000/other"), BASE)
    assert [layer.status for layer in other.layers] == ["mounted", "mounted"]
    assert other.bytes_pushed == 0 and other.digest == first.digest  # the same manifest, config mounted too
    assert {source for _, source, _ in registry.mounts} == {"team/modelpack-base/python"}
    assert all(": Mounted from team/modelpack-base/python (" in line for line in _lines(world.events))
    assert registry.uploads == uploads and api.saves == saves  # nothing compressed, nothing sent
    assert runtime_layers.recorded_copies(api.id)[0].startswith("127.0.0.1:5000/other/")


def test_a_model_build_on_the_base_finds_its_copy_without_repo_digests(world: SimpleNamespace) -> None:
    """The engine sets RepoDigests only when it pushes or pulls: the build's mount source is the
    record `base push` kept."""
    registry, api = world.registry, world.api
    bases.push(world.job("127.0.0.1:5000/team"), BASE)
    session = SimpleNamespace(engine=SimpleNamespace(api=api), registry=registry)
    repo = ImageRef.parse("127.0.0.1:5000/models/hello")
    sources = runtime_layers._layer_sources(session, repo, BASE, set(api.diff_ids))  # type: ignore[arg-type]
    assert {d: source for d, (source, _) in sources.items()} == {
        d: "team/modelpack-base/python" for d in api.diff_ids
    }
    assert all(descriptor["mediaType"] == GZIP for _, descriptor in sources.values())


class CountingApi(SavingApi):
    def __init__(self, layers: list[bytes]) -> None:
        super().__init__(layers)
        self.inspected: list[str] = []

    def inspect_image(self, reference: str) -> dict[str, Any]:
        self.inspected.append(reference)
        return super().inspect_image(reference)


def _built_from(base: engine.LocalImage | None, base_image: str) -> Any:
    """The record's view of the build (`stages._built_from`), with an engine that must not be asked."""
    session = SimpleNamespace(engine=SimpleNamespace(api=None))  # any question is an AttributeError
    result = SimpleNamespace(
        base_image_digest="", checkpoints=(), concepts=(), image="r/m:v1", content_tag=""
    )
    spec = SimpleNamespace(base=base, context_dir=Path("/nonexistent"))
    resolved = SimpleNamespace(base_image=base_image)
    return stages._built_from(session, result, None, resolved, None, spec)  # type: ignore[arg-type]


def test_a_build_on_a_pushed_base_records_its_manifest_digest_not_the_image_id(
    world: SimpleNamespace,
) -> None:
    """The engine sets no repo digest for a base modelpack pushed: the record names the manifest
    one can pull (`base push` kept it), from the one look `ensure` took at the base."""
    pushed = bases.push(world.job("127.0.0.1:5000/team"), BASE)
    remote = f"127.0.0.1:5000/team/{BASE}"
    world.api.inspected = []
    outcome = bases.ensure(world.job("127.0.0.1:5000/team"), BASE)
    assert world.api.inspected == [remote]
    assert outcome.local == engine.LocalImage(remote, world.api.id, pushed.digest)
    assert _built_from(outcome.local, remote).base_image_digest == pushed.digest != world.api.id


def test_a_base_ensure_pushes_is_recorded_by_the_manifest_it_pushed(world: SimpleNamespace) -> None:
    """A base only under its catalog name is tagged and pushed by the build itself: the outcome
    carries the pushed manifest's digest and the engine's id, so the build asks nothing more."""
    remote = f"127.0.0.1:5000/team/{BASE}"
    outcome = bases.ensure(world.job("127.0.0.1:5000/team"), BASE)
    assert outcome.pushed and outcome.digest is not None and outcome.digest.startswith("sha256:")
    repository = "team/modelpack-base/python"
    assert outcome.digest == world.registry.tags[repository]["3.11"]
    assert outcome.local == engine.LocalImage(remote, world.api.id, outcome.digest)
    assert _built_from(outcome.local, remote).base_image_digest == outcome.digest


def test_a_failed_upload_tags_nothing_and_records_no_copy(world: SimpleNamespace) -> None:
    world.registry.fail_uploads = True
    with pytest.raises(RegistryError):
        bases.push(world.job("127.0.0.1:5000/team"), BASE)
    assert world.registry.tags == {} and world.registry.puts == []
    assert world.api.tags == {BASE}  # the name `base push` gave it is gone again
    assert runtime_layers.recorded_copies(world.api.id) == []


def test_a_damaged_copy_record_is_no_copy(tmp_path: Path) -> None:
    image_id = blob_digest(b"config")
    runtime_layers.remember_copy(image_id, "127.0.0.1:5000/a/b@" + blob_digest(b"m"))
    record = runtime_layers._copies_record(image_id)
    record.write_text('{"copies": [1, "not a reference"]}')
    assert runtime_layers.recorded_copies(image_id) == []
    record.write_text("{")
    assert runtime_layers.recorded_copies(image_id) == []
