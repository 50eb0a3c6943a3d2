"""Temporary folders of killed runs are swept by the next run, never a live run's: real processes,
killed with SIGKILL (no cleanup of theirs runs), against the folders of `modelpack.scratch`."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

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
