"""Temporary folders of killed runs are swept by the next run, never a live run's: real processes,
killed with SIGKILL (no cleanup of theirs runs), against the folders of `modelpack.scratch`."""

from __future__ import annotations

import ast
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from scratch_runs import LAYERS, holder, killed

from modelpack import scratch

PACKAGE = Path(scratch.__file__).resolve().parent
def test_a_killed_runs_folder_is_left_behind_and_removed_by_the_next_run(tmp_path: Path) -> None:
    with holder(tmp_path) as (process, left):
        killed(process)
    assert (left / "layer.tar").is_file()  # SIGKILL: the run's own cleanup never ran
    with scratch.folder(LAYERS, tmp_path) as mine:
        assert not left.exists()
        assert [p.name for p in tmp_path.iterdir()] == [Path(mine).name]
    assert list(tmp_path.iterdir()) == []  # and the next run's own folder goes at its end


def test_a_live_concurrent_runs_folder_is_kept_until_its_run_is_gone(tmp_path: Path) -> None:
    with holder(tmp_path) as (process, live):
        with scratch.folder(LAYERS, tmp_path) as mine:
            assert (live / "layer.tar").is_file()  # another process's live run
            with scratch.folder(LAYERS, tmp_path) as second:  # and another run in this process
                assert Path(mine).is_dir() and Path(second).is_dir()
            assert scratch.sweep(tmp_path, f"{LAYERS}*") == []
            assert (live / "layer.tar").is_file()
        killed(process)
        assert scratch.sweep(tmp_path, f"{LAYERS}*") == [live]
        assert not live.exists()


def test_runs_in_threads_keep_each_others_folders(tmp_path: Path) -> None:
    """Concurrent builds through the library in one process: each sweep sees the others held."""
    errors: list[str] = []
    start = threading.Barrier(8)

    def run() -> None:
        start.wait()
        for _ in range(20):
            with scratch.folder(LAYERS, tmp_path) as folder:
                (Path(folder) / "f").write_bytes(b"1")
                if (Path(folder) / "f").read_bytes() != b"1":
                    errors.append(folder)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and list(tmp_path.iterdir()) == []


def test_folders_without_an_owner_and_other_kinds_are_left_alone(tmp_path: Path) -> None:
    """A folder with the prefix but no owner file (another tool's, an older modelpack's, or one
    being made) may belong to a live run: kept. A dead run's folder of another kind waits for a
    run of its own kind."""
    unknown = tmp_path / f"{LAYERS}made-by-someone-else"
    unknown.mkdir()
    with holder(tmp_path, "modelpack-lock-") as (process, other_kind):
        killed(process)
    with scratch.folder(LAYERS, tmp_path):
        assert unknown.is_dir() and other_kind.is_dir()
    with scratch.folder("modelpack-lock-", tmp_path):
        assert not other_kind.exists()


def test_every_temporary_folder_of_modelpack_is_a_scratch_folder() -> None:
    """A folder made with tempfile directly would outlive a killed run (``/tmp/modelpack-layers-*``
    held a push's layers, gigabytes). The known exception: the render output's sibling (in the
    user's own folder, renamed over the output)."""
    allowed = {"scratch", "pipeline.rendering"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "_data":  # the wheel's data files (the catalog's generator)
            continue
        dotted = ".".join(relative.with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("TemporaryDirectory", "mkdtemp"):
                if dotted not in allowed:
                    found.append(f"{dotted}:{node.lineno}")
    assert found == []


DAY_AND_AN_HOUR = scratch.ABANDONED_AFTER + 3600


def aged(path: Path, seconds: float) -> Path:
    """``path`` and everything below it last modified ``seconds`` ago (children first: making
    an entry touches its folder)."""
    when = time.time() - seconds
    for inner in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        os.utime(inner, (when, when), follow_symlinks=False)
    os.utime(path, (when, when), follow_symlinks=False)
    return path


def earlier_versions_folder(parent: Path, name: str) -> Path:
    """A folder as a modelpack without owner files left it: layers, an inner folder, no owner."""
    folder = parent / name
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / "layer.tar").write_bytes(b"x" * 4096)
    (folder / "manifest.json").write_text("[]", encoding="utf-8")
    return folder


def test_an_earlier_versions_folder_goes_once_it_and_its_contents_are_a_day_old(tmp_path: Path) -> None:
    old = aged(earlier_versions_folder(tmp_path, f"{LAYERS}old"), DAY_AND_AN_HOUR)
    young = earlier_versions_folder(tmp_path, f"{LAYERS}young")  # a live run of that version
    almost = aged(earlier_versions_folder(tmp_path, f"{LAYERS}almost"), scratch.ABANDONED_AFTER - 600)
    # an old folder whose run still writes deep inside it: the folder's own time is not enough
    writing = aged(earlier_versions_folder(tmp_path, f"{LAYERS}writing"), DAY_AND_AN_HOUR)
    (writing / "blobs" / "layer.tar").write_bytes(b"y" * 4096)
    os.utime(writing / "blobs", (time.time() - DAY_AND_AN_HOUR,) * 2)
    with scratch.folder(LAYERS, tmp_path) as mine:
        assert not old.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [Path(mine).name, young.name, almost.name, writing.name]
        )
    assert (young / "blobs" / "layer.tar").is_file() and (writing / "blobs" / "layer.tar").is_file()


