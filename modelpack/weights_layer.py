"""A deterministic, uncompressed tar layer of checkpoint files, and fast file hashing.

The same files always give the same bytes (sorted entries, fixed mtime, uid/gid 0,
fixed modes, GNU headers without pax timestamps), so the layer's diffID is stable
across runs and machines and registries can deduplicate it between model versions.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PREFIX = "app/1/checkpoints/"  # render.CHECKPOINTS_DIR, where Clarifai-style model.py looks
_BUFFER = 1 << 20  # 1 MiB reads: large enough that sha256 itself is the bottleneck
_SKIP_TOP_LEVEL = (".cache",)  # huggingface_hub's local-dir bookkeeping, never part of the weights


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


def sha256_files(paths: Iterable[str | os.PathLike[str]], workers: int | None = None) -> list[str]:
    """Hash several files, in parallel threads; results in input order."""
    items = list(paths)
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(items) <= 1:
        return [sha256_file(p) for p in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(sha256_file, items))


@dataclass(frozen=True)
class LayerInfo:
    path: Path
    digest: str  # "sha256:<hex>" of the uncompressed tar, i.e. the layer's diffID
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "digest": self.digest, "size": self.size}


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self._raw.write(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def source_date_epoch() -> int:
    """The fixed mtime for layer entries: SOURCE_DATE_EPOCH when set, else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else 0


def _entries(files_dir: Path) -> list[tuple[str, Path, bool]]:
    """(relative posix path, source path, is_dir) of everything to archive, following symlinks."""
    out: list[tuple[str, Path, bool]] = []
    for current, dirnames, filenames in os.walk(files_dir, followlinks=True):
        rel_dir = Path(current).relative_to(files_dir)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_TOP_LEVEL]
        for d in dirnames:
            out.append(((rel_dir / d).as_posix(), Path(current, d), True))
        for name in filenames:
            out.append(((rel_dir / name).as_posix(), Path(current, name), False))
    return out


def write_layer(
    files_dir: str | os.PathLike[str],
    out_tar: str | os.PathLike[str],
    prefix: str = DEFAULT_PREFIX,
    *,
    mtime: int | None = None,
) -> LayerInfo:
    """Write the files under ``files_dir`` as a reproducible tar placed at ``prefix`` in the image.

    Entries are sorted by path; directories (including those of the prefix) are 0755,
    files 0644 (0755 when executable), owner 0:0 without names, mtime fixed. Symlinks
    (as in the Hugging Face cache) are stored as the files they point to. The tar is
    written next to ``out_tar`` and renamed into place only when complete.
    """
    source = Path(files_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"checkpoint folder {source} does not exist")
    out = Path(out_tar)
    fixed_mtime = source_date_epoch() if mtime is None else mtime
    prefix = prefix.strip("/")
    members: dict[str, tuple[Path | None, bool]] = {}
    if prefix:
        parts = prefix.split("/")
        for i in range(1, len(parts) + 1):
            members["/".join(parts[:i])] = (None, True)
    for rel, path, is_dir in _entries(source):
        members[f"{prefix}/{rel}" if prefix else rel] = (path, is_dir)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb", buffering=_BUFFER) as raw:
            writer = _HashingWriter(raw)
            with tarfile.open(
                fileobj=writer,  # type: ignore[call-overload]
                mode="w",
                format=tarfile.GNU_FORMAT,
                copybufsize=_BUFFER,
            ) as tar:
                for name in sorted(members, key=lambda n: n.encode("utf-8", "surrogateescape")):
                    source_path, is_dir = members[name]
                    info = tarfile.TarInfo(name)
                    info.mtime = fixed_mtime
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if is_dir:
                        info.type = tarfile.DIRTYPE
                        info.mode = 0o755
                        tar.addfile(info)
                        continue
                    assert source_path is not None
                    st = source_path.stat()
                    if not stat.S_ISREG(st.st_mode):
                        continue  # sockets, fifos: not weights
                    info.size = st.st_size
                    info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                    with open(source_path, "rb") as f:
                        tar.addfile(info, f)
            raw.flush()
            digest = writer.hexdigest()
            size = writer.size
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return LayerInfo(path=out, digest=f"sha256:{digest}", size=size)
