"""`modelpack test --venv`: the lock installed into a cached virtualenv instead of an image.

A venv is keyed by the lock's bytes and the exact Python version that runs it
(`venv_key`), so an unchanged lock reuses it without any network access. It is
built under a hidden temporary name in the cache and renamed into place only once
every package is installed: an interrupted install leaves no venv that looks ready
(leftovers of a killed run are removed by the next one: each partial venv is a
`modelpack.scratch` folder, held by its run while it lives).

The install is the image's: every hash required, no dependency resolution, the
indexes and CA bundle of `BuildSettings` (the build's own precedence). The index
URLs reach the installer as environment variables of its process only, never a
command line or a file of the venv. uv installs when it is there, else pip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from modelpack import scratch
from modelpack.errors import InvalidInputError, RuntimeFailure
from modelpack.pipeline.locking import SYSTEM_CA_BUNDLE, LockError, find_uv, redact
from modelpack.pipeline.settings import (
    CA_BUNDLE_VARIABLES,
    EXTRA_INDEX_URL_VARIABLES,
    INDEX_URL_VARIABLES,
    BuildSettings,
)
from modelpack.progress import Reporter
from modelpack.resources import cache_dir

VENV_CACHE = "test-venvs"
_PARTIAL = ".partial-"  # <key>.partial-<random>/venv: a venv being built, held by its run
_MARKER = "modelpack-venv.txt"  # written last, before the rename: what the venv was made from
# what an installer must not take from the host: the indexes and CA come from BuildSettings
INSTALLER_VARIABLES = frozenset(
    {*INDEX_URL_VARIABLES, *EXTRA_INDEX_URL_VARIABLES, *CA_BUNDLE_VARIABLES, "UV_INDEX", "UV_DEFAULT_INDEX"}
    | {"PIP_REQUIRE_VIRTUALENV", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "UV_PYTHON"}
)


class NoSuchPythonError(InvalidInputError):
    """The model's Python version is not installed on this host (exit 2: choose another way)."""


@dataclass(frozen=True)
class Interpreter:
    """A Python on the host: its executable and exact version (``3.11.2``)."""

    path: Path
    version: str


@dataclass(frozen=True)
class CachedVenv:
    """A ready venv of the cache; ``reused`` when no install was needed."""

    path: Path
    key: str
    reused: bool

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def venv_key(lock_bytes: bytes, python_version: str) -> str:
    """The cache key: the lock (header included: its torch pin and Python) and the exact Python."""
    digest = hashlib.sha256()
    digest.update(b"modelpack-test-venv/1\0")
    digest.update(python_version.encode() + b"\0")
    digest.update(lock_bytes)
    return digest.hexdigest()[:32]


def find_python(version: str) -> Interpreter:
    """The host's Python ``version`` (``3.11``): uv's finder when uv is there, else ``pythonX.Y``."""
    candidates: list[str] = []
    try:
        uv = find_uv()
    except LockError:
        uv = None
    if uv is not None:
        found = _run(
            [uv, "python", "find", "--no-python-downloads", version], {**os.environ, "NO_COLOR": "1"}
        )
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(found.stdout.strip().splitlines()[-1])
    which = shutil.which(f"python{version}")
    if which:
        candidates.append(which)
    for candidate in candidates:  # the environment inherited as is: only a version is asked
        probe = _run([candidate, "-c", "import platform; print(platform.python_version())"], None)
        exact = probe.stdout.strip()
        if probe.returncode == 0 and (exact == version or exact.startswith(version + ".")):
            return Interpreter(Path(candidate), exact)
    raise NoSuchPythonError(
        f"Python {version} (build_info.python_version) is not installed on this host: "
        "install it, or test in the image (without --venv)"
    )


