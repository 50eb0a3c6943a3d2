"""Files that cannot be read or written. An unreadable file of the model directory is bad input
(exit 2, a located line); a read-only or full disk is a failure (exit 1, one line); never a
traceback or "internal error", and nothing half-written is left behind.

Permissions are real: as root, the commands run without the capabilities that bypass them
(`setpriv`, util-linux). A full disk is simulated by failing the write with ENOSPC."""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from example_copy import copy_example

from modelpack.cli import cli
from modelpack.errors import LockError, StorageError
from modelpack.pipeline.locking import LOCK_FILE, lock
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.resources import read_cache, write_cache
from modelpack.supply.keys import keygen

lock_mod = importlib.import_module("modelpack.pipeline.locking")
CPU = ResolveResult("3.11", None, None, "cpu", "modelpack-base/python:3.11", "no torch")
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
pytestmark = pytest.mark.usefixtures("own_cache")  # the commands' caches are the test's


def unprivileged() -> list[str]:
    """A command prefix under which file permissions apply to this user too."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to test file permissions as root")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def modelpack(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own, without the right to read what it is refused."""
    env = {**os.environ, "UV_INDEX_URL": "http://127.0.0.1:9/simple"}
    env.pop("MODELPACK_DEBUG", None)
    return subprocess.run(
        [*unprivileged(), sys.executable, "-m", "modelpack", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    return line


@pytest.fixture
def hello(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "hello"
    copy_example("hello", target)
    yield target
    for path in (target, *target.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def test_an_unreadable_model_folder_is_a_located_input_error(hello: Path, tmp_path: Path) -> None:
    (hello / "1").chmod(0)
    validated = modelpack(["validate", str(hello)])
    assert validated.returncode == 2, validated.stderr
    lines = validated.stderr.strip().splitlines()
    assert f"{hello}/1/model.py: cannot read: Permission denied" in lines, lines
    assert all(line.startswith(f"{hello}/") and "internal error" not in line for line in lines), lines
    for command in (["lock", str(hello)], ["render", str(hello), "-o", str(tmp_path / "ctx")]):
        assert "model.py: cannot read" in one_line(modelpack(command), 2)
    assert not (tmp_path / "ctx").exists()


def test_an_unreadable_lock_is_a_located_input_error(hello: Path) -> None:
    (hello / LOCK_FILE).chmod(0)
    validated = modelpack(["validate", str(hello)])
    assert one_line(validated, 2) == f"{hello}/{LOCK_FILE}: cannot read: Permission denied"
    locked = modelpack(["lock", str(hello)])
    assert one_line(locked, 2) == f"error: {hello}/{LOCK_FILE}: cannot read: Permission denied"


def test_lock_in_a_read_only_directory_fails_before_resolving(hello: Path) -> None:
    (hello / LOCK_FILE).unlink()
    before = sorted(p.name for p in hello.iterdir())
    hello.chmod(0o555)
    locked = modelpack(["lock", str(hello)])  # the index is unreachable: not asked
    assert one_line(locked, 1) == f"error: cannot write {hello}/{LOCK_FILE}: Permission denied"
    assert sorted(p.name for p in hello.iterdir()) == before


def test_a_cache_that_cannot_be_read_is_a_miss(hello: Path, own_cache: Path) -> None:
    cache = own_cache
    assert modelpack(["validate", str(hello)]).returncode == 0
    assert list((cache / "modelpack").rglob("*"))  # the schema memo was written
    for path in sorted((cache / "modelpack").rglob("*"), reverse=True):
        path.chmod(0)
    try:
        validated = modelpack(["validate", str(hello)])
    finally:
        for path in (cache / "modelpack").rglob("*"):
            path.chmod(0o755)
    assert validated.returncode == 0 and validated.stderr == "", validated.stderr


def test_a_cache_write_on_a_full_disk_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c" / "entry.json"
    write_cache(path, {"a": 1})
    with monkeypatch.context() as patched:
        patched.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(ENOSPC))
        write_cache(path, {"a": 2})
    assert read_cache(path) == {"a": 1}  # the old document, whole
    assert [p.name for p in path.parent.iterdir()] == ["entry.json"]  # no temp file
    path.write_bytes(b"")  # what a crash on a full disk used to leave: a miss, not an error
    assert read_cache(path) is None
    path.write_bytes(b'{"a": ')
    assert read_cache(path) is None


def test_a_cache_document_already_there_is_not_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write syncs the disk: the same document again costs a read, not a write."""
    path = tmp_path / "c" / "entry.json"
    synced: list[int] = []
    real_fsync = os.fsync
    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_cache(path, {"a": 1})
    write_cache(path, {"a": 1})
    assert len(synced) == 1 and read_cache(path) == {"a": 1}
    write_cache(path, {"a": 2})
    assert len(synced) == 2 and read_cache(path) == {"a": 2}
    path.write_bytes(b'{"a": ')  # a torn document is rewritten
    write_cache(path, {"a": 2})
    assert len(synced) == 3 and read_cache(path) == {"a": 2}


def _fake_uv(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(command, 0, "six==1.17.0 \\\n    --hash=sha256:aa\n", "")


def test_lock_on_a_full_disk_keeps_the_old_lock(hello: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock_mod, "find_uv", lambda: "uv")
    monkeypatch.setattr(lock_mod.subprocess, "run", _fake_uv)
    old = (hello / LOCK_FILE).read_bytes()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(ENOSPC))
    with pytest.raises(LockError, match=r"cannot write .*requirements.lock: No space left on device") as raised:
        lock(hello, resolved=CPU, force=True)
    assert raised.value.exit_code == 1
    assert (hello / LOCK_FILE).read_bytes() == old
    assert not [p for p in hello.iterdir() if p.name.endswith(".tmp")]
    result = CliRunner().invoke(cli, ["lock", str(hello), "--force"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {hello}/{LOCK_FILE}: No space left on device"
    ]


@pytest.mark.parametrize("failing", [1, 2], ids=["private-key", "public-key"])
def test_keygen_on_a_full_disk_leaves_no_half_of_a_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    calls = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == failing:
            raise ENOSPC
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StorageError, match="No space left on device"):
        keygen(tmp_path / "k", b"pw")
    assert list(tmp_path.iterdir()) == []
    calls.clear()
    monkeypatch.setenv("MODELPACK_KEY_PASSWORD", "pw")
    result = CliRunner().invoke(cli, ["keygen", "-o", str(tmp_path / "k"), "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["error"]["exit_code"] == 1
    assert result.stderr.strip().splitlines() == [f"error: cannot write {tmp_path}/k.{'key' if failing == 1 else 'pub'}: No space left on device"]
    assert list(tmp_path.iterdir()) == []


def test_any_command_on_a_full_disk_is_one_line_not_an_internal_error(
    hello: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's last line of defence: a write anywhere that fails for want of space (here in
    render) is the machine's failure, exit 1, not a bug report."""

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "ctx" / "Dockerfile"))

    monkeypatch.setattr(importlib.import_module("modelpack.cli.render_cmd"), "run_render", full)
    result = CliRunner().invoke(cli, ["render", str(hello), "-o", str(tmp_path / "ctx")])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: No space left on device: {tmp_path}/ctx/Dockerfile"
    ]
