"""`image.runtime_layers`: which runtime layers and config a push can take from the registry or
from its own records instead of reading them out of the engine."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest

from modelpack.image import runtime_layers
from modelpack.image.session import BuildSession, PushTarget
from modelpack.oci.reference import ImageRef
from modelpack.progress import Reporter
from tests.unit.fakes import FakeRegistry, as_client, blob_digest, docker_manifest

REPO = ImageRef.parse("127.0.0.1:5000/team/model")
GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


pytestmark = pytest.mark.usefixtures("own_cache")


def test_runtime_config_comes_from_the_copy_kept_at_the_last_push() -> None:
    """A push whose layers are all in the registry must not `docker save` the whole image (5 GB
    for a torch base) just to read the config: the copy kept by an earlier push is uploaded."""
    registry = FakeRegistry()
    config = json.dumps({"rootfs": {"diff_ids": []}, "created": "now"}).encode()
    image_id = blob_digest(config)
    assert runtime_layers._config_in_registry(as_client(registry), REPO.repository, image_id) == (None, 0)
    runtime_layers._remember_config(config)
    got, sent = runtime_layers._config_in_registry(as_client(registry), REPO.repository, image_id)
    assert (got, sent) == (config, len(config)) and registry.blobs[image_id] == config
    # the registry has it now: fetched, nothing sent
    assert runtime_layers._config_in_registry(as_client(registry), REPO.repository, image_id) == (config, 0)


def test_a_damaged_config_copy_is_a_miss() -> None:
    registry = FakeRegistry()
    config = b'{"rootfs":{}}'
    runtime_layers._remember_config(config)
    kept = runtime_layers._config_record(blob_digest(config))
    kept.write_text('{"rootfs":{"x":1}}')
    assert runtime_layers._config_in_registry(as_client(registry), REPO.repository, blob_digest(config)) == (
        None,
        0,
    )
    assert registry.blobs == {}


def test_a_config_copy_in_another_form_is_replaced_by_the_exact_blob() -> None:
    """An older modelpack kept `{"config": "<blob as text>"}` under the same name: never a hit,
    so the next push that reads the config keeps it again, exactly."""
    config = b'{"rootfs":{"diff_ids":[]},"created":"earlier"}'
    kept = runtime_layers._config_record(blob_digest(config))
    kept.parent.mkdir(parents=True)
    kept.write_text(json.dumps({"config": config.decode()}))
    assert runtime_layers.known_config(blob_digest(config)) is None
    runtime_layers._remember_config(config)
    assert runtime_layers.known_config(blob_digest(config)) == config


def test_a_layer_pushed_gzipped_before_is_found_by_its_recorded_blob() -> None:
    """The blob of a compressed layer is not named by its diff id: the record of the last push
    to this repository names it, and a HEAD confirms it."""
    registry = FakeRegistry()
    blob = b"gzip bytes"
    diff_id = blob_digest(b"plain layer")
    assert runtime_layers._in_repository(as_client(registry), REPO, diff_id, {}) is None
    registry.blobs[blob_digest(blob)] = blob
    record = {
        "registry": REPO.registry,
        "repository": REPO.repository,
        "mediaType": GZIP,
        "digest": blob_digest(blob),
        "size": 3,
    }
    runtime_layers._source_record(diff_id).parent.mkdir(parents=True)
    runtime_layers._source_record(diff_id).write_text(json.dumps(record))
    found = runtime_layers._in_repository(as_client(registry), REPO, diff_id, {})
    assert found == {"mediaType": GZIP, "digest": blob_digest(blob), "size": len(blob)}  # size from the HEAD
    # a record of another repository is no proof for this one (that is a mount's job)
    other = {**record, "repository": "team/other"}
    runtime_layers._source_record(diff_id).write_text(json.dumps(other))
    assert runtime_layers._in_repository(as_client(registry), REPO, diff_id, {}) is None


def test_an_uncompressed_layer_of_an_older_push_still_counts() -> None:
    registry = FakeRegistry()
    plain = b"plain layer"
    registry.blobs[blob_digest(plain)] = plain
    found = runtime_layers._in_repository(as_client(registry), REPO, blob_digest(plain), {})
    assert found == {
        "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
        "digest": blob_digest(plain),
        "size": len(plain),
    }


def test_the_base_copy_in_the_registry_is_mounted_before_a_recorded_plain_blob(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A layer may be in the registry twice: as the gzip blob the base was published as, and as
    an uncompressed blob an older push left. The base's copy wins: pulls of the image are smaller."""
    registry = FakeRegistry()
    torch_layer = b"the torch layer, uncompressed"
    diff_id = blob_digest(torch_layer)
    gzip_blob = b"the torch layer, gzipped"
    registry.blobs[blob_digest(gzip_blob)] = gzip_blob
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    registry.blobs[blob_digest(config)] = config
    manifest = docker_manifest(config, [(blob_digest(gzip_blob), len(gzip_blob))])
    registry.manifests[blob_digest(manifest)] = (
        manifest,
        "application/vnd.docker.distribution.manifest.v2+json",
    )
    base = "modelpack-base/torch:2.5.1-py3.11-cu124"
    repo_digests = [f"{REPO.registry}/bases/{base.split(':')[0]}@{blob_digest(manifest)}"]
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
    session = BuildSession(engine=None, registry=as_client(registry), auth=None, report=Reporter())

    sources = runtime_layers._layer_sources(session, REPO, base, {diff_id})
    assert sources == {
        diff_id: (
            f"bases/{base.split(':')[0]}",
            {"mediaType": GZIP, "digest": blob_digest(gzip_blob), "size": len(gzip_blob)},
        )
    }
    # with no base copy, the record still saves the upload
    monkeypatch.setattr(runtime_layers.engine, "inspect_image", lambda client, ref: {})
    assert runtime_layers._layer_sources(session, REPO, base, {diff_id})[diff_id][0] == "team/older"


