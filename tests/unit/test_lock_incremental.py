"""Re-locking: the existing pins are kept, a pure addition resolves only what was added, and the
header tells the two apart without holding any requirement text. Real `uv` runs against a
loopback index (tests/wheelindex.py) to which a test publishes new versions as it goes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import wheelindex
from click.testing import CliRunner
from clirun import run_modelpack

from modelpack.cli import cli
from modelpack.pipeline.lock_file import LockInputs, UvLine, added_lines, line_digest, parse_lock
from modelpack.pipeline.locking import lock
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.project.model_dir import ModelDir

CPU = ResolveResult("3.12", None, None, "cpu", "modelpack-base/python:3.12", "no torch")
CPU_311 = ResolveResult("3.11", None, None, "cpu", "modelpack-base/python:3.11", "no torch")
# asked only when the whole input is resolved: modelpack's runtime requirements
FULL_ONLY = ("/simple/starlette/", "/simple/uvicorn/", "/simple/jsonschema/")


@dataclass
class GrowingIndex:
    index: Any
    folder: Path

    def publish(self, project: str, version: str, *requires: str) -> None:
        wheelindex.make_wheel(self.folder, project, version=version, requires=requires)
        self.index.rescan()

    def asked(self) -> list[str]:
        return [path for path in self.index.paths() if path.startswith("/simple/")]

    def full_resolve(self) -> bool:
        return any(path in self.asked() for path in FULL_ONLY)


@pytest.fixture
def index(wheel_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GrowingIndex]:
    """The test wheels plus whatever the test publishes; uv with a cache of its own, so that a
    project name reused by another test on a recycled port is never answered from the cache."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    for wheel in wheel_folder.glob("*.whl"):
        (folder / wheel.name).symlink_to(wheel)
    for variable in ("UV_INDEX_URL", "PIP_INDEX_URL", "UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    with wheelindex.WheelIndex(folder) as served:
        monkeypatch.setenv("UV_INDEX_URL", served.url)
        yield GrowingIndex(served, folder)


@pytest.fixture
def make_model(sibling_module: Any) -> Any:
    return sibling_module("unit/test_lock.py").make_model


def _versions(model: ModelDir) -> dict[str, str]:
    text = (model.root / "requirements.lock").read_text(encoding="utf-8")
    return {package.name: package.version for package in parse_lock(text)}


def test_relock_keeps_pins_across_an_unrelated_change_and_force_upgrades(
    tmp_path: Path, index: GrowingIndex, make_model: Any
) -> None:
    index.publish("mp-alpha", "1.0")
    lock(make_model(tmp_path / "m", "mp-alpha", "idna"), resolved=CPU)
    index.publish("mp-alpha", "2.0")  # a newer release appears on the index
    model = make_model(tmp_path / "m", "mp-alpha", "six")  # idna removed: not a pure addition
    index.index.clear()
    result = lock(model, resolved=CPU)
    assert not result.up_to_date_before and index.full_resolve()
    assert _versions(model)["mp-alpha"] == "1.0"  # kept, not silently upgraded

    (model.root / "config.yaml").write_text('model: {id: m}\nbuild_info: {python_version: "3.12"}\n')
    (model.root / "1" / "model.py").write_text("x = 1\n")
    forced = CliRunner().invoke(cli, ["lock", str(model.root), "--force"])
    assert forced.exit_code == 0, forced.output
    assert _versions(model)["mp-alpha"] == "2.0"  # --force resolves afresh


def test_addition_resolves_only_the_added_lines(tmp_path: Path, index: GrowingIndex, make_model: Any) -> None:
    lock(make_model(tmp_path / "m", "six"), resolved=CPU)
    before = (tmp_path / "m" / "requirements.lock").read_text(encoding="utf-8")
    index.publish("mp-gamma", "1.0")
    index.publish("mp-beta", "1.0", "mp-gamma", "six")
    model = make_model(tmp_path / "m", "six", "mp-beta")
    index.index.clear()
    result = lock(model, resolved=CPU)
    assert "/simple/mp-beta/" in index.asked() and "/simple/mp-gamma/" in index.asked()
    assert not index.full_resolve(), index.asked()  # the runtime requirements were not asked again
    assert set(parse_lock(before)) <= set(result.packages)  # old entries exactly as they were
    added = {p.name: p for p in result.packages}
    assert added["mp-beta"].version == "1.0" and added["mp-gamma"].version == "1.0"
    assert added["mp-beta"].hashes and added["mp-gamma"].hashes
    assert len(result.packages) == len(parse_lock(before)) + 2
    assert lock(model, resolved=CPU).up_to_date_before  # the written lock is current


def test_addition_gives_what_the_full_resolution_gives(
    tmp_path: Path, index: GrowingIndex, make_model: Any
) -> None:
    """The increment's lock equals, byte for byte, the full resolution of the same input from the
    same pins (an older-format lock, which records no input lines, takes that path)."""
    lock(make_model(tmp_path / "inc", "six", "idna"), resolved=CPU)
    shutil.copytree(tmp_path / "inc", tmp_path / "full")
    old_format = tmp_path / "full" / "requirements.lock"
    text = old_format.read_text(encoding="utf-8")
    old_format.write_text(
        "".join(line for line in text.splitlines(keepends=True) if not line.startswith("# input-")),
        encoding="utf-8",
    )
    index.publish("mp-gamma", "1.0", "idna>=3")
    index.publish("mp-beta", "1.0", "mp-gamma", "six", "click")
    index.index.clear()
    incremental = lock(make_model(tmp_path / "inc", "six", "idna", "mp-beta"), resolved=CPU)
    assert not index.full_resolve()
    index.index.clear()
    full = lock(make_model(tmp_path / "full", "six", "idna", "mp-beta"), resolved=CPU)
    assert index.full_resolve()
    assert incremental.packages == full.packages
    assert (tmp_path / "inc" / "requirements.lock").read_text(encoding="utf-8") == old_format.read_text(
        encoding="utf-8"
    )


@pytest.mark.parametrize(
    ("lines", "resolved", "keep_clarifai"),
    [
        (("six", "mp-beta"), CPU, False),  # idna removed
        (("six", "idna>=3", "mp-beta"), CPU, False),  # idna changed
        (("six", "idna", "--pre", "mp-beta"), CPU, False),  # an option line added
        (("six", "idna", "mp-beta"), CPU_311, False),  # another Python
        (("six", "idna", "mp-beta"), CPU, True),  # keep-clarifai changed
    ],
    ids=["removed", "changed", "option", "python", "keep-clarifai"],
)
def test_anything_but_a_pure_addition_takes_the_full_path(
    tmp_path: Path,
    index: GrowingIndex,
    make_model: Any,
    lines: tuple[str, ...],
    resolved: ResolveResult,
    keep_clarifai: bool,
) -> None:
    lock(make_model(tmp_path / "m", "six", "idna"), resolved=CPU)
    index.publish("mp-beta", "1.0")
    index.index.clear()
    result = lock(make_model(tmp_path / "m", *lines), resolved=resolved, keep_clarifai=keep_clarifai)
    assert index.full_resolve(), index.asked()
    assert "mp-beta" in {p.name for p in result.packages}


def test_a_conflict_with_the_pins_falls_back_to_the_full_resolution(
    tmp_path: Path, index: GrowingIndex, make_model: Any
) -> None:
    index.publish("mp-alpha", "1.0")
    lock(make_model(tmp_path / "m", "mp-alpha"), resolved=CPU)
    index.publish("mp-alpha", "2.0")
    index.publish("mp-delta", "1.0", "mp-alpha>=2")  # cannot be had with the pinned mp-alpha 1.0
    model = make_model(tmp_path / "m", "mp-alpha", "mp-delta")
    index.index.clear()
    lock(model, resolved=CPU)
    assert index.full_resolve()
    assert _versions(model)["mp-alpha"] == "2.0" and _versions(model)["mp-delta"] == "1.0"


def test_modelpack_lock_reuses_the_lock_after_a_comment_edit_and_relocks_a_real_one(
    tmp_path: Path, index: GrowingIndex
) -> None:
    """Through the installed command, against the loopback index: a comment, blank-line and
    spacing edit asks the index nothing and leaves the lock's bytes; a changed specifier re-locks."""
    root = tmp_path / "m"
    (root / "1").mkdir(parents=True)
    (root / "config.yaml").write_text('model: {id: m}\nbuild_info: {python_version: "3.12"}\n')
    (root / "1" / "model.py").write_text("x = 1\n")
    (root / "requirements.txt").write_text("six\nidna>=3\n")

    def modelpack_lock() -> dict[str, Any]:
        done = run_modelpack("lock", str(root), "--json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    assert modelpack_lock()["reused"] is False
    locked = (root / "requirements.lock").read_bytes()
    index.index.clear()
    (root / "requirements.txt").write_text("# what the model imports\nsix   # any release\n\nidna >= 3\n")
    assert modelpack_lock()["reused"] is True
    assert index.asked() == [] and (root / "requirements.lock").read_bytes() == locked
    (root / "requirements.txt").write_text("# what the model imports\nsix<2   # any release\n\nidna >= 3\n")
    assert modelpack_lock()["reused"] is False
    assert "/simple/six/" in index.asked()


def test_header_records_digests_never_requirement_text_or_credentials(
    tmp_path: Path, private_wheel_index: Any, make_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("UV_INDEX_URL", "PIP_INDEX_URL", "UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("UV_INDEX_URL", private_wheel_index.url)
    lines = ("six==1.16.0", "idna>=3.0 ; python_version >= '3'")
    model = make_model(tmp_path / "m", *lines)
    lock(model, resolved=CPU)
    text = (model.root / "requirements.lock").read_text(encoding="utf-8")
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    recorded = next(line for line in header.splitlines() if line.startswith("# input-lines:"))
    assert recorded.split(":", 1)[1].split() == [line_digest(line) for line in lines]
    password = private_wheel_index.credentials.split(":", 1)[1]
    assert password not in text and "127.0.0.1" not in header
    assert "six" not in header and "idna" not in header and "python_version" not in header


def _inputs(*texts: str, context: str = "c") -> tuple[LockInputs, list[UvLine]]:
    lines = [UvLine(text, addable=not text.startswith("-")) for text in texts]
    return LockInputs(context, tuple(line_digest(line.text) for line in lines)), lines


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (("a", "b"), ("b", "a", "c"), ["c"]),  # order does not matter, the added line is found
        (("a", "b"), ("a", "b", "c==1", "d"), ["c==1", "d"]),
        (("a", "b"), ("a", "b"), None),  # nothing added: nothing to resolve alone
        (("a", "b"), ("a", "c"), None),  # b removed
        (("a", "b"), ("a", "b>=1", "c"), None),  # b changed
        (("a",), ("a", "--pre", "c"), None),  # an option changes the whole resolution
        (("a", "a"), ("a", "c"), None),  # a duplicate removed counts as a removal
    ],
)
def test_added_lines(old: tuple[str, ...], new: tuple[str, ...], expected: list[str] | None) -> None:
    old_inputs, _ = _inputs(*old)
    new_inputs, lines = _inputs(*new)
    assert added_lines(old_inputs, new_inputs, lines) == expected
    other, _ = _inputs(*old, context="another")
    assert added_lines(other, new_inputs, lines) is None  # another setting: never an addition
    assert added_lines(None, new_inputs, lines) is None  # an older lock: never an addition


def test_whitespace_does_not_change_a_line() -> None:
    assert line_digest("six  ==1.16.0 ") == line_digest("six ==1.16.0")