def test_old_ownerless_folders_of_other_prefixes_and_kinds_stay(tmp_path: Path) -> None:
    """Without an owner file, only modelpack's own prefixes are known to be modelpack's; and a
    kind's sweep takes only its own kind, as for folders of dead runs."""
    foreign = aged(earlier_versions_folder(tmp_path, "modelpack-bench-scratch-x"), DAY_AND_AN_HOUR)
    other_kind = aged(earlier_versions_folder(tmp_path, "modelpack-context-x"), DAY_AND_AN_HOUR)
    with scratch.folder("modelpack-bench-scratch-", tmp_path), scratch.folder(LAYERS, tmp_path):
        assert foreign.is_dir() and other_kind.is_dir()
    with scratch.folder("modelpack-context-", tmp_path):
        assert not other_kind.exists()


def test_a_sweep_never_follows_a_symlink(tmp_path: Path) -> None:
    """A link's own time counts, not its target's; a link is removed, never what it points to."""
    written = tmp_path / "written-now"  # what a link inside an old folder points to: young
    (written / "keep").mkdir(parents=True)
    (written / "keep" / "file").write_bytes(b"mine")
    old_outside = aged(earlier_versions_folder(tmp_path, "old-outside"), DAY_AND_AN_HOUR)
    parent = tmp_path / "tmp"
    parent.mkdir()
    old = earlier_versions_folder(parent, f"{LAYERS}old")
    (old / "blobs" / "link").symlink_to(written / "keep")
    (old / "file-link").symlink_to(written / "keep" / "file")
    aged(old, DAY_AND_AN_HOUR)
    named_like_ours = parent / f"{LAYERS}link"  # an old link with our prefix, to an old folder
    named_like_ours.symlink_to(old_outside)
    aged(named_like_ours, DAY_AND_AN_HOUR)
    assert scratch.sweep(parent, f"{LAYERS}*") == [old]
    assert not old.exists() and named_like_ours.is_symlink()
    assert (written / "keep" / "file").read_bytes() == b"mine"
    assert (old_outside / "blobs" / "layer.tar").is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's folder needs root")
def test_another_users_folders_are_never_swept(tmp_path: Path) -> None:
    """Root included: an ownerless old folder, and a dead run's folder (its lock free), of uid 65534."""
    with holder(tmp_path) as (process, dead):
        killed(process)
    ownerless = earlier_versions_folder(tmp_path, f"{LAYERS}theirs-old")
    for path in (ownerless, dead):
        for inner in [path, *path.rglob("*")]:
            os.lchown(inner, 65534, 65534)
    aged(ownerless, DAY_AND_AN_HOUR)
    with scratch.folder(LAYERS, tmp_path):
        assert (ownerless / "blobs" / "layer.tar").is_file() and (dead / "layer.tar").is_file()


def test_a_sweep_that_fails_costs_a_debug_line_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing(parent: object, pattern: str) -> list[Path]:
        raise RuntimeError("no sweep today")

    monkeypatch.setattr(scratch, "sweep", failing)
    with caplog.at_level(logging.DEBUG, logger="modelpack.scratch"):
        with scratch.folder(LAYERS, tmp_path) as mine:
            assert Path(mine).is_dir()
    assert list(tmp_path.iterdir()) == []
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "no sweep today" in caplog.records[0].getMessage()


def test_every_prefix_modelpack_makes_folders_with_is_one_of_its_own() -> None:
    """`OWN_PREFIXES` must name every kind, so that an ownerless one of a kind is known as ours;
    and every module calls `scratch.folder`, never a name imported from it."""
    prefixes, imported = set(), []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "_data":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "modelpack.scratch":
                imported.append(str(relative))
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "folder"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "scratch"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                prefixes.add(node.args[0].value)
    assert imported == []
    assert prefixes and prefixes <= set(scratch.OWN_PREFIXES), prefixes - set(scratch.OWN_PREFIXES)
