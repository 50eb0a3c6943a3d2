"""`file_states.tree_states`: the states of a tree's folders and files, and its one rule for a
path that cannot be read (noted None: no crash, and no match with any state a readable path has),
which the installation digest, the runtime library and the standby key all rely on."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from modelpack.file_states import FileState, file_state, tree_states
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


def test_a_linked_folder_is_entered(tree: Path, tmp_path: Path) -> None:
    """A source checkout may link a subpackage in: an edit there is an edit of the tree."""
    outside = tmp_path / "checkout" / "extra"
    outside.mkdir(parents=True)
    (outside / "c.py").write_text("c = 1\n")
    (tree / "extra").symlink_to(outside, target_is_directory=True)
    everything = dict(tree_states([str(tree)]))
    assert everything[str(tree / "extra")] == file_state(os.stat(outside))
    assert everything[str(tree / "extra" / "c.py")] == file_state(os.stat(outside / "c.py"))
    before = sorted(tree_states([str(tree)], folders=False, files=".py"))
    assert (str(tree / "extra" / "c.py"), everything[str(tree / "extra" / "c.py")]) in before
    (outside / "c.py").write_text("c = 22\n")
    assert sorted(tree_states([str(tree)], folders=False, files=".py")) != before


def test_link_cycles_end(tree: Path) -> None:
    """Links back up the tree, into a folder holding the link, and in a circle: each folder a
    link leads to is entered once at most, and a link that cannot be followed is noted None."""
    (tree / "sub" / "up").symlink_to(tree, target_is_directory=True)
    (tree / "sub" / "again").symlink_to(tree / "sub", target_is_directory=True)
    (tree / "one").symlink_to(tree / "two")
    (tree / "two").symlink_to(tree / "one")
    walked: list[list[tuple[str, FileState | None]]] = []
    walk = threading.Thread(target=lambda: walked.append(tree_states([str(tree)])), daemon=True)
    walk.start()
    walk.join(timeout=30)
    assert walked, "the walk did not end"
    noted = dict(walked[0])
    assert len(noted) == len(walked[0])  # no path noted twice
    assert noted[str(tree / "one")] is None and noted[str(tree / "two")] is None
    assert str(tree / "sub" / "up" / "a.py") not in noted  # the root again: not entered
    assert str(tree / "sub" / "again" / "b.py") in noted  # entered once,
    assert not any(path.startswith(str(tree / "sub" / "again" / "again")) for path in noted)  # not twice
