"""`modelpack standby`: commands handed to a process that has modelpack loaded behave as they
do in a process of their own: output, exit status, environment, working folder, umask, signals,
hidden prompts, and the end of the caller. Real processes, a real socket, the installed package."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from example_copy import copy_example
from loopback import free_port

pytestmark = pytest.mark.e2e

MODELS = Path(__file__).resolve().parent.parent / "unit" / "test_runtime_models"


class Standby:
    """A standby process in a private runtime folder, and commands run with or without it.

    Commands start from `/`, as `clirun` runs them: `python -m modelpack` started in the source
    tree runs the source's modules, another installation than the standby's (the wheel's)."""

    def __init__(self, folder: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if k != "MODELPACK_STANDBY"}
        self.env["XDG_RUNTIME_DIR"] = str(folder)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "modelpack", *args]

    def run(self, *args: str, alone: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **kwargs.pop("env", {}), **({"MODELPACK_STANDBY": "off"} if alone else {})}
        kwargs.setdefault("cwd", "/")
        return subprocess.run(
            self.command(*args), env=env, capture_output=True, text=True, timeout=600, **kwargs
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """A command through the standby, left running: its output in pipes, from `/`."""
        return subprocess.Popen(
            self.command(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/"
        )

    def status(self) -> dict[str, Any]:
        done = self.run("standby", "status", "--json")
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    def served(self) -> int:
        return int(self.status()["served"])


@pytest.fixture
def standby() -> Iterator[Standby]:
    folder = Path(tempfile.mkdtemp(prefix="mp-", dir="/tmp"))  # a socket's path is short
    started = Standby(folder)
    done = started.run("standby", "start", "--idle-timeout", "10", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["running"] and answer["pid"] > 0
    yield started
    started.run("standby", "stop")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(answer["pid"]):
        time.sleep(0.05)
    assert not _alive(answer["pid"])
    shutil.rmtree(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_command_gives_what_it_gives_in_a_process_of_its_own(standby: Standby, tmp_path: Path) -> None:
    model = copy_example("hello", tmp_path / "hello")
    env = {"MODELPACK_BASE_REGISTRY": "127.0.0.1:5000/team"}  # the caller's environment decides
    before = standby.served()
    cases = [
        ("validate", str(model)),
        ("validate", str(tmp_path / "missing")),  # one line, exit 2
        ("resolve", str(model), "--json"),
        ("--json", "signature", str(model)),
    ]
    for args in cases:
        alone = standby.run(*args, alone=True, env=env)
        handed = standby.run(*args, env=env)
        assert (handed.returncode, handed.stdout, handed.stderr) == (
            alone.returncode,
            alone.stdout,
            alone.stderr,
        )
    assert "127.0.0.1:5000/team" in standby.run("resolve", str(model), "--json", env=env).stdout
    assert standby.served() == before + len(cases) + 1


def test_the_installed_executable_asks_before_it_loads_re(standby: Standby) -> None:
    """What the executable imports before it asks the standby is paid by every command handed
    over. An installer's console-script wrapper imports `re` (and with it `enum`) first."""
    executable = Path(sys.executable).with_name("modelpack")
    before = standby.served()
    env = {**standby.env, "PYTHONPROFILEIMPORTTIME": "1"}  # the handed-over command prints none
    done = subprocess.run(
        [str(executable), "--version"], env=env, capture_output=True, text=True, cwd="/", timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    imported = {line.rpartition("|")[2].strip() for line in lines if line.startswith("import time:")}
    assert "modelpack.standby.client" in imported
    assert sorted(imported & {"re", "enum", "json", "socket"}) == []
    assert standby.served() == before + 1


def test_the_working_folder_and_umask_are_the_callers(standby: Standby, tmp_path: Path) -> None:
    before = standby.served()
    done = standby.run("init", "made", "--type", "generic", cwd=tmp_path, umask=0o077)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "made" / "config.yaml"
    assert config.is_file() and config.stat().st_mode & 0o077 == 0
    assert standby.served() == before + 1


def test_a_folder_others_can_write_to_is_not_trusted(standby: Standby, tmp_path: Path) -> None:
    folder = Path(standby.env["XDG_RUNTIME_DIR"]) / f"modelpack-standby-{os.getuid()}"
    before = standby.served()
    folder.chmod(0o733)
    try:
        done = standby.run("validate", str(copy_example("hello", tmp_path / "hello")))
    finally:
        folder.chmod(0o700)
    assert done.returncode == 0, done.stderr
    assert standby.served() == before  # it ran in a process of its own


def _serving(standby: Standby, port: int, alone: bool = False) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        standby.command("serve", str(MODELS / "kitchen"), "--port", str(port)),
        env={**standby.env, "MODELPACK_STANDBY": "off"} if alone else standby.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd="/",
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("the served model did not become ready")


def _gone(port: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1)
        except httpx.HTTPError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_caller_reaches_the_command(standby: Standby, number: signal.Signals) -> None:
    ended = []
    for alone in (True, False):
        port = free_port()
        process = _serving(standby, port, alone)
        assert standby.status()["commands_running"] == (0 if alone else 1)
        process.send_signal(number)
        output, _ = process.communicate(timeout=60)
        assert _gone(port)
        ended.append((process.returncode, re.sub(r"\d+", "N", output.splitlines()[-1])))  # pids differ
    assert ended[0] == ended[1]  # the same exit status and last words as alone
    assert standby.status()["commands_running"] == 0


def test_a_caller_killed_ends_its_command(standby: Standby) -> None:
    port = free_port()
    process = _serving(standby, port)
    process.kill()  # no chance to relay anything: the standby sees the connection close
    process.wait()
    assert _gone(port), "the command outlived its caller"
    deadline = time.monotonic() + 30
    while standby.status()["commands_running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert standby.status()["commands_running"] == 0


def test_a_hidden_prompt_is_asked_on_the_callers_terminal(standby: Standby, tmp_path: Path) -> None:
    """The command's process has no terminal of its own: its password prompt is asked where a
    process of its own would ask it, on the caller's terminal, even with input from elsewhere."""
    from modelpack.supply.keys import load_private_key

    before = standby.served()
    env = {k: v for k, v in standby.env.items() if k not in ("MODELPACK_KEY_PASSWORD", "COSIGN_PASSWORD")}
    pid, terminal = pty.fork()
    if pid == 0:  # the caller, on a terminal of its own, with its input elsewhere (`... | modelpack`)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.chdir(tmp_path)
        os.execve(sys.executable, standby.command("keygen", "-o", "k"), env)
    output = _read_until(terminal, b"Password for the private key:")
    os.write(terminal, b"s3cret\n")
    output += _read_until(terminal, b"Repeat for confirmation:")
    os.write(terminal, b"s3cret\n")
    output += _read_until(terminal, None)
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b"s3cret" not in output  # not echoed
    load_private_key((tmp_path / "k.key").read_bytes(), b"s3cret")
    assert standby.served() == before + 1


def _read_until(terminal: int, marker: bytes | None) -> bytes:
    """What the terminal shows until `marker` (None: until the caller ends)."""
    seen = b""
    while marker is None or marker not in seen:
        try:
            chunk = os.read(terminal, 1024)
        except OSError:  # the caller ended: its side of the terminal closed
            chunk = b""
        if not chunk:
            assert marker is None, seen
            return seen
        seen += chunk
    return seen


def _spare(standby: Standby) -> int:
    """The child the standby forked for the next command (at start, and after each command)."""
    deadline = time.monotonic() + 30
    while True:
        spare = standby.status()["spare"]
        if spare:
            return int(spare)
        assert time.monotonic() < deadline, "no spare child"
        time.sleep(0.05)


def test_a_command_runs_in_the_child_forked_before_it(standby: Standby) -> None:
    """The standby forks the next command's child while idle, so a command does not wait for a
    fork; while one runs, no other is forked ahead (it would compete with the command)."""
    spare = _spare(standby)
    port = free_port()
    process = _serving(standby, port)
    status = standby.status()
    assert status["commands_running"] == 1 and status["spare"] is None
    assert os.getpgid(spare) == spare  # a process group of its own, as any command's
    os.kill(spare, signal.SIGKILL)  # that child is the served model (killed, as the OOM killer does)
    output, _ = process.communicate(timeout=60)
    assert _gone(port) and process.returncode == -signal.SIGKILL, output  # the caller ends by it too
    assert "Traceback" not in output
    assert _spare(standby) != spare and not _alive(spare)


def test_a_spare_killed_before_its_command_is_replaced(standby: Standby, tmp_path: Path) -> None:
    """The command that was to go to a killed spare runs in a child forked for it."""
    model = copy_example("hello", tmp_path / "hello")
    spare, pid, before = _spare(standby), standby.status()["pid"], standby.served()
    os.kill(pid, signal.SIGSTOP)  # the command is sent before the standby sees the spare end
    try:
        caller = standby.start("validate", str(model))
        time.sleep(0.5)
        os.kill(spare, signal.SIGKILL)
    finally:
        os.kill(pid, signal.SIGCONT)
    output, errors = caller.communicate(timeout=60)
    assert caller.returncode == 0 and output == f"{model}: valid\n", errors
    assert standby.served() == before + 1
    assert _spare(standby) != spare and not _alive(spare)


def test_stop_ends_it_and_commands_run_alone_after(standby: Standby, tmp_path: Path) -> None:
    pid, spare = standby.status()["pid"], _spare(standby)
    done = standby.run("standby", "stop", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["stopping"], done.stderr
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid) and not _alive(spare)  # its spare child went with it
    assert standby.status() == {"running": False, "socket": standby.status()["socket"]}
    assert standby.run("validate", str(copy_example("hello", tmp_path / "hello"))).returncode == 0


def test_an_idle_standby_ends_by_itself() -> None:
    folder = Path(tempfile.mkdtemp(prefix="mp-", dir="/tmp"))
    try:
        idle = Standby(folder)
        done = idle.run("standby", "start", "--idle-timeout", "0.02", "--json")  # 1.2 s
        assert done.returncode == 0, done.stderr
        pid = json.loads(done.stdout)["pid"]
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)
        assert not list(folder.glob("*/*.sock"))  # it took its socket with it
    finally:
        shutil.rmtree(folder)


def test_the_executable_starts_its_standby_from_a_folder_holding_another_modelpack(
    tmp_path: Path,
) -> None:
    """Started in a source checkout (a `modelpack` package in the working folder), the installed
    executable's standby runs the installed modules and answers the executable."""
    decoy = tmp_path / "checkout"
    (decoy / "modelpack").mkdir(parents=True)
    (decoy / "modelpack" / "__init__.py").write_text("")
    (decoy / "modelpack" / "__main__.py").write_text("raise SystemExit('the checkout ran')\n")
    folder = Path(tempfile.mkdtemp(prefix="mp-", dir="/tmp"))
    executable = str(Path(sys.executable).with_name("modelpack"))
    env = {k: v for k, v in os.environ.items() if k != "MODELPACK_STANDBY"} | {"XDG_RUNTIME_DIR": str(folder)}
    try:
        started = subprocess.run(
            [executable, "standby", "start", "--json"], env=env, capture_output=True, text=True, cwd=decoy
        )
        assert started.returncode == 0, started.stderr
        status = subprocess.run(
            [executable, "standby", "status", "--json"], env=env, capture_output=True, text=True, cwd=decoy
        )
        assert json.loads(status.stdout)["pid"] == json.loads(started.stdout)["pid"]
    finally:
        subprocess.run([executable, "standby", "stop"], env=env, capture_output=True, cwd="/")
        time.sleep(0.5)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_second_start_finds_the_first(standby: Standby) -> None:
    pid = standby.status()["pid"]
    again = standby.run("standby", "start", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["pid"] == pid
    foreground = standby.run("standby", "start", "--foreground")
    assert foreground.returncode == 2 and "already runs" in foreground.stderr


def test_a_build_through_the_standby_pushes_a_code_change(
    standby: Standby, hello_dir: Path, registry_repo: Any
) -> None:
    args = ("build", str(hello_dir), "--tag", registry_repo.ref, "--push", "--json")
    first = standby.run(*args, alone=True)
    assert first.returncode == 0, first.stderr
    with (hello_dir / "1" / "model.py").open("a") as handle:
        handle.write("\n# a code change\n")
    before = standby.served()
    second = standby.run(*args)
    assert second.returncode == 0, second.stderr
    result, cold = json.loads(second.stdout), json.loads(first.stdout)
    assert result["version"] != cold["version"] and result["digest"] != cold["digest"]
    assert 0 < result["bytes_pushed"] < 1 << 20
    assert standby.served() == before + 1


def test_commands_at_once_each_get_their_own_output(standby: Standby, tmp_path: Path) -> None:
    """Each caller gets its own command's streams and status, however their runs overlap."""
    models = [copy_example("hello", tmp_path / f"m{i}") for i in range(4)]
    (models[2] / "config.yaml").write_text("model: [unclosed\n")  # one of them invalid: exit 2
    before = standby.served()
    processes = [standby.start("validate", str(m)) for m in models]
    for index, process in enumerate(processes):
        output, errors = process.communicate(timeout=120)
        if index == 2:
            assert (
                process.returncode == 2 and output == "" and errors.startswith(f"{models[2]}/config.yaml:")
            ), errors
        else:
            assert process.returncode == 0 and output == f"{models[index]}: valid\n" and errors == "", errors
    assert standby.served() == before + len(models)
