"""A Docker engine of one's own, beside the shared one: for tests and benchmarks (loopback only).

`SecondEngine` starts a dockerd with its own data root, exec root, pidfile and unix socket, and
no bridge network. It stands in for a remote builder host (reached through DOCKER_HOST) and for
a fresh CI runner whose engine starts empty; it can be wiped or thrown away without touching
the shared engine. tests/e2e/conftest.py (the `second_engine` fixture) and
benchmarks/bench_torch.py (cold builds) load this file by path: tests are not a package.
`registry_root` finds the local registry's storage (tests/e2e/test_bases.py, bench_base_push).

Needs root, `dockerd` and Debian's docker CLI (scripts/setup.sh).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BUILDKIT_CLI = "/usr/bin/docker"  # Debian's docker.io 20.10: BuildKit built in (scripts/setup.sh)


def registry_root() -> Path | None:
    """The storage folder of scripts/setup.sh's registry (read from its process), when local."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[0].endswith(b"docker-registry") and argv[1] == b"serve":
            for line in Path(argv[2].decode()).read_text().splitlines():
                if line.strip().startswith("rootdirectory:"):
                    return Path(line.split(":", 1)[1].strip())
    return None


def available() -> str | None:
    """Why no second engine can start here, or None when one can."""
    if shutil.which("dockerd") is None or not os.access(BUILDKIT_CLI, os.X_OK):
        return f"dockerd or {BUILDKIT_CLI} is missing; run scripts/setup.sh"
    return None


class SecondEngine:
    """A dockerd of the caller's own; `create` makes its root, `remove` stops it and deletes it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_root = root / "data"
        self.socket = root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, *images: str) -> SecondEngine:
        """A started engine in a new folder under /tmp, holding `images` of the shared engine."""
        root = Path(tempfile.mkdtemp(prefix="mp-engine-", dir="/tmp"))  # short: a unix socket path
        engine = cls(root)
        try:
            engine.start()
            for image in images:
                engine.load_from_shared(image)
        except BaseException:
            engine.remove()
            raise
        return engine

    def start(self) -> None:
        with open(self.root / "dockerd.log", "wb") as log:
            self.process = subprocess.Popen(
                [
                    "dockerd",
                    "--data-root", str(self.data_root),
                    "--exec-root", str(self.root / "exec"),
                    "--pidfile", str(self.root / "dockerd.pid"),
                    "--host", self.host,
                    "--bridge=none", "--iptables=false", "--ip6tables=false",
                    "--storage-driver", "overlay2",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        for _ in range(120):
            if self.docker("info", check=False).returncode == 0:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"the second dockerd did not start:\n{tail}")

    def docker(self, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [BUILDKIT_CLI, "--host", self.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()[-2000:]}")
        return done

    def load_from_shared(self, image: str) -> None:
        """Copy an image of the shared engine into this one (`docker save | docker load`)."""
        archive = self.root / "image.tar"
        subprocess.run([BUILDKIT_CLI, "save", "-o", str(archive), image], check=True, timeout=600)
        self.docker("load", "-i", str(archive))
        archive.unlink()

    def wipe(self) -> None:
        """Every image and all build cache: what a fresh CI runner starts with."""
        self.docker("builder", "prune", "--all", "--force")
        ids = self.docker("image", "ls", "--all", "--quiet").stdout.split()
        if ids:
            self.docker("image", "rm", "--force", *sorted(set(ids)))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def remove(self) -> None:
        """Stop the engine and delete its data root (its overlay mounts first)."""
        self.stop()
        subprocess.run(["umount", "-R", str(self.data_root)], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
