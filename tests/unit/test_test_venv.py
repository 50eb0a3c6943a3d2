"""`modelpack test --venv`'s cached virtualenv: its key, its atomic build, the installer's
environment and commands (the installer is faked: no network, no interpreter started)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from scratch_runs import holder, killed

from modelpack.deploy import venv
from modelpack.deploy.venv import Interpreter, ensure_venv, install_commands, installer_environment, venv_key
from modelpack.errors import RuntimeFailure
from modelpack.pipeline.locking import LockError
from modelpack.pipeline.settings import BuildSettings

PYTHON = Interpreter(Path("/usr/bin/python3.11"), "3.11.2")
SECRET_INDEX = "https://ci:s3cret@index.example/simple"


def test_the_key_changes_with_the_lock_and_the_exact_python_only() -> None:
    lock = b"# input-digest: sha256:aa\nrequests==2.32.3 --hash=sha256:bb\n"
    assert venv_key(lock, "3.11.2") == venv_key(lock, "3.11.2")
    assert venv_key(lock, "3.11.2") != venv_key(lock, "3.11.9")
    assert venv_key(lock, "3.11.2") != venv_key(lock.replace(b"bb", b"cc"), "3.11.2")


class FakeInstaller:
    """Stands in for uv: `venv` makes the folder, an install writes a file; one step may fail."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.commands: list[list[str]] = []
        self.envs: list[dict[str, str]] = []

    def __call__(
        self, command: list[str], env: dict[str, str], cwd: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        self.commands.append(command)
        self.envs.append(env)
        if len(self.commands) - 1 == self.fail_at:
            return subprocess.CompletedProcess(command, 1, "", "error: Failed to download `x`")
        if command[1] == "venv":
            target = Path(command[-1])
            (target / "bin").mkdir(parents=True)
        else:
            target = Path(command[command.index("--python") + 1]).parent.parent
            (target / "lib" / "site.py").parent.mkdir(parents=True, exist_ok=True)
            (target / "lib" / "site.py").write_text("installed")
        return subprocess.CompletedProcess(command, 0, "", "")


@pytest.fixture
def fake_uv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(venv, "find_uv", lambda: "/opt/uv")


def _lock(tmp_path: Path) -> Path:
    path = tmp_path / "model" / "requirements.lock"
    path.parent.mkdir()
    path.write_text("# input-digest: sha256:aa\nrequests==2.32.3 \\\n    --hash=sha256:bb\n")
    return path


def test_an_interrupted_install_leaves_no_venv_and_the_next_run_builds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_uv: None
) -> None:
    root = tmp_path / "cache"
    lock = _lock(tmp_path)
    failing = FakeInstaller(fail_at=1)
    monkeypatch.setattr(venv, "_run", failing)
    with pytest.raises(RuntimeFailure, match="into a venv failed: error: Failed to download"):
        ensure_venv(lock, PYTHON, BuildSettings(), root=root)
    assert list(root.iterdir()) == []  # neither the venv nor its half-built folder

    installer = FakeInstaller()
    monkeypatch.setattr(venv, "_run", installer)
    made = ensure_venv(lock, PYTHON, BuildSettings(), root=root)
    assert not made.reused and [p.name for p in root.iterdir()] == [made.key]
    assert (made.path / "lib" / "site.py").read_text() == "installed"
    # the venv was made under another name and renamed when complete
    assert installer.commands[0][-1] != str(made.path) and installer.commands[0][-1].startswith(str(root))

    again = FakeInstaller()
    monkeypatch.setattr(venv, "_run", again)
    assert ensure_venv(lock, PYTHON, BuildSettings(), root=root).reused and again.commands == []
    lock.write_text(lock.read_text().replace("bb", "cc"))
    changed = ensure_venv(lock, PYTHON, BuildSettings(), root=root)
    assert not changed.reused and changed.path != made.path and again.commands


def test_a_killed_runs_partial_venv_is_removed_and_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_uv: None
) -> None:
    """Partial venvs are `scratch` folders: a killed run's (another key's too) goes at the next
    install, a concurrent run's still installing stays."""
    root = tmp_path / "cache"
    root.mkdir()
    lock = _lock(tmp_path)
    key = venv_key(lock.read_bytes(), PYTHON.version)
    with holder(root, f"{key}.partial-") as (dead, leftover), holder(root, "0" * 32 + ".partial-") as (_, running):
        killed(dead)
        installer = FakeInstaller()
        monkeypatch.setattr(venv, "_run", installer)
        made = ensure_venv(lock, PYTHON, BuildSettings(), root=root)
        assert not made.reused and installer.commands  # the leftover was not taken for a venv
        assert not leftover.exists() and (running / "layer.tar").is_file()


def test_the_indexes_reach_the_installer_by_environment_never_by_argument(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("UV_INDEX_URL", "https://host-only.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://host-extra.example/simple")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = BuildSettings(
        index_url=SECRET_INDEX, extra_index_urls=("https://e.example/simple",), ca_bundle=ca
    )
    uv_env = installer_environment(settings, uv=True)
    assert (
        uv_env["UV_INDEX_URL"] == SECRET_INDEX and uv_env["UV_EXTRA_INDEX_URL"] == "https://e.example/simple"
    )
    assert uv_env["SSL_CERT_FILE"] == str(ca) and "PIP_EXTRA_INDEX_URL" not in uv_env
    pip_env = installer_environment(settings, uv=False)
    assert pip_env["PIP_INDEX_URL"] == SECRET_INDEX and pip_env["PIP_CERT"] == str(ca)
    assert "UV_INDEX_URL" not in pip_env
    for uv in ("/opt/uv", None):
        commands = install_commands(
            tmp_path / "v", PYTHON, tmp_path / "requirements.lock", ("torch==2.5.1",), uv=uv
        )
        text = " ".join(" ".join(c) for c in commands)
        assert "s3cret" not in text and "--index" not in text and "--extra-index" not in text
        assert "--require-hashes" in text and "--no-deps" in text and commands[-1][-1] == "torch==2.5.1"


def test_pip_installs_when_uv_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_uv() -> str:
        raise LockError("`uv` is needed")

    monkeypatch.setattr(venv, "find_uv", no_uv)
    seen: list[list[str]] = []

    def run(
        command: list[str], env: dict[str, str], cwd: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        seen.append(command)
        if command[1:3] == ["-m", "venv"]:
            Path(command[-1]).mkdir(parents=True)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(venv, "_run", run)
    ensure_venv(_lock(tmp_path), PYTHON, BuildSettings(), root=tmp_path / "cache")
    assert seen[0][:3] == [str(PYTHON.path), "-m", "venv"]
    assert seen[1][1:4] == ["-m", "pip", "install"]