def test_a_config_the_registry_has_is_not_fetched_again_when_a_copy_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = FakeRegistry()
    config = json.dumps({"rootfs": {"diff_ids": []}, "created": "then"}).encode()
    registry.blobs[blob_digest(config)] = config
    runtime_layers._remember_config(config)

    def no_fetch(repository: str, digest: str) -> bytes:
        raise AssertionError(f"fetched {digest}, a copy of which is kept")

    monkeypatch.setattr(registry, "get_blob", no_fetch)
    assert runtime_layers._config_in_registry(as_client(registry), REPO.repository, blob_digest(config)) == (
        config,
        0,
    )


class _LayersAtOnce(FakeRegistry):
    """Answers a HEAD of a layer only once every layer's HEAD has arrived: one after another,
    the first one waits in vain and fails."""

    def __init__(self, layers: list[bytes]) -> None:
        super().__init__()
        self.layer_digests = {blob_digest(layer) for layer in layers}
        self.all_asked = threading.Barrier(len(layers), timeout=10)
        self.blobs.update({blob_digest(layer): layer for layer in layers})

    def head_blob(self, repository: str, digest: str) -> int | None:
        if digest in self.layer_digests:
            self.all_asked.wait()
        return super().head_blob(repository, digest)


def test_the_registry_is_asked_about_all_runtime_layers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A code-only rebuild finds every runtime layer in the registry: those lookups are
    independent and go out together, not one round trip after another. The layer list comes
    from the runtime config kept at the last push, not from the engine."""
    layers = [f"layer {n}".encode() for n in range(4)]
    registry = _LayersAtOnce(layers)
    config = json.dumps({"rootfs": {"diff_ids": [blob_digest(layer) for layer in layers]}}).encode()
    registry.blobs[blob_digest(config)] = config
    runtime_layers._remember_config(config)

    def inspect_image(client: object, reference: str) -> dict[str, object]:
        raise AssertionError("the engine was asked for the layers of the config kept")

    monkeypatch.setattr(runtime_layers.engine, "inspect_image", inspect_image)
    reports: list[str] = []
    session = SimpleNamespace(engine=None, registry=registry, report=lambda stage, text: reports.append(text))
    target = PushTarget(REPO, "c-0123456789abcdef", "v1", False)

    runtime = runtime_layers.runtime_in_registry(session, target, blob_digest(config), "")  # type: ignore[arg-type]
    assert [layer.status for layer in runtime.layers] == ["present"] * len(layers)
    assert runtime.bytes_pushed == 0 and runtime.config == config
    assert "4 of 4 runtime layers already in the registry" in reports


def test_folder_records_name_layers_for_the_next_save_and_a_failed_one_forgets_them() -> None:
    """What each `docker save` folder held is kept, so the next save can skip the base; records
    that are malformed are no answer, and the records a failed save relied on are dropped."""
    folder, diff_id = "a" * 64, blob_digest(b"base layer")
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
    runtime_layers.FolderRecords().remember({folder: blob_digest(b"base")})

    def failing_save(client: object, image_id: str, wanted: set[str], folder_path: str, **kw: object) -> None:
        known = kw["known"]
        assert callable(known) and known(folder) == blob_digest(b"base")
        raise runtime_layers.EngineError("the engine's copy of sha256:x lacks layer sha256:y")

    monkeypatch.setattr(runtime_layers.engine, "save_layers", failing_save)
    session = SimpleNamespace(registry=FakeRegistry(), report=lambda *a: None, engine=None)
    with pytest.raises(runtime_layers.EngineError, match="lacks layer"):
        runtime_layers._upload_from_engine(session, REPO.repository, "sha256:x", {"sha256:y"}, {})  # type: ignore[arg-type]
    assert runtime_layers.FolderRecords()(folder) is None


def test_reading_layers_from_the_engine_says_so_and_counts_the_wait_then_the_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine's docker save is silent until it has written the whole image (most of a minute
    on a torch base): a plain line says what is read and how big the image is, the wait is
    counted until the first byte, and the bytes read are counted against the image's size."""
    events: list[tuple[str, str, int | None, int | None, str]] = []
    first_byte = threading.Event()

    def report(stage: str, message: str, current: int | None = None, total: int | None = None, unit: str = "") -> None:
        events.append((stage, message, current, total, unit))
        if unit == "seconds":
            first_byte.set()

    def save(client: object, image_id: str, wanted: set[str], folder_path: str, **kw: object) -> object:
        on_read = kw["on_read"]
        assert callable(on_read)
        assert first_byte.wait(10)  # the wait is being counted
        for count in (1 << 20, 2 << 20, 40 << 20, 50 << 20):
            on_read(count)
        return runtime_layers.engine.SavedLayers(b"{}")

    monkeypatch.setattr(runtime_layers.engine, "save_layers", save)
    monkeypatch.setattr(runtime_layers.engine, "inspect_image", lambda client, ref: {"Size": 60 << 20})
    monkeypatch.setattr(runtime_layers, "Waiting", _FastWaiting)
    session = SimpleNamespace(registry=FakeRegistry(), report=report, engine=None)
    runtime_layers._upload_from_engine(session, REPO.repository, "sha256:x", {"sha256:y", "sha256:z"}, {})  # type: ignore[arg-type]
    assert events[0] == (
        "push",
        "reading 2 new layer(s) from the engine: its docker save writes the whole image (62.9 MB) "
        "before the first byte",
        None,
        None,
        "",
    )
    waited = [e for e in events if e[4] == "seconds"]
    read = [e for e in events if e[4] == "bytes"]
    assert waited and events.index(waited[-1]) < events.index(read[0])  # no count after the first byte
    assert [(e[2], e[3]) for e in read] == [(1 << 20, 60 << 20), (40 << 20, 60 << 20)]  # every 32 MiB


