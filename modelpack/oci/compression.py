"""Layer blobs as the registry stores them: a tar, gzip-compressed the same way every time.

A registry transfers and stores what it is given; every client pulls gzip layers (the engine
here, 20.10, cannot pull zstd ones), so gzip it is. ISA-L's deflate (the `isal` package) is
several times faster than zlib's at the same ratio, which lets a push compress a layer while
the engine still streams the next one; without it, zlib at level 1 gives the same format.
The gzip header carries no name and no time, so equal tars give equal digests on one machine.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

GZIP_LEVEL = 1  # the size of level 6 within about 10 %, at several times the speed
_BUFFER = 1 << 20


class HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._digest.update(data)
        self._raw.write(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


@dataclass(frozen=True)
class GzipBlob:
    path: Path
    digest: str  # "sha256:<hex>" of the compressed bytes: the blob's name in the registry
    size: int


def gzip_file(source: Path, target: Path) -> GzipBlob:
    """Compress the tar `source` into `target`; its digest and size as the registry names it."""
    with open(source, "rb") as raw, open(target, "wb") as out:
        hashing = HashingWriter(out)
        with _gzip_writer(hashing) as packed:
            while chunk := raw.read(_BUFFER):
                packed.write(chunk)
    return GzipBlob(target, f"sha256:{hashing.hexdigest()}", hashing.size)


def _gzip_writer(out: HashingWriter) -> gzip.GzipFile:
    try:
        from isal import igzip  # the fast deflate; optional
    except ImportError:
        return gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=GZIP_LEVEL)
    return igzip.IGzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=GZIP_LEVEL)


__all__ = ["GZIP_LEVEL", "GzipBlob", "HashingWriter", "gzip_file"]