def installer_environment(settings: BuildSettings, *, uv: bool) -> dict[str, str]:
    """The installer's environment: the host's, with the settings' indexes and CA bundle only."""
    env = {k: v for k, v in os.environ.items() if k not in INSTALLER_VARIABLES}
    env.update({"NO_COLOR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "UV_NO_PROGRESS": "1"})
    ca_bundle = settings.ca_bundle
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        raise InvalidInputError(f"CA bundle {ca_bundle} does not exist")
    if ca_bundle is None and SYSTEM_CA_BUNDLE.is_file():
        ca_bundle = SYSTEM_CA_BUNDLE
    prefix = "UV" if uv else "PIP"
    if settings.index_url:
        env[f"{prefix}_INDEX_URL"] = settings.index_url
    if settings.extra_index_urls:
        env[f"{prefix}_EXTRA_INDEX_URL"] = " ".join(settings.extra_index_urls)
    if ca_bundle is not None:
        env["SSL_CERT_FILE" if uv else "PIP_CERT"] = str(ca_bundle)
    return env


def install_commands(
    target: Path, interpreter: Interpreter, lock_path: Path, extra: tuple[str, ...], *, uv: str | None
) -> list[list[str]]:
    """The commands that make the venv at ``target``: create it, install the lock (every hash,
    no resolution), then ``extra`` (what the image's base provides, e.g. ``torch==2.5.1``)."""
    if uv is not None:
        python = ["--python", str(target / "bin" / "python")]
        commands = [
            [uv, "venv", "--quiet", "--relocatable", "--no-python-downloads", *_at(interpreter, target)],
            [uv, "pip", "install", "--quiet", *python, "--require-hashes", "--no-deps", "-r", str(lock_path)],
        ]
        if extra:
            commands.append([uv, "pip", "install", "--quiet", *python, *extra])
        return commands
    pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-input"]
    commands = [
        [str(interpreter.path), "-m", "venv", str(target)],
        [*pip, "--require-hashes", "--no-deps", "-r", str(lock_path)],
    ]
    if extra:
        commands.append([*pip, *extra])
    return commands


def _at(interpreter: Interpreter, target: Path) -> list[str]:
    return ["--python", str(interpreter.path), str(target)]


def ensure_venv(
    lock_path: Path,
    interpreter: Interpreter,
    settings: BuildSettings,
    *,
    extra: tuple[str, ...] = (),
    report: Reporter | None = None,
    root: Path | None = None,
) -> CachedVenv:
    """The cached venv of ``lock_path`` for ``interpreter``: reused, or built atomically."""
    root = root if root is not None else cache_dir(VENV_CACHE)
    key = venv_key(lock_path.read_bytes() + "\n".join(extra).encode(), interpreter.version)
    final = root / key
    if (final / _MARKER).is_file():
        if report:
            report("venv", f"{final}: up to date, reused")
        return CachedVenv(final, key, True)
    root.mkdir(parents=True, exist_ok=True)
    try:
        uv: str | None = find_uv()
    except LockError:
        uv = None
    env = installer_environment(settings, uv=uv is not None)
    if report:
        report("venv", f"installing {lock_path.name} into {final} with {'uv' if uv else 'pip'}")
    # the half-built venvs of killed runs (any key) go first; this one is held until renamed
    with scratch.folder(f"{key}{_PARTIAL}", root, sweep_pattern=f"*{_PARTIAL}*") as held:
        partial = Path(held) / "venv"
        with scratch.folder("modelpack-venv-") as tmp:
            for command in install_commands(partial, interpreter, lock_path, extra, uv=uv):
                done = _run(command, {**env, "TMPDIR": tmp}, cwd=tmp)
                if done.returncode != 0:
                    raise RuntimeFailure(
                        f"installing {lock_path.name} into a venv failed: {_last_line(done)}"
                    )
        (partial / _MARKER).write_text(
            f"lock-sha256: {hashlib.sha256(lock_path.read_bytes()).hexdigest()}\n"
            f"python: {interpreter.version}\n",
            encoding="utf-8",
        )
        try:
            partial.rename(final)
        except OSError:
            if not (final / _MARKER).is_file():  # not a concurrent run that finished first
                raise
        return CachedVenv(final, key, False)


def _run(
    command: list[str], env: dict[str, str] | None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=cwd, timeout=3600, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeFailure(f"{Path(command[0]).name} timed out after an hour") from error
    except OSError as error:
        raise RuntimeFailure(f"cannot run {command[0]}: {error}") from error


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
    relevant = [line for line in lines if not line.lower().startswith(("warning", "hint"))] or lines
    return redact(relevant[-1] if relevant else f"exit status {done.returncode}")
