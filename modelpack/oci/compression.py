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
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

GZIP_LEVEL = 1  # the size of level 6 within about 10 %, at several times the speed
_BUFFER = 1 << 20  # ISA-L's output depends on how its input is cut: always these blocks


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
    """Compress the tar `source` into `target`; its digest and size as the registry names it.
    Through `GzipStream`, so a file and a stream of the same bytes give the same blob."""
    stream = GzipStream(target)
    try:
        with open(source, "rb") as raw:
            while chunk := raw.read(_BUFFER):
                stream.write(chunk)
        return stream.finish()
    except BaseException:
        stream.discard()
        raise


class GzipStream:
    """A blob gzipped as its bytes arrive, in a thread of its own (ISA-L and zlib let go of the
    GIL), so compressing overlaps reading what comes next. Same bytes, same blob as `gzip_file`.
    """

    def __init__(self, target: Path) -> None:
        self.path = target
        self.plain_size = 0
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._blob: GzipBlob | None = None
        self._error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._compress, name="modelpack-gzip", daemon=True)
        self._thread.start()

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._chunks.put(chunk)
        self.plain_size += len(chunk)

    def finish(self) -> GzipBlob:
        """Wait for the last block; the blob, or what went wrong writing it."""
        self._end()
        if self._error is not None:
            raise self._error
        assert self._blob is not None
        return self._blob

    def discard(self) -> None:
        self._end()
        self.path.unlink(missing_ok=True)

    def _end(self) -> None:
        if not self._done:
            self._done = True
            self._chunks.put(None)
        self._thread.join()

    def _compress(self) -> None:
        ended = False
        try:
            with open(self.path, "wb") as out:
                hashing = HashingWriter(out)
                with _gzip_writer(hashing) as packed:
                    pending = bytearray()
                    while (chunk := self._chunks.get()) is not None:
                        pending += chunk
                        while len(pending) >= _BUFFER:
                            packed.write(bytes(pending[:_BUFFER]))
                            del pending[:_BUFFER]
                    ended = True
                    if pending:
                        packed.write(bytes(pending))
            self._blob = GzipBlob(self.path, f"sha256:{hashing.hexdigest()}", hashing.size)
        except BaseException as error:  # handed to the writer; the rest of the input is drained
            self._error = error
            while not ended and self._chunks.get() is not None:
                pass


def _gzip_writer(out: HashingWriter) -> gzip.GzipFile:
    try:
        from isal import igzip  # the fast deflate; optional
    except ImportError:
        return gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=GZIP_LEVEL)
    return igzip.IGzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=GZIP_LEVEL)


__all__ = ["GZIP_LEVEL", "GzipBlob", "GzipStream", "HashingWriter", "gzip_file"]
