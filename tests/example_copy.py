"""Private copies of the bundled examples (`modelpack.resources`), for tests that build, lock or
change one: the shipped copy stays as it is.

`tests/` is on sys.path under pytest (`pythonpath` in pyproject.toml): `from example_copy import ...`.
"""

from __future__ import annotations

from collections.abc import Collection
from importlib.resources.abc import Traversable
from pathlib import Path

from modelpack.resources import data_dir


def copy_example(name: str, target: Path, *, skip: Collection[str] = ()) -> Path:
    """Copy the bundled example NAME to TARGET, without `__pycache__` and the file or directory
    names in SKIP (at any depth); returns TARGET."""
    _copy_tree(data_dir("examples").joinpath(name), target, {"__pycache__", *skip})
    return target


def _copy_tree(node: Traversable, target: Path, skip: Collection[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for child in node.iterdir():
        if child.name in skip:
            continue
        if child.is_dir():
            _copy_tree(child, target / child.name, skip)
        else:
            (target / child.name).write_bytes(child.read_bytes())
