"""`oci.compression`: the gzip blobs modelpack uploads as layers."""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
from pathlib import Path

import pytest

from modelpack.oci.compression import gzip_file


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
