"""The runtime library an image carries: only the modules the container runs.

An image runs `python -m modelpack.runtime` (the server, the SDK that model.py imports, the
Clarifai shim) and, for `checkpoints.when: build`, `python -m modelpack.project.checkpoints
fetch` in a build stage that uses the same library folder. The modules are the import closure
of those entry points, read statically with `ast` (imports inside functions count, imports under
`if TYPE_CHECKING:` do not), so the build, registry and signing code never enter an image and
a new runtime import is shipped without anyone listing it. Parsing costs a render ~60 ms, so
each module's imports are cached by its content digest (`runtime-library/` in the cache), and a
process keeps the files it read (`library`) while no file or folder of the package or of the data
it ships changed its state: a resident process (`modelpack standby`) renders without reading them.
"""

from __future__ import annotations

import ast
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from modelpack.file_states import FileState, path_state, tree_states
from modelpack.resources import cache_dir, data_dir, read_cache, settled, write_cache

PACKAGE = "modelpack"
# What the image runs: the entry point (whose imports reach the server, runner, SDK and
# Clarifai shim) and the checkpoint download of the `checkpoints.when: build` stage.
RUNTIME_ENTRY_POINTS = ("modelpack.runtime.__main__", "modelpack.project.checkpoints")
# Data folders (`modelpack.resources.data_dir`) shipped when their reader is in the closure.
_DATA_READERS = {"modelpack.resources": ("schemas", "templates", "base-images")}
# module name + content digest -> its modelpack imports; a new name when `_imported_names` changes
_IMPORTS_CACHE = ("runtime-library", "imports-v1.json")
# what this process read: roots -> (the state of each path it depends on, its files)
_READ: dict[tuple[str, ...], tuple[tuple[tuple[str, FileState | None], ...], tuple[LibraryFile, ...]]] = {}
# reads a file's bytes, noting its state before the read
_Reader = Callable[[Traversable], bytes]


@dataclass(frozen=True)
class LibraryFile:
    """One file of a library, as read: its path under `modelpack/`, bytes and sha256 hex."""

    rel: str
    source: Traversable
    data: bytes
    sha256: str


def runtime_library_files() -> list[tuple[str, Traversable]]:
    """The image's library: (path under `modelpack/`, file), sorted by path."""
    return library_files(RUNTIME_ENTRY_POINTS)


def runtime_library() -> tuple[LibraryFile, ...]:
    """The image's library, read (`library`)."""
    return library(RUNTIME_ENTRY_POINTS)


def library_files(roots: Iterable[str]) -> list[tuple[str, Traversable]]:
    """The source files of the import closure of `roots`, plus the data their modules read."""
    return [(item.rel, item.source) for item in library(roots)]


def library(roots: Iterable[str]) -> tuple[LibraryFile, ...]:
    """`library_files(roots)` with each file's bytes and digest, sorted by path. This process
    reads them again only when a file, or a folder of the package or of the data (where a new
    module would appear), changed its state since; one changed moments before it was read
    (`resources.settled`) is read every time."""
    key = tuple(roots)
    known = _READ.get(key)
    if known is not None and all(path_state(path) == state for path, state in known[0]):
        return known[1]
    started = time.time_ns()
    package = resources.files(PACKAGE)
    on_disk = isinstance(package, Path)  # else (a zip) nothing is kept
    # the folders, where a new module would appear; the files as they are read
    states: dict[str, FileState | None] = dict(tree_states([str(package)], files=None) if on_disk else ())
    data: dict[str, bytes] = {}

    def read(node: Traversable) -> bytes:
        path = os.fspath(node) if isinstance(node, Path) else ""
        if path and path not in data:
            states[path] = path_state(path)  # before reading: a change while reading shows later
            data[path] = node.read_bytes()
        return data[path] if path else node.read_bytes()

    closure = _closure(key, read)
    files = [(_rel_path(name, source), source) for name, source in closure.items()]
    for reader, names in _DATA_READERS.items():
        if reader in closure:
            for name in names:
                folder = data_dir(name)
                if isinstance(folder, Path) and on_disk:
                    states.update(tree_states([str(folder)], files=None))
                files.extend((f"_data/{name}/{rel}", node) for rel, node in _walk(folder))
    read_files = []
    for rel, node in sorted(files, key=lambda item: item[0]):
        content = read(node)
        read_files.append(LibraryFile(rel, node, content, hashlib.sha256(content).hexdigest()))
    result = tuple(read_files)
    if on_disk and settled(states.values(), started):
        _READ[key] = (tuple(states.items()), result)
    return result


