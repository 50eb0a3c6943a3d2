"""Locate the data shipped inside the wheel (schemas, templates, base-image catalog, examples),
modelpack's caches, and what a process remembers of files it read (`file_sha256`).

In an installed wheel the top-level data folders live under ``modelpack/_data``;
in a source checkout they sit beside the package, and we fall back to them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack.file_states import FileState, file_state

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

_FOLDERS = ("schemas", "templates", "base-images", "examples")
# what jsonschema imports at its own import, when installed, only to check `format` keywords;
# rfc3987_syntax builds a grammar then (1.5 s and more)
_FORMAT_CHECK_PACKAGES = (
    "fqdn",
    "isoduration",
    "jsonpointer",
    "rfc3339_validator",
    "rfc3986_validator",
    "rfc3987",
    "rfc3987_syntax",
    "uri_template",
    "webcolors",
)
_OWN_PROCESS = False  # set by the `modelpack` executable: no other code shares its jsonschema
# A file changed this recently may change again within one tick of its file system's clock
# and keep its size and times: what was read from it then is not kept (`settled`).
SETTLE_NS = 2_000_000_000
_DIGESTS: dict[str, tuple[FileState, str]] = {}  # path -> (its state when hashed, sha256 hex)
_MAX_DIGESTS = 50_000


def own_process() -> None:
    """Called by the `modelpack` executable (`modelpack.cli.run`): this process runs modelpack
    alone, so jsonschema may be loaded without its format checkers (`schema_validator`). A
    program that imports modelpack as a library keeps jsonschema as it would load it."""
    global _OWN_PROCESS
    _OWN_PROCESS = True


def data_dir(name: str) -> Traversable:
    """Return the shipped data folder ``name`` (one of schemas, templates, base-images, examples)."""
    if name not in _FOLDERS:
        raise ValueError(f"unknown data folder {name!r}")
    packaged = resources.files("modelpack").joinpath("_data", name)
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parent.parent / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"modelpack data folder {name!r} is missing from this installation")


def read_text(folder: str, *parts: str) -> str:
    return data_dir(folder).joinpath(*parts).read_text(encoding="utf-8")


def schema_validator(schema: dict[str, Any]) -> Validator:
    """A JSON Schema (draft 2020-12) validator of `schema`, with jsonschema imported on first use.

    modelpack's schemas assert no `format`. In the `modelpack` executable (`own_process`), jsonschema
    is imported without its format checkers' packages (hidden while it loads, importable again
    after): rfc3987_syntax alone builds a grammar for seconds at import. In anyone else's process
    jsonschema is imported as it is, so their format checks stay whole."""
    import_jsonschema()
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema)


def import_jsonschema() -> None:
    """Import jsonschema as `schema_validator` needs it: in the `modelpack` executable without
    its format checkers' packages (a standby process preloads it this way too)."""
    loaded = "jsonschema" in sys.modules or not _OWN_PROCESS
    hidden = [] if loaded else [name for name in _FORMAT_CHECK_PACKAGES if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # importing it fails
    try:
        import jsonschema  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def cache_dir(*parts: str) -> Path:
    """A folder of modelpack's cache: ``$XDG_CACHE_HOME/modelpack/...`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "modelpack", *parts)


def write_text_atomic(path: Path, text: str, *, mode: int | None = 0o644) -> None:
    """Write ``path`` whole or not at all (a temporary file beside it, synced, then a rename):
    a full disk or a crash leaves the old file or none, never a short one. ``mode`` None gives
    the file the mode any new file gets (0666 less the umask, applied by the kernel, so the
    process umask is never changed to read it). Raises OSError."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_cache(path: Path) -> Any:
    """A JSON document of a cache, or None when it is missing or unreadable (caches only save time)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_cache(path: Path, value: Any) -> None:
    """Write a cache's JSON document atomically (`write_text_atomic`); one that cannot be written
    is no error. A zero-byte or corrupt document reads as a miss (`read_cache`). A document the
    file holds already is not written again (each write syncs the disk; a code-only build
    confirmed the same layer sources every time)."""
    text = json.dumps(value)
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, ValueError):
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    except OSError:
        pass


def settled(states: Iterable[FileState | None], since_ns: int) -> bool:
    """True when each state's last change is `SETTLE_NS` older than `since_ns` (the time its
    reading began): only then does an equal state later mean equal content. A path that could
    not be read (None, `file_states.tree_states`) is never settled: what was read is not kept."""
    return all(state is not None and max(state[3], state[4]) < since_ns - SETTLE_NS for state in states)


def file_sha256(path: str | os.PathLike[str], info: os.stat_result) -> str:
    """The sha256 hex of the file `info` (its `stat`, taken just before) describes. A file hashed
    earlier in this process is not read again while its state is the one it had then (a
    resident process rebuilds the same model and installation many times)."""
    key = os.fspath(path)
    state = file_state(info)
    known = _DIGESTS.get(key)
    if known is not None and known[0] == state:
        return known[1]
    started = time.time_ns()
    with open(key, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if settled([state], started):
        if len(_DIGESTS) >= _MAX_DIGESTS:
            _DIGESTS.clear()
        _DIGESTS[key] = (state, digest)
    return digest


@contextmanager
def cache_lock(*parts: str, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold an exclusive lock file of modelpack's cache while the block runs (True: it is held).

    Processes on one machine that would do the same slow work (a base build) take turns. It is
    an flock: the kernel drops it when its holder dies, so a crashed build blocks no one. With
    an unwritable cache the block runs unlocked (False): sharing work is only an optimisation.
    `on_wait` runs once, before waiting, when another process holds the lock.
    """
    path = cache_dir(*parts)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")  # closed by the with below, after the unlock
    except OSError:
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
