"""Runs of another process that hold a `modelpack.scratch` folder, to be killed with SIGKILL
(so none of their cleanup runs): what the sweep of the next run must tell from a live run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LAYERS = "modelpack-layers-"
# a run that makes a folder, fills it, says where it is, then waits to be ended
HOLDER = """
import sys, time
from pathlib import Path
from modelpack import scratch
with scratch.folder(sys.argv[1], sys.argv[2]) as folder:
    (Path(folder) / "layer.tar").write_bytes(b"x" * 4096)
    print(folder, flush=True)
    time.sleep(600)
"""


@contextmanager
def holder(parent: Path, prefix: str = LAYERS) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Another run holding a folder in ``parent``, and that folder; killed at the end if alive."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, prefix, str(parent)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield process, Path(process.stdout.readline().strip())
    finally:
        process.kill()
        process.wait()


def killed(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
