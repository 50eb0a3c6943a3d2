"""The files of a model directory that go into an image, as `render` copies them and `validate`
checks them: ignore rules applied, symlinks followed inside the directory and refused when they
leave it or loop."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from modelpack.errors import ModelFileError
from modelpack.project.ignore import is_virtualenv, load_rules

CONTEXT_DIGESTS = "context.sha256"  # a rendered context's file list (render writes it)
DOCKERFILE = "Dockerfile"


@dataclass(frozen=True)
class SourceFile:
    rel: str  # path relative to the model directory, '/'-separated
    path: Path
    executable: bool


def collect_model_files(root: Path, *, skip: tuple[Path, ...] = ()) -> list[SourceFile]:
    """Files of the model directory that belong in the context (ignore rules applied).

    Symlinks are followed when they stay inside the directory and refused otherwise.
    """
    root = root.resolve()
    rules = load_rules(root)
    skipped = {p.resolve() for p in skip}
    found: list[SourceFile] = []

    def visit(directory: Path, prefix: str, seen: frozenset[Path]) -> None:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            path = Path(entry.path)
            link = entry.is_symlink()
            is_dir = os.path.isdir(path) if link else entry.is_dir(follow_symlinks=False)
            if rules.ignored(rel, is_dir=is_dir):
                continue
            if link:
                target_text = os.readlink(path)
                if not path.exists():
                    kind = "symlink loop" if _loops(path) else "broken symlink"
                    raise ModelFileError(rel, f"{kind} (-> {target_text})")
                target = path.resolve()
                if target != root and root not in target.parents:
                    raise ModelFileError(
                        rel,
                        f"symlink points outside the model directory (-> {target_text}); "
                        "copy the file into the directory or list it in .modelpackignore",
                    )
            if is_dir:
                real = path.resolve()
                if real in skipped or is_virtualenv(path) or is_rendered_context(path):
                    continue
                if real in seen:
                    raise ModelFileError(rel, f"symlink loop (-> {os.readlink(path)})")
                visit(path, rel + "/", seen | {real})
                continue
            mode = os.stat(path).st_mode
            if not stat.S_ISREG(mode):
                raise ModelFileError(rel, "not a regular file; remove it or list it in .modelpackignore")
            found.append(SourceFile(rel, path, bool(mode & 0o111)))

    try:
        visit(root, "", frozenset({root}))
    except OSError as error:  # a folder or file the user cannot read: bad input, located
        where = Path(os.fsdecode(error.filename or root))
        rel = where.relative_to(root).as_posix() if where.is_relative_to(root) else str(where)
        raise ModelFileError(rel, f"cannot read: {error.strerror}") from None
    return found


def _loops(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def is_rendered_context(path: Path) -> bool:
    """An earlier `modelpack render` output left inside the model directory: never nested."""
    try:
        return (path / CONTEXT_DIGESTS).is_file() and (path / DOCKERFILE).is_file()
    except OSError:  # unreadable: not a render of ours
        return False
