"""Where a standby process listens, and which installation it belongs to.

The socket's name carries a digest of the installation: the interpreter, the search path and
every module file of modelpack (size and modification time; one that cannot be read, or a folder
that cannot be listed, gives a key no readable installation has). A standby started before an
upgrade or an edit of the source is not asked; it idles out on its own. The folder is private
to the user: one another user created, or that others can write to, is not used at all.
"""

from __future__ import annotations

import os
import stat
import sys

from modelpack.file_states import tree_states

try:  # not hashlib: it loads OpenSSL (the executable's start)
    from _blake2 import blake2b
except ImportError:  # an interpreter without the C module
    from hashlib import blake2b

_PACKAGE = os.path.dirname(
    os.path.dirname(os.path.realpath(__file__))
)  # no pathlib: the executable starts here


def folder() -> str:
    """`$XDG_RUNTIME_DIR/modelpack-standby-UID` (or the temporary folder's), owned by this user."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(base, f"modelpack-standby-{os.getuid()}")


def private_folder(create: bool) -> str | None:
    """The folder when it is this user's alone (made so when `create`); None otherwise."""
    path = folder()
    if create:
        try:
            os.mkdir(path, mode=0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return path


def installation_key() -> str:
    """A digest of what a loaded modelpack depends on; equal keys run the same code."""
    digest = blake2b(digest_size=12)
    for part in (
        # the interpreter, not the name it was started by: an environment's `python` and
        # `python3.11` (the executable's first line may name either) run the same code
        os.path.realpath(sys.executable),
        sys.prefix,
        sys.version,
        os.environ.get("PYTHONPATH", ""),
        os.environ.get("PYTHONHOME", ""),
    ):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    for entry in _installed_paths():  # a package installed, removed or upgraded changes its folder's time
        try:
            digest.update(f"{entry}\0{os.stat(entry).st_mtime_ns}\0".encode("utf-8", "surrogateescape"))
        except OSError:
            continue
    # each module's size and time; one that cannot be read (None) gives a key no readable one has
    modules = sorted(tree_states([_PACKAGE], folders=False, files=".py", skip=("_data",)))
    noted = [
        f"{path}\0unreadable\0" if state is None else f"{path}\0{state[2]}\0{state[3]}\0"
        for path, state in modules
    ]
    digest.update("".join(noted).encode("utf-8", "surrogateescape"))  # one update: the same digest, sooner
    return digest.hexdigest()


def _installed_paths() -> list[str]:
    """`sys.path` less its first entry when that is how Python was started (the script's folder
    or the working folder), which differs between `modelpack` and `python -m modelpack`."""
    script = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else ""
    if sys.path and sys.path[0] in ("", os.getcwd(), script):
        return sys.path[1:]
    return list(sys.path)


def socket_path(root: str, key: str) -> str:
    return os.path.join(root, f"{key}.sock")


__all__ = ["folder", "installation_key", "private_folder", "socket_path"]
