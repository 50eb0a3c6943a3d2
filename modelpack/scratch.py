"""Temporary folders that a killed run does not leave behind for good.

A run removes its folders when it ends (``/tmp/modelpack-layers-*``, a push's layers, can hold
gigabytes); SIGKILL skips that. So each folder holds an `OWNER` file its run keeps an flock on
while the folder lives: the kernel drops the lock when the run dies, however it dies, and the next
run that makes a folder of the same kind removes each one whose lock it can take. A live run's
folder is never taken (a concurrent build, in another process or thread: flocks of separate
opens conflict), nor one without an owner file (another tool's, or one being made); unlike a pid
in the name, a lock is not fooled by a reused pid or by a run in another pid namespace.
"""

from __future__ import annotations

import fcntl
import fnmatch
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OWNER = ".modelpack-owner"
_CLAIMING = ".modelpack-owner-new"  # locked before it is renamed to OWNER: a sweep never sees it free


@contextmanager
def folder(prefix: str, parent: str | Path | None = None, *, sweep_pattern: str | None = None) -> Iterator[str]:
    """A new folder ``PARENT/PREFIX*`` (``parent``: tempfile's place) held by this run and removed
    at the end of the block, after the folders of dead runs matching ``sweep_pattern`` (default
    ``PREFIX*``) in ``parent`` are removed."""
    sweep(parent, sweep_pattern if sweep_pattern is not None else f"{prefix}*")
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        claim = _claim(Path(path))
    except BaseException:
        remove(path)
        raise
    try:
        yield path
    finally:
        remove(path)  # while the lock is held: no sweep takes it half-removed
        os.close(claim)


def _claim(path: Path) -> int:
    handle = os.open(path / _CLAIMING, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.rename(path / _CLAIMING, path / OWNER)
    except BaseException:
        os.close(handle)
        raise
    return handle


def sweep(parent: str | Path | None, pattern: str) -> list[Path]:
    """Remove the folders matching ``pattern`` in ``parent`` whose runs are gone; returns them."""
    root = Path(parent if parent is not None else tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(root) if fnmatch.fnmatchcase(e.name, pattern)]
    except OSError:  # no such parent yet, or not ours to read
        return removed
    for entry in entries:
        try:
            is_folder = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if is_folder and _remove_if_abandoned(Path(entry.path)):
            removed.append(Path(entry.path))
    return removed


def _remove_if_abandoned(path: Path) -> bool:
    try:
        handle = os.open(path / OWNER, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # no owner file (not a run's folder, or being made), or another user's
        return False
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its run is alive
            return False
        remove(path)
        return True
    finally:
        os.close(handle)


def remove(path: str | Path) -> None:
    """Remove a folder tree, read-only folders inside it included; never raises."""
    try:
        shutil.rmtree(path)
    except OSError:
        for inner, _, _ in os.walk(path):  # symlinks are not followed
            try:
                os.chmod(inner, stat.S_IRWXU)
            except OSError:
                pass
        shutil.rmtree(path, ignore_errors=True)
