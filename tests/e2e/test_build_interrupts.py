"""A build stopped from outside (a cancelled CI job, `docker stop`, `kill`) ends like Ctrl-C:
one line, exit 128+15, and its temporary directories (the build context holds the model's
files) are gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def test_a_build_stopped_by_sigterm_removes_its_temporary_directories(
    tmp_path: Path, local_base_image: str, copy_example: Callable[..., Path], registry_repo: Any
) -> None:
    model = copy_example("hello", tmp_path / "model")
    (model / "1" / "blob.bin").write_bytes(os.urandom(60_000_000))  # a context that takes a while
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelpack", "build", str(model), "--tag", registry_repo.ref, "--network", "host"],
        env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        give_up = time.monotonic() + 600
        while not any(p.name.startswith("modelpack-context-") for p in scratch.iterdir()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < give_up, "the build never made its context directory"
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == "error: terminated"
    assert "Traceback" not in stderr
    assert list(scratch.iterdir()) == []
