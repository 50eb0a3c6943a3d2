"""`image.runtime_layers`: which runtime layers and config a push can take from the registry or
from its own records instead of reading them out of the engine."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from modelpack.image import runtime_layers
from modelpack.oci.reference import ImageRef
from tests.unit.fakes import FakeRegistry, docker_manifest

REPO = ImageRef.parse("127.0.0.1:5000/team/model")
GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_runtime_config_comes_from_the_copy_kept_at_the_last_push() -> None:
    """A push whose layers are all in the registry must not `docker save` the whole image (5 GB
    for a torch base) just to read the config: the copy kept by an earlier push is uploaded."""
    registry = FakeRegistry()
    config = json.dumps({"rootfs": {"diff_ids": []}, "created": "now"}).encode()
    image_id = _digest(config)
    assert runtime_layers._config_in_registry(registry, REPO.repository, image_id) == (None, 0)
    runtime_layers._remember_config(config)
    got, sent = runtime_layers._config_in_registry(registry, REPO.repository, image_id)
    assert (got, sent) == (config, len(config)) and registry.blobs[image_id] == config
    # the registry has it now: fetched, nothing sent
    assert runtime_layers._config_in_registry(registry, REPO.repository, image_id) == (config, 0)


def test_a_damaged_config_copy_is_a_miss() -> None:
    registry = FakeRegistry()
    config = b'{"rootfs":{}}'
    runtime_layers._remember_config(config)
    kept = runtime_layers._config_record(_digest(config))
    kept.write_text('{"rootfs":{"x":1}}')
    assert runtime_layers._config_in_registry(registry, REPO.repository, _digest(config)) == (None, 0)
    assert registry.blobs == {}


def test_a_layer_pushed_gzipped_before_is_found_by_its_recorded_blob() -> None:
    """The blob of a compressed layer is not named by its diff id: the record of the last push
    to this repository names it, and a HEAD confirms it."""
    registry = FakeRegistry()
    blob = b"gzip bytes"
    diff_id = _digest(b"plain layer")
    assert runtime_layers._in_repository(registry, REPO, diff_id, {}) is None
    registry.blobs[_digest(blob)] = blob
    record = {
        "registry": REPO.registry,
        "repository": REPO.repository,
        "mediaType": GZIP,
        "digest": _digest(blob),
        "size": 3,
    }
    runtime_layers._source_record(diff_id).parent.mkdir(parents=True)
    runtime_layers._source_record(diff_id).write_text(json.dumps(record))
    found = runtime_layers._in_repository(registry, REPO, diff_id, {})
    assert found == {"mediaType": GZIP, "digest": _digest(blob), "size": len(blob)}  # size from the HEAD
    # a record of another repository is no proof for this one (that is a mount's job)
    other = {**record, "repository": "team/other"}
    runtime_layers._source_record(diff_id).write_text(json.dumps(other))
    assert runtime_layers._in_repository(registry, REPO, diff_id, {}) is None


def test_an_uncompressed_layer_of_an_older_push_still_counts() -> None:
    registry = FakeRegistry()
    plain = b"plain layer"
    registry.blobs[_digest(plain)] = plain
    found = runtime_layers._in_repository(registry, REPO, _digest(plain), {})
    assert found == {
        "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
        "digest": _digest(plain),
        "size": len(plain),
    }


def test_the_base_copy_in_the_registry_is_mounted_before_a_recorded_plain_blob(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A layer may be in the registry twice: as the gzip blob the base was published as, and as
    an uncompressed blob an older push left. The base's copy wins: pulls of the image are smaller."""
    registry = FakeRegistry()
    torch_layer = b"the torch layer, uncompressed"
    diff_id = _digest(torch_layer)
    gzip_blob = b"the torch layer, gzipped"
    registry.blobs[_digest(gzip_blob)] = gzip_blob
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    registry.blobs[_digest(config)] = config
    manifest = docker_manifest(config, [(_digest(gzip_blob), len(gzip_blob))])
    registry.manifests[_digest(manifest)] = (manifest, "application/vnd.docker.distribution.manifest.v2+json")
    base = "modelpack-base/torch:2.5.1-py3.11-cu124"
    repo_digests = [f"{REPO.registry}/bases/{base.split(':')[0]}@{_digest(manifest)}"]
    monkeypatch.setattr(
        runtime_layers.engine, "inspect_image", lambda client, ref: {"RepoDigests": repo_digests}
    )
    record = {
        "registry": REPO.registry,
        "repository": "team/older",
        "mediaType": "plain",
        "digest": diff_id,
        "size": 1,
    }
    runtime_layers._source_record(diff_id).parent.mkdir(parents=True)
    runtime_layers._source_record(diff_id).write_text(json.dumps(record))
    session = SimpleNamespace(engine=None, registry=registry)

    sources = runtime_layers._layer_sources(session, REPO, base, {diff_id})
    assert sources == {
        diff_id: (
            f"bases/{base.split(':')[0]}",
            {"mediaType": GZIP, "digest": _digest(gzip_blob), "size": len(gzip_blob)},
        )
    }
    # with no base copy, the record still saves the upload
    monkeypatch.setattr(runtime_layers.engine, "inspect_image", lambda client, ref: {})
    assert runtime_layers._layer_sources(session, REPO, base, {diff_id})[diff_id][0] == "team/older"


def test_folder_records_name_layers_for_the_next_save_and_a_failed_one_forgets_them() -> None:
    """What each `docker save` folder held is kept, so the next save can skip the base; records
    that are malformed are no answer, and the records a failed save relied on are dropped."""
    folder, diff_id = "a" * 64, _digest(b"base layer")
    records = runtime_layers.FolderRecords()
    assert records(folder) is None and records.used == set()
    records.remember({folder: diff_id, "not-a-folder": diff_id})
    later = runtime_layers.FolderRecords()
    assert later(folder) == diff_id and later.used == {folder}
    assert later("not-a-folder") is None
    later.forget_used()
    assert runtime_layers.FolderRecords()(folder) is None
    runtime_layers.FolderRecords._path(folder).write_text('{"diff_id": "sha256:../../etc"}')
    assert runtime_layers.FolderRecords()(folder) is None


def test_a_failed_save_drops_the_folder_records_it_relied_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should a record hide a wanted layer, the save fails once; the next one reads every layer."""
    folder = "b" * 64
    runtime_layers.FolderRecords().remember({folder: _digest(b"base")})

    def failing_save(client: object, image_id: str, wanted: set[str], folder_path: str, **kw: object) -> None:
        known = kw["known"]
        assert callable(known) and known(folder) == _digest(b"base")
        raise runtime_layers.EngineError("the engine's copy of sha256:x lacks layer sha256:y")

    monkeypatch.setattr(runtime_layers.engine, "save_layers", failing_save)
    session = SimpleNamespace(registry=FakeRegistry(), report=lambda *a: None, engine=None)
    with pytest.raises(runtime_layers.EngineError, match="lacks layer"):
        runtime_layers._upload_from_engine(session, REPO.repository, "sha256:x", {"sha256:y"}, {})  # type: ignore[arg-type]
    assert runtime_layers.FolderRecords()(folder) is None
