"""What tells a file or folder changed without reading it, and the states of a whole tree, with
one rule for a path that cannot be read.

Three callers compare the states of the package's folders and files against states they noted
earlier: the installation digest (`image.build_records`), the runtime library a process keeps
(`pipeline.runtime_library`) and the standby process's key (`standby.place`). A path that cannot
be read (a dangling link, a folder that cannot be listed) must neither crash them nor look
unchanged: it is noted with the state None, which equals no state of a readable path, and a
memo keeps nothing noted None (`resources.settled`). Only `os` is imported: the executable
computes the standby's key from these before each command it hands over.
"""

from __future__ import annotations

import os

FileState = tuple[int, int, int, int, int]  # device, inode, size, mtime_ns, ctime_ns


def file_state(info: os.stat_result) -> FileState:
    """What tells a file's content changed without reading it: a write changes ctime (which no
    one can set back), a replacement the inode."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def path_state(path: str) -> FileState | None:
    """The state of `path` (links followed); None when it cannot be read."""
    try:
        return file_state(os.stat(path))
    except OSError:
        return None


def tree_states(
    roots: list[str], *, folders: bool = True, files: str | None = "", skip: tuple[str, ...] = ()
) -> list[tuple[str, FileState | None]]:
    """(path, state) of each folder under `roots`, the roots too (when `folders`), and of each
    file in them whose name ends with `files` ("" every file, None none). Bytecode caches and
    the folders named in `skip` are not entered. A linked folder is (a source checkout may link a
    subpackage in), each folder a link leads to once: a link back up the tree, or to a folder
    already entered by a link, is not followed again. A file that cannot be read, and a folder
    that cannot be listed, are noted with None; nothing raises."""
    skipped = ("__pycache__", *skip)
    every = files == ""
    found: list[tuple[str, FileState | None]] = []
    pending = list(roots)
    linked: set[tuple[int, int]] | None = None  # (device, inode) of the roots and linked folders
    while pending:
        folder = pending.pop()
        if folders:  # before listing it: a change while listing shows next time
            found.append((folder, path_state(folder)))
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:  # no stat but for a link: the folder's listing says what an entry is
                        is_folder = entry.is_dir()
                    except OSError:  # a link that cannot be followed (a loop): noted below, if a file of ours
                        is_folder = False
                    if is_folder:
                        if entry.name in skipped:
                            continue
                        if entry.is_symlink():
                            if linked is None:
                                linked = _identities(roots)
                            info = entry.stat()  # kept by the entry from is_dir's
                            if (info.st_dev, info.st_ino) in linked:
                                continue
                            linked.add((info.st_dev, info.st_ino))
                        pending.append(entry.path)
                    elif every or (files is not None and entry.name.endswith(files)):
                        try:
                            info = entry.stat()
                        except OSError:
                            found.append((entry.path, None))
                            continue
                        # file_state's tuple, without a call per file (every build and command walks)
                        state = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
                        found.append((entry.path, state))
        except OSError:
            found.append((folder, None))
    return found


def _identities(paths: list[str]) -> set[tuple[int, int]]:
    """(device, inode) of each path that can be read."""
    found: set[tuple[int, int]] = set()
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue
        found.add((info.st_dev, info.st_ino))
    return found
