"""What a process remembers of the files it read: kept while the file keeps its state."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from modelpack import resources


@pytest.fixture(autouse=True)
def _own_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "_DIGESTS", {})


def _later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file read from now on was last changed long enough before (`resources.settled`)."""
    real = time.time_ns
    monkeypatch.setattr(resources.time, "time_ns", lambda: real() + 2 * resources.SETTLE_NS)


def _opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(resources, "open", counting, raising=False)
    return opened


def _sha(path: Path) -> str:
    return resources.file_sha256(path, os.stat(path))


def test_an_unchanged_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _later(monkeypatch)
    opened = _opens(monkeypatch)
    path = tmp_path / "f"
    path.write_bytes(b"one")
    assert _sha(path) == hashlib.sha256(b"one").hexdigest()
    assert _sha(path) == hashlib.sha256(b"one").hexdigest()
    assert opened == [str(path)]


@pytest.mark.parametrize("how", ["same size, old mtime", "replaced", "longer"])
def test_a_changed_file_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    _later(monkeypatch)
    path = tmp_path / "f"
    path.write_bytes(b"one")
    info = os.stat(path)
    assert _sha(path) == hashlib.sha256(b"one").hexdigest()
    time.sleep(0.05)  # past the file system's clock tick: the write below gets another ctime
    if how == "replaced":
        (tmp_path / "g").write_bytes(b"two")
        os.replace(tmp_path / "g", path)
    else:
        path.write_bytes(b"two" if how != "longer" else b"three")
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # the mtime alone would not tell
    expected = b"three" if how == "longer" else b"two"
    assert _sha(path) == hashlib.sha256(expected).hexdigest()


def test_a_file_changed_moments_before_is_not_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = _opens(monkeypatch)
    path = tmp_path / "f"
    path.write_bytes(b"one")  # within the settle time: a second write could keep size and times
    _sha(path)
    _sha(path)
    assert opened == [str(path), str(path)]
    assert not resources._DIGESTS


def test_settled_needs_every_state_older_than_the_settle_time() -> None:
    now = time.time_ns()
    old = (1, 2, 3, now - 3 * resources.SETTLE_NS, now - 3 * resources.SETTLE_NS)
    fresh_ctime = (1, 2, 3, now - 3 * resources.SETTLE_NS, now - resources.SETTLE_NS // 2)
    future_mtime = (1, 2, 3, now + resources.SETTLE_NS, now - 3 * resources.SETTLE_NS)
    assert resources.settled([old], now)
    assert not resources.settled([old, fresh_ctime], now)
    assert not resources.settled([future_mtime], now)
