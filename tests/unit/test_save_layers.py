"""`engine.save_layers`: the layers a push needs, read uncompressed from the engine's `docker save`
stream (fed here in odd-sized chunks), each checked against its diff id; the rest dropped."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelpack.errors import EngineError
from modelpack.image import engine
from tests.unit.fakes import tar_of


class _Api:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def get_image(self, image: str, chunk_size: int) -> Any:
        # chunks of an awkward size, so reads straddle them
        return (self.data[i : i + 7777] for i in range(0, len(self.data), 7777))


class _Client:
    def __init__(self, data: bytes) -> None:
        self.api = _Api(data)


def _diff_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_only_wanted_layers_are_kept_and_named_by_diff_id(tmp_path: Path) -> None:
    layers = [tar_of({f"f{i}": bytes([i]) * (50_000 + i)}) for i in range(3)]
    config = json.dumps({"rootfs": {"diff_ids": [_diff_id(layer) for layer in layers]}}).encode()
    image_id = _diff_id(config)
    saved_stream = tar_of(
        {
            **{f"v1-{i}/layer.tar": layer for i, layer in enumerate(layers)},
            f"{image_id[7:]}.json": config,
            "manifest.json": b"[]",
        }
    )
    wanted = {_diff_id(layers[0]), _diff_id(layers[2])}
    seen: list[str] = []
    saved = engine.save_layers(
        _Client(saved_stream),
        image_id,
        wanted,
        tmp_path,
        on_layer=lambda d, p: seen.append(d),
    )
    assert saved.config == config
    assert set(saved.files) == wanted and seen == [_diff_id(layers[0]), _diff_id(layers[2])]
    for diff_id, path in saved.files.items():
        assert _diff_id(Path(path).read_bytes()) == diff_id
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(p).name for p in saved.files.values())


def test_a_stream_without_the_layer_or_config_is_an_engine_error(tmp_path: Path) -> None:
    config = b'{"rootfs": {}}'
    stream = tar_of({f"{_diff_id(config)[7:]}.json": config})
    with pytest.raises(EngineError, match="lacks layer"):
        engine.save_layers(_Client(stream), _diff_id(config), {"sha256:" + "0" * 64}, tmp_path)
    with pytest.raises(EngineError, match="no matching image config"):
        engine.save_layers(_Client(stream), "sha256:" + "1" * 64, set(), tmp_path)


def test_each_layer_goes_to_a_sink_of_its_own_kept_or_discarded(tmp_path: Path) -> None:
    """A push gzips layers as they stream: the sink gets every byte, and only wanted layers are
    kept (the others are dropped, whatever the sink holds of them)."""
    layers = [tar_of({f"f{i}": bytes([i]) * (70_000 + i)}) for i in range(3)]
    config = json.dumps({"rootfs": {"diff_ids": [_diff_id(layer) for layer in layers]}}).encode()
    image_id = _diff_id(config)
    saved_stream = tar_of(
        {
            **{f"v1-{i}/layer.tar": layer for i, layer in enumerate(layers)},
            f"{image_id[7:]}.json": config,
        }
    )
    sinks: list[_Recording] = []

    def recording(path: str) -> _Recording:
        sinks.append(_Recording(path))
        return sinks[-1]

    saved = engine.save_layers(
        _Client(saved_stream),
        image_id,
        {_diff_id(layers[1])},
        tmp_path,
        sink=recording,
    )
    assert [bytes(s.data) for s in sinks] == layers
    assert [s.state for s in sinks] == ["discarded", "kept", "discarded"]
    assert saved.files == {_diff_id(layers[1]): sinks[1].path}


class _Recording:
    def __init__(self, path: str) -> None:
        self.path, self.data, self.state = path, bytearray(), "open"

    def write(self, chunk: bytes) -> None:
        self.data += chunk

    def close(self) -> str:
        self.state = "kept"
        return self.path

    def discard(self) -> None:
        self.state = "discarded"


class _Chunks:
    """The engine's stream as a generator would give it: records how far it was read and whether
    it was closed."""

    def __init__(self, data: bytes) -> None:
        self.data, self.read, self.closed = data, 0, False

    def __iter__(self) -> _Chunks:
        return self

    def __next__(self) -> bytes:
        if self.closed or self.read >= len(self.data):
            raise StopIteration
        chunk = self.data[self.read : self.read + 7777]
        self.read += len(chunk)
        return chunk

    def close(self) -> None:
        self.closed = True


def _folder(i: int) -> str:
    return f"{i:064x}"


def test_a_recorded_layer_that_is_not_wanted_is_skipped_unread_and_the_stream_ends_early(
    tmp_path: Path,
) -> None:
    """A one-dependency change wants only the model's layers; the base layer (hundreds of MB) that
    an earlier save named is neither hashed nor put in a sink, and once the wanted layers and the
    config are in, the rest of the stream is not read."""
    layers = [tar_of({f"f{i}": bytes([i]) * (90_000 + i)}) for i in range(3)]
    config = json.dumps({"rootfs": {"diff_ids": [_diff_id(layer) for layer in layers]}}).encode()
    image_id = _diff_id(config)
    stream = tar_of(
        {
            f"{_folder(0)}/layer.tar": layers[0],  # the base: recorded, not wanted
            f"{_folder(1)}/layer.tar": layers[1],  # wanted
            f"{image_id[7:]}.json": config,
            f"{_folder(2)}/layer.tar": layers[2],  # not wanted, after everything needed
            "manifest.json": b"[]",
        }
    )
    chunks = _Chunks(stream)
    client = SimpleNamespace(api=SimpleNamespace(get_image=lambda image, chunk_size: chunks))
    sinks: list[_Recording] = []

    def recording(path: str) -> _Recording:
        sinks.append(_Recording(path))
        return sinks[-1]

    saved = engine.save_layers(
        client,
        image_id,
        {_diff_id(layers[1])},
        tmp_path,
        sink=recording,
        known={_folder(0): _diff_id(layers[0])}.get,
    )
    assert [bytes(s.data) for s in sinks] == [layers[1]]  # the base never reached a sink
    assert saved.files == {_diff_id(layers[1]): sinks[0].path}
    assert saved.folders == {_folder(1): _diff_id(layers[1])}  # what the next save may skip
    assert chunks.closed and chunks.read < len(stream) - 60_000  # most of the last layer unread


def test_without_records_every_layer_is_read_and_its_folder_named(tmp_path: Path) -> None:
    layers = [tar_of({f"f{i}": bytes([i]) * (20_000 + i)}) for i in range(2)]
    config = json.dumps({"rootfs": {"diff_ids": [_diff_id(layer) for layer in layers]}}).encode()
    image_id = _diff_id(config)
    stream = tar_of(
        {
            f"{_folder(0)}/layer.tar": layers[0],
            f"{image_id[7:]}.json": config,
            f"{_folder(1)}/layer.tar": layers[1],
        }
    )
    saved = engine.save_layers(_Client(stream), image_id, {_diff_id(layers[1])}, tmp_path)
    assert saved.folders == {_folder(0): _diff_id(layers[0]), _folder(1): _diff_id(layers[1])}


def test_a_wrong_record_cannot_hide_a_wanted_layer(tmp_path: Path) -> None:
    """A record naming the wrong diff id for a folder makes the save fail, never pass a layer
    that was not checked."""
    layer = tar_of({"f": b"x" * 10_000})
    config = json.dumps({"rootfs": {"diff_ids": [_diff_id(layer)]}}).encode()
    image_id = _diff_id(config)
    stream = tar_of({f"{_folder(0)}/layer.tar": layer, f"{image_id[7:]}.json": config})
    with pytest.raises(EngineError, match="lacks layer"):
        engine.save_layers(
            _Client(stream),
            image_id,
            {_diff_id(layer)},
            tmp_path,
            known={_folder(0): "sha256:" + "e" * 64}.get,
        )


def test_on_read_counts_the_streams_bytes_chunk_by_chunk(tmp_path: Path) -> None:
    """The count a push shows while it reads the image: after each chunk the engine sends."""
    layer = tar_of({"f": b"x" * 40_000})
    config = json.dumps({"rootfs": {"diff_ids": [_diff_id(layer)]}}).encode()
    image_id = _diff_id(config)
    stream = tar_of({"v1/layer.tar": layer, f"{image_id[7:]}.json": config, "manifest.json": b"[]"})
    counts: list[int] = []
    engine.save_layers(_Client(stream), image_id, {_diff_id(layer)}, tmp_path, on_read=counts.append)
    assert counts and counts[0] == 7777
    steps = [later - earlier for earlier, later in itertools.pairwise(counts)]
    assert set(steps[:-1]) <= {7777} and 0 < steps[-1] <= 7777  # the last chunk may be shorter
    assert counts[-1] <= len(stream)
