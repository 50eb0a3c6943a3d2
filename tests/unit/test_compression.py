"""`oci.compression`: the gzip blobs modelpack uploads as layers."""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

from modelpack.oci.compression import GzipStream, gzip_file


def _tar_like(path: Path) -> Path:
    # compressible text and incompressible bytes, as a layer of Python packages has both
    path.write_bytes(b"def f():\n    return 1\n" * 40_000 + os.urandom(300_000) + b"\0" * 100_000)
    return path


def test_gzip_blob_is_a_gzip_of_the_source_named_by_its_own_digest(tmp_path: Path) -> None:
    source = _tar_like(tmp_path / "layer.tar")
    blob = gzip_file(source, tmp_path / "layer.tar.gz")
    data = blob.path.read_bytes()
    assert gzip.decompress(data) == source.read_bytes()
    assert blob.digest == "sha256:" + hashlib.sha256(data).hexdigest() and blob.size == len(data)
    assert blob.size < source.stat().st_size * 0.6


def test_equal_sources_give_equal_blobs(tmp_path: Path) -> None:
    """No name and no time in the header: a layer pushed twice is one blob in the registry."""
    source = _tar_like(tmp_path / "layer.tar")
    first = gzip_file(source, tmp_path / "one.gz")
    os.utime(source, (1, 1))
    copy = tmp_path / "elsewhere.tar"
    copy.write_bytes(source.read_bytes())
    second = gzip_file(copy, tmp_path / "two.gz")
    assert first.digest == second.digest
    header = first.path.read_bytes()[:10]
    assert header[3] == 0 and header[4:8] == b"\0\0\0\0"  # no FNAME flag, MTIME 0


def test_without_isal_zlib_writes_the_same_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "isal", None)  # `from isal import igzip` raises ImportError
    source = _tar_like(tmp_path / "layer.tar")
    blob = gzip_file(source, tmp_path / "layer.tar.gz")
    assert gzip.decompress(blob.path.read_bytes()) == source.read_bytes()
    assert blob.digest == gzip_file(source, tmp_path / "again.gz").digest


def test_a_stream_gives_the_blob_gzip_file_gives_however_its_bytes_are_cut(tmp_path: Path) -> None:
    """ISA-L's output depends on how its input is cut: the stream re-cuts into fixed blocks, so a
    layer read from `docker save` is the same blob whatever sizes its reads had."""
    source = _tar_like(tmp_path / "layer.tar")
    data = source.read_bytes()
    expected = gzip_file(source, tmp_path / "file.gz")
    for number, sizes in enumerate(([1 << 20], [1000, 77_777, 1 << 20], [len(data)])):
        stream = GzipStream(tmp_path / f"stream-{number}.gz")
        offset, turn = 0, 0
        while offset < len(data):
            size = sizes[turn % len(sizes)]
            stream.write(data[offset : offset + size])
            offset, turn = offset + size, turn + 1
        blob = stream.finish()
        assert (blob.digest, blob.size) == (expected.digest, expected.size)
        assert stream.plain_size == len(data)


def test_a_stream_that_cannot_write_says_so_and_never_blocks_the_writer(tmp_path: Path) -> None:
    stream = GzipStream(tmp_path / "missing-folder" / "layer.gz")

    def write_more_than_the_queue_holds() -> None:
        for _ in range(100):
            try:
                stream.write(b"x" * 1000)
            except FileNotFoundError:
                return

    writer = threading.Thread(target=write_more_than_the_queue_holds, daemon=True)
    writer.start()
    writer.join(timeout=10)
    assert not writer.is_alive()  # the failed stream drains what it is given
    with pytest.raises(FileNotFoundError):
        stream.finish()
    with pytest.raises(FileNotFoundError):
        stream.write(b"more")
    stream.discard()


def test_a_discarded_stream_leaves_no_file(tmp_path: Path) -> None:
    stream = GzipStream(tmp_path / "layer.gz")
    stream.write(b"some bytes")
    stream.discard()
    assert list(tmp_path.iterdir()) == []