def module_closure(roots: Iterable[str]) -> dict[str, Traversable]:
    """Module name -> source file of every modelpack module that importing `roots` may load."""
    return _closure(roots, lambda node: node.read_bytes())


def _closure(roots: Iterable[str], read: _Reader) -> dict[str, Traversable]:
    package = resources.files(PACKAGE)
    todo = list(roots)
    for root in todo:
        if _source(package, root) is None:
            raise ValueError(f"{root} is not a module of {PACKAGE}")
    cache_path = cache_dir(*_IMPORTS_CACHE)
    cached = read_cache(cache_path)
    known: dict[str, list[str]] = cached if isinstance(cached, dict) else {}
    used: dict[str, list[str]] = {}
    found: dict[str, Traversable] = {}
    while todo:
        name = todo.pop()
        if name in found:
            continue
        source = _source(package, name)
        if source is None:  # `from modelpack.x import name` where name is not a module
            continue
        found[name] = source
        parts = name.split(".")
        todo.extend(".".join(parts[:end]) for end in range(1, len(parts)))  # parents' __init__ run first
        text = read(source)
        key = f"{name} {hashlib.sha256(text).hexdigest()}"
        imported = known.get(key)
        if not isinstance(imported, list):
            tree = ast.parse(text, filename=f"{name}.py")
            imported = sorted(set(_imported_names(tree, name, source.name == "__init__.py")))
        used[key] = imported
        todo.extend(str(n) for n in imported)
    if used != known:
        write_cache(cache_path, used)
    return found


def _source(package: Traversable, name: str) -> Traversable | None:
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    folder = package.joinpath(*parts[1:]) if len(parts) > 1 else package
    init = folder.joinpath("__init__.py")
    if folder.is_dir() and init.is_file():
        return init
    module = package.joinpath(*parts[1:-1], f"{parts[-1]}.py") if len(parts) > 1 else None
    return module if module is not None and module.is_file() else None


def _rel_path(name: str, source: Traversable) -> str:
    parts = name.split(".")[1:]
    if source.name == "__init__.py":
        parts.append("__init__")
    return "/".join(parts) + ".py"


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    """Every modelpack name an import statement of `tree` may load: modules and `from` targets."""
    base_package = module if is_package else module.rpartition(".")[0]
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            origin = node.module or ""
            if node.level:
                anchor = base_package.split(".")[: len(base_package.split(".")) - node.level + 1]
                origin = ".".join([*anchor, *([origin] if origin else [])])
            names = [origin, *(f"{origin}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement in `body` and the blocks nested in it (imports are statements, so
    expressions are skipped), except the bodies of `if TYPE_CHECKING:`, which never run."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If) and _is_type_checking(stmt.test):
            yield from _statements(stmt.orelse)
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(stmt, field, []))
        for handler in getattr(stmt, "handlers", []):
            yield from _statements(handler.body)
        for case in getattr(stmt, "cases", []):
            yield from _statements(case.body)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name == "__pycache__" or child.name.endswith((".pyc", ".pyo")):
            continue
        rel = prefix + child.name
        if child.is_dir():
            yield from _walk(child, rel + "/")
        elif child.is_file():
            yield rel, child