class _FastWaiting(runtime_layers.Waiting):
    def __init__(self, report: object, stage: str, message: str, every: float = 1.0) -> None:
        super().__init__(report, stage, message, every=0.01)  # type: ignore[arg-type]


def test_layers_recorded_as_pushed_here_need_not_the_newest_versions_manifest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A code-only rebuild: every runtime layer's record names this repository, so their blobs
    are asked about at once, without first reading the newest version's manifest and config
    (two requests, one after the other). A layer without such a record still gets that read."""
    blobs = {blob_digest(f"plain {n}".encode()): f"gzip {n}".encode() for n in range(3)}
    registry = FakeRegistry()
    for diff_id, blob in blobs.items():
        registry.blobs[blob_digest(blob)] = blob
        record = {**{"registry": REPO.registry, "repository": REPO.repository}, "mediaType": GZIP}
        runtime_layers._source_record(diff_id).parent.mkdir(parents=True, exist_ok=True)
        runtime_layers._source_record(diff_id).write_text(
            json.dumps({**record, "digest": blob_digest(blob), "size": len(blob)})
        )
    config = json.dumps({"rootfs": {"diff_ids": list(blobs)}}).encode()
    registry.blobs[blob_digest(config)] = config
    runtime_layers._remember_config(config)
    newest = docker_manifest(config, [(blob_digest(blob), len(blob)) for blob in blobs.values()])
    registry.manifests[blob_digest(newest)] = (newest, "application/vnd.docker.distribution.manifest.v2+json")
    registry.tags[REPO.repository] = {"v1": blob_digest(newest)}
    read: list[str] = []
    get_manifest = registry.get_manifest

    def noted(repository: str, reference: str, **kwargs: bool) -> object:
        read.append(reference)
        return get_manifest(repository, reference, **kwargs)

    monkeypatch.setattr(registry, "get_manifest", noted)
    session = SimpleNamespace(engine=None, registry=registry, report=lambda *a: None)
    target = PushTarget(REPO, "c-0123456789abcdef", "v2", False, remote_tags=("v1",))
    runtime = runtime_layers.runtime_in_registry(session, target, blob_digest(config), "")  # type: ignore[arg-type]
    assert [layer.status for layer in runtime.layers] == ["present"] * 3 and read == []
    assert [d["digest"] for d in runtime.descriptors] == [blob_digest(b) for b in blobs.values()]

    runtime_layers._source_record(next(iter(blobs))).unlink()  # no record: the newest version is read
    runtime_layers.runtime_in_registry(session, target, blob_digest(config), "")  # type: ignore[arg-type]
    assert read == ["v1"]


class _ConfigAskedFirst(FakeRegistry):
    """Answers a HEAD of a layer only once the runtime config's HEAD has arrived."""

    def __init__(self, config_digest: str) -> None:
        super().__init__()
        self.config_digest = config_digest
        self.config_asked = threading.Event()

    def head_blob(self, repository: str, digest: str) -> int | None:
        if digest == self.config_digest:
            self.config_asked.set()
        elif not self.config_asked.wait(5):
            raise AssertionError("the runtime config was asked about only after the layers")
        return super().head_blob(repository, digest)


