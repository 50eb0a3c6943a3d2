"""Temporary folders that a killed run does not leave behind for good.

A run removes its folders when it ends (``/tmp/modelpack-layers-*``, a push's layers, can hold
gigabytes); SIGKILL skips that. So each folder holds an `OWNER` file its run keeps an flock on
while the folder lives: the kernel drops the lock when the run dies, however it dies, and the next
run that makes a folder of the same kind removes each one whose lock it can take. A live run's
folder is never taken (a concurrent build, in another process or thread: flocks of separate
opens conflict), nor one without an owner file (another tool's, or one being made); unlike a pid
in the name, a lock is not fooled by a reused pid or by a run in another pid namespace.

Modelpack's runs made such folders before they held them (`OWN_PREFIXES`), and a killed one's
folder has no owner file. The sweep of its kind removes it too once neither it nor anything in it
has changed for `ABANDONED_AFTER`: no run writes nothing into its folder for that long. Only the
user's own folders are swept, symlinks are never followed, and a sweep that fails costs the run
a debug log line, never its work.
"""

from __future__ import annotations

import fcntl
import fnmatch
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OWNER = ".modelpack-owner"
_CLAIMING = ".modelpack-owner-new"  # locked before it is renamed to OWNER: a sweep never sees it free
# every prefix modelpack has made temporary folders with (`git log -p`), owner file or not
OWN_PREFIXES = (
    "modelpack-assemble-",
    "modelpack-base-",
    "modelpack-buildkit-",
    "modelpack-context-",
    "modelpack-deploy-",
    "modelpack-layers-",
    "modelpack-lock-",
    "modelpack-node-lock-",
    "modelpack-test-",
    "modelpack-venv-",
)
# An ownerless folder is a dead run's once it and its contents are this old (modification time).
# A run writes into its folder when it starts a step; the longest step that writes nothing
# meanwhile is an engine build or push, or a venv install (an hour at most): a day leaves a wide
# margin and still frees the disk of a killed run's folder the next day.
ABANDONED_AFTER = 24 * 3600.0
_log = logging.getLogger("modelpack.scratch")


@contextmanager
def folder(prefix: str, parent: str | Path | None = None, *, sweep_pattern: str | None = None) -> Iterator[str]:
    """A new folder ``PARENT/PREFIX*`` (``parent``: tempfile's place) held by this run and removed
    at the end of the block, after the folders of dead runs matching ``sweep_pattern`` (default
    ``PREFIX*``) in ``parent`` are removed."""
    pattern = sweep_pattern if sweep_pattern is not None else f"{prefix}*"
    try:
        sweep(parent, pattern)
    except Exception as error:  # a sweep that fails must not fail the run
        _log.debug("sweeping %s in %s failed: %s", pattern, parent or tempfile.gettempdir(), error)
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        claim = _claim(path)
    except BaseException:
        remove(path)
        raise
    try:
        yield path
    finally:
        remove(path)  # while the lock is held: no sweep takes it half-removed
        os.close(claim)


def _claim(path: str) -> int:
    claiming = os.path.join(path, _CLAIMING)
    handle = os.open(claiming, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.rename(claiming, os.path.join(path, OWNER))
    except BaseException:
        os.close(handle)
        raise
    return handle


def sweep(parent: str | Path | None, pattern: str) -> list[Path]:
    """Remove the folders matching ``pattern`` in ``parent`` whose runs are gone; returns them.

    One listing of ``parent`` (names only: ``/tmp`` may hold thousands) and one `lstat` per match.
    """
    root = str(parent if parent is not None else tempfile.gettempdir())
    try:
        names = _matching(os.listdir(root), pattern)
    except OSError:  # no such parent yet, or not ours to read
        return []
    user = os.geteuid()
    cutoff = time.time() - ABANDONED_AFTER if _own(pattern) else None
    removed: list[Path] = []
    for name in names:
        path = os.path.join(root, name)
        try:
            state = os.lstat(path)
        except OSError:
            continue
        # a symlink is never followed, nor another user's folder swept (root included)
        if stat.S_ISDIR(state.st_mode) and state.st_uid == user and _remove_if_abandoned(path, cutoff):
            removed.append(Path(path))
    return removed


def _matching(names: list[str], pattern: str) -> list[str]:
    """The names the glob ``pattern`` matches; ``PREFIX*`` as a prefix test (half a glob match's time)."""
    head = pattern[:-1]
    if pattern.endswith("*") and not any(magic in head for magic in "*?["):
        return [name for name in names if name.startswith(head)]
    return fnmatch.filter(names, pattern)


def _own(pattern: str) -> bool:
    """Whether an ownerless folder matching ``pattern`` can only be an earlier modelpack's."""
    return pattern.startswith(OWN_PREFIXES)


def _remove_if_abandoned(path: str, cutoff: float | None) -> bool:
    """Remove ``path`` when its run is gone: its owner file's lock is free, or it has no owner
    file and it and everything in it are older than ``cutoff`` (None: an ownerless folder stays)."""
    try:
        handle = os.open(os.path.join(path, OWNER), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:  # an earlier modelpack's, another tool's, or one being made
        if cutoff is None or not _untouched_since(path, cutoff):
            return False
        remove(path)
        return True
    except OSError:  # not ours to read, or a symlink
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


def _untouched_since(folder: str, cutoff: float) -> bool:
    """Whether ``folder`` and every entry below it were last modified before ``cutoff``; stops at
    the first younger one. Symlinks are judged by their own time, never followed; a folder that
    cannot be listed counts as touched (what it holds is unknown)."""
    pending = [folder]
    try:
        if os.lstat(folder).st_mtime >= cutoff:
            return False
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                        return False
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
    except OSError:
        return False
    return True


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
