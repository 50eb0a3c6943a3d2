"""`file_states.tree_states`: the states of a tree's folders and files, and its one rule for a
path that cannot be read (noted None: no crash, and no match with any state a readable path has),
which the installation digest, the runtime library and the standby key all rely on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from modelpack.file_states import file_state, tree_states
from modelpack.resources import SETTLE_NS, settled
from tests.unit import fakes


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "a.py").write_text("a = 1\n")
    (root / "notes.txt").write_text("n")
    (root / "sub" / "b.py").write_text("b = 1\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"compiled")
    return root


def test_folders_and_files_are_noted_bytecode_caches_aside(tree: Path) -> None:
    everything = dict(tree_states([str(tree)]))
    files = ["a.py", "notes.txt", "sub/b.py"]
    assert set(everything) == {str(tree), str(tree / "sub"), *(str(tree / name) for name in files)}
    assert everything[str(tree / "a.py")] == file_state(os.stat(tree / "a.py"))
    assert everything[str(tree / "sub")] == file_state(os.stat(tree / "sub"))
    assert dict(tree_states([str(tree)], files=None)).keys() == {str(tree), str(tree / "sub")}
    modules = tree_states([str(tree)], folders=False, files=".py", skip=("sub",))
    assert modules == [(str(tree / "a.py"), everything[str(tree / "a.py")])]


@pytest.mark.parametrize("change", ["file rewritten", "file added", "folder added", "file removed"])
def test_a_change_changes_the_states(tree: Path, change: str) -> None:
    before = sorted(tree_states([str(tree)]))
    if change == "file rewritten":
        (tree / "sub" / "b.py").write_text("b = 2\n")
    elif change == "file added":
        (tree / "sub" / "c.py").write_text("")
    elif change == "folder added":
        (tree / "sub" / "deeper").mkdir()
    else:
        (tree / "notes.txt").unlink()
    assert sorted(tree_states([str(tree)])) != before


@pytest.mark.parametrize("planted", ["dangling link", "link to itself"])
def test_a_file_that_cannot_be_read_is_noted_none(tree: Path, planted: str) -> None:
    path = tree / "sub" / "ghost.py"
    path.symlink_to(tree / "missing.py" if planted == "dangling link" else path)
    everything = tree_states([str(tree)])  # the installation's walk: no error
    modules = tree_states([str(tree)], folders=False, files=".py")  # the standby key's
    assert (str(path), None) in everything and (str(path), None) in modules
    path.unlink()
    path.write_text("ghost = 1\n")  # readable now: a state of its own, so the notes differ
    assert dict(tree_states([str(tree)], folders=False, files=".py"))[str(path)] is not None


def test_a_folder_that_cannot_be_listed_is_noted_none(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not left out, as if it were not there: what it holds may change unseen."""
    folder = tree / "sub"
    fakes.unlistable(monkeypatch, folder)
    for options in ({"files": ""}, {"files": None}, {"folders": False, "files": ".py"}):
        noted = tree_states([str(tree)], **options)
        assert (str(folder), None) in noted
        assert str(folder / "b.py") not in dict(noted)  # not entered
    monkeypatch.undo()
    assert (str(folder), None) not in tree_states([str(tree)])


def test_a_state_noted_none_is_never_settled(tree: Path) -> None:
    """What was read beside an unreadable path is not kept (`resources.settled`)."""
    later = time.time_ns() + 2 * SETTLE_NS
    states = [state for _, state in tree_states([str(tree)])]
    assert settled(states, later)
    assert not settled([*states, None], later)