def test_the_runtime_configs_lookup_goes_out_with_the_layers() -> None:
    """A code-only rebuild asks the registry about the runtime config (its HEAD) alongside the
    runtime layers, not one round trip after them."""
    blobs = {blob_digest(f"plain {n}".encode()): f"gzip {n}".encode() for n in range(3)}
    config = json.dumps({"rootfs": {"diff_ids": list(blobs)}}).encode()
    registry = _ConfigAskedFirst(blob_digest(config))
    registry.blobs[blob_digest(config)] = config
    for diff_id, blob in blobs.items():
        registry.blobs[blob_digest(blob)] = blob
        record = {"registry": REPO.registry, "repository": REPO.repository, "mediaType": GZIP}
        runtime_layers._source_record(diff_id).parent.mkdir(parents=True, exist_ok=True)
        runtime_layers._source_record(diff_id).write_text(
            json.dumps({**record, "digest": blob_digest(blob), "size": len(blob)})
        )
    runtime_layers._remember_config(config)
    session = SimpleNamespace(engine=None, registry=registry, report=lambda *a: None)
    target = PushTarget(REPO, "c-0123456789abcdef", "v2", False, remote_tags=("v1",))
    runtime = runtime_layers.runtime_in_registry(session, target, blob_digest(config), "")  # type: ignore[arg-type]
    assert [layer.status for layer in runtime.layers] == ["present"] * 3 and runtime.config == config
