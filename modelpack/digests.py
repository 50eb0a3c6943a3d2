"""File hashing shared by every stage that records or checks a sha256 (checkpoints,
render, signed record, registry uploads): one fast implementation, measured in
`benchmarks/bench_hash.py` against `sha256sum`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

_BUFFER = 1 << 20  # 1 MiB reads: large enough that sha256 itself is the bottleneck


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, streamed (hashlib releases the GIL, so threads hash in parallel)."""
    with open(path, "rb") as f:
        if hasattr(hashlib, "file_digest"):
            return hashlib.file_digest(f, "sha256").hexdigest()
        digest = hashlib.sha256()  # pragma: no cover - Python 3.10
        buffer = bytearray(_BUFFER)
        view = memoryview(buffer)
        while n := f.readinto(buffer):
            digest.update(view[:n])
        return digest.hexdigest()


def sha256_file_and_size(path: str | os.PathLike[str]) -> tuple[str, int]:
    """``(hex sha256, size in bytes)`` of a file."""
    return sha256_file(path), os.stat(path).st_size


def sha256_files(paths: Iterable[str | os.PathLike[str]], workers: int | None = None) -> list[str]:
    """Hash several files, in parallel threads; results in input order."""
    items = list(paths)
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(items) <= 1:
        return [sha256_file(p) for p in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(sha256_file, items))


@dataclass(frozen=True)
class FileRecord:
    """One file: its path (relative to a root the record's owner names), size in bytes and sha256 hex.

    The same record serves checkpoint downloads, the signed record and `verify --deep`.
    """

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}
