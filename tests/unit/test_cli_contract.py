"""The uniform contract of every `modelpack` command.

For each registered command: `--help` works and states the exit codes, `--json`,
`--quiet`, `--verbose` and `--no-color` exist, bad usage exits 2, invalid input
exits 2 with one line and no traceback (also with --quiet and --json), and the
commands that talk to the engine or a registry exit 1 with one line when those
are unreachable. Also: NO_COLOR, interrupts, broken pipes, progress display and
the generated docs/cli.md.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from clirun import run_modelpack
from example_copy import copy_example

from modelpack.cli import _COMMANDS, cli
from modelpack.cli._common import CliProgress, handle_errors, json_option
from modelpack.cli.reference import cli_reference
from modelpack.progress import ProgressEvent

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "contract-test"


def run(*args: str, env: dict[str, str] | None = None, color: bool = False) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, color=color)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A copy of the shipped hello example (with its lock)."""
    target = tmp_path / "hello"
    copy_example("hello", target)
    return target


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    from modelpack.supply.keys import keygen

    monkeypatch.setenv("MODELPACK_KEY_PASSWORD", PASSWORD)
    files = keygen(tmp_path / "signer", PASSWORD.encode())
    return Path(files.private_key), Path(files.public_key)


ALL = sorted(_COMMANDS)


def test_every_command_is_listed_and_loads() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for name in ALL:
        assert name in result.stdout
        assert cli.get_command(click.Context(cli), name) is not None
    assert "Exit status" in result.stdout and "130" in result.stdout


@pytest.mark.parametrize("name", ALL)
def test_help_states_exit_codes_and_common_options(name: str) -> None:
    result = run(name, "--help")
    assert result.exit_code == 0, result.output
    assert "Exit status" in result.stdout
    assert "0 success" in result.stdout and "2 invalid input" in result.stdout
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    assert {"--json", "--quiet", "--verbose", "--no-color"} <= options, name


@pytest.mark.parametrize("name", ALL)
def test_bad_usage_exits_2(name: str) -> None:
    result = run(name, "--no-such-option")
    assert result.exit_code == 2
    assert "No such option" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", ALL)
def test_quiet_and_verbose_exclude_each_other(name: str) -> None:
    result = run(name, "--quiet", "--verbose", "--help")
    assert result.exit_code == 2
    assert "exclude each other" in result.stderr


def invalid_args(name: str, tmp: Path) -> list[str]:
    """Arguments that are wrong input (not wrong usage) for each command."""
    missing = str(tmp / "does-not-exist")
    not_a_dir = tmp / "plain-file"
    not_a_dir.write_text("x")
    busy = tmp / "busy"
    busy.mkdir(exist_ok=True)
    (busy / "keep.txt").write_text("x")
    (tmp / "taken.key").write_text("x")
    table: dict[str, list[str]] = {
        "validate": [missing],
        "signature": [missing],
        "init": [str(busy), "--type", "generic"],
        "serve": [missing],
        "test": [missing],
        "predict": [missing, "predict"],
        "lock": [missing],
        "render": [missing, "-o", str(tmp / "out")],
        "concepts": [missing, "--offline"],
        "build": [missing, "--tag", "127.0.0.1:5000/acme/m"],
        "versions": ["not a repository"],
        "inspect": ["not an image"],
        "resolve": [missing],
        "deploy-manifest": [str(not_a_dir)],
        "keygen": ["--output", str(tmp / "taken")],
        "sign": ["127.0.0.1:5000/acme/m:v1", "--key", missing],
        "verify": ["not an image", "--key", missing],
        "push": ["127.0.0.1:5000/acme/m:v1", "--version", "latest"],
        "base": ["build", "modelpack-base/no-such:1"],
        "standby": ["status", "--foreground"],
    }
    assert set(table) == set(_COMMANDS), "add the new command to this table"
    return table[name]


@pytest.mark.parametrize("name", ALL)
def test_invalid_input_exits_2_with_one_line(name: str, tmp_path: Path) -> None:
    result = run(name, *invalid_args(name, tmp_path), env={"MODELPACK_KEY_PASSWORD": PASSWORD})
    assert result.exit_code == 2, result.output
    assert len(lines(result.stderr)) == 1, result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", ALL)
def test_quiet_keeps_only_the_error(name: str, tmp_path: Path) -> None:
    result = run(name, "--quiet", *invalid_args(name, tmp_path), env={"MODELPACK_KEY_PASSWORD": PASSWORD})
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(lines(result.stderr)) == 1, result.stderr


@pytest.mark.parametrize("name", ALL)
def test_json_error_object_or_report(name: str, tmp_path: Path) -> None:
    result = run(name, "--json", *invalid_args(name, tmp_path), env={"MODELPACK_KEY_PASSWORD": PASSWORD})
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    if "error" in data:
        assert data["error"]["exit_code"] == 2
        assert data["error"]["message"]
    else:  # validate reports invalid directories as its normal result
        assert data["valid"] is False


def test_group_level_quiet(model_dir: Path) -> None:
    result = run("-q", "resolve", str(model_dir))
    assert result.exit_code == 0
    assert result.stdout == ""


# --- quiet on success ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "{dir}"],
        ["signature", "{dir}"],
        ["resolve", "{dir}"],
        ["concepts", "{dir}", "--offline"],
        ["lock", "{dir}"],
        ["render", "{dir}", "-o", "{tmp}/ctx"],
        ["deploy-manifest", "{dir}", "--image", "127.0.0.1:5000/acme/m:v1"],
        ["init", "{tmp}/new", "--type", "generic"],
        ["keygen", "--output", "{tmp}/k"],
    ],
    ids=lambda a: a[0],
)
def test_quiet_silences_successful_commands(args: list[str], model_dir: Path, tmp_path: Path) -> None:
    argv = [a.format(dir=model_dir, tmp=tmp_path) for a in args]
    loud = run(*argv, env={"MODELPACK_KEY_PASSWORD": PASSWORD})
    assert loud.exit_code == 0, loud.output
    assert loud.stdout.strip(), "the command prints something without --quiet"
    for path in (tmp_path / "ctx", tmp_path / "new", tmp_path / "k.key", tmp_path / "k.pub"):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    quiet = run(*argv, "--quiet", env={"MODELPACK_KEY_PASSWORD": PASSWORD})
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == "" and quiet.stderr == ""


def test_quiet_keeps_json(model_dir: Path) -> None:
    result = run("resolve", str(model_dir), "--json", "--quiet")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["base_image"]


# --- runtime failures ---------------------------------------------------------------------------


def runtime_failures(port: int, model_dir: Path, keys: tuple[Path, Path]) -> dict[str, list[str]]:
    dead = f"127.0.0.1:{port}/acme/m"
    return {
        "build": [str(model_dir), "--tag", dead],
        "push": [f"{dead}:v1"],
        "versions": [dead],
        "inspect": ["--remote", f"{dead}:v1"],
        "sign": [f"{dead}:v1", "--key", str(keys[0])],
        "verify": [f"{dead}:v1", "--key", str(keys[1])],
    }


@pytest.mark.parametrize("name", ["build", "push", "versions", "inspect", "sign", "verify"])
def test_unreachable_engine_or_registry_exits_1_with_one_line(
    name: str, closed_port: int, model_dir: Path, keys: tuple[Path, Path]
) -> None:
    args = runtime_failures(closed_port, model_dir, keys)[name]
    env = {"DOCKER_HOST": "unix:///nonexistent", "MODELPACK_KEY_PASSWORD": PASSWORD}
    result = run(name, "--quiet", *args, env=env)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert len(lines(result.stderr)) == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    assert ("Docker engine" in result.stderr) or (str(closed_port) in result.stderr), result.stderr

    as_json = run(name, *args, "--json", env=env)
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["error"]["exit_code"] == 1


# --- colors, interrupts, broken pipes -----------------------------------------------------------


def test_errors_are_red_on_a_color_terminal_unless_no_color(tmp_path: Path) -> None:
    args = ["sign", "127.0.0.1:5000/acme/m:v1", "--key", str(tmp_path / "missing")]
    colored = run(*args, color=True)
    assert colored.exit_code == 2
    assert "\x1b[" in colored.stderr
    for env, extra in (({"NO_COLOR": "1"}, []), ({}, ["--no-color"])):
        plain = run(*args, *extra, env=env, color=True)
        assert plain.exit_code == 2
        assert "\x1b[" not in plain.stderr
        assert plain.stderr.startswith("error: ")


def _raising(error: BaseException) -> click.Command:
    @click.command()
    @json_option
    @handle_errors
    def command(as_json: bool) -> None:
        raise error

    return command


@pytest.mark.parametrize(
    ("error", "code"),
    [(KeyboardInterrupt(), 130), (BrokenPipeError(), 1), (RuntimeError("boom\nsecond line"), 1)],
)
def test_handle_errors_maps_everything(error: BaseException, code: int) -> None:
    result = CliRunner().invoke(_raising(error), [])
    assert result.exit_code == code
    assert "Traceback" not in result.output
    assert len(lines(result.stderr)) <= 1


# --- progress display ---------------------------------------------------------------------------


def test_cli_progress_plain_lines() -> None:
    out = io.StringIO()
    show = CliProgress(out, live=False)
    show(ProgressEvent("step", "Step 1/2 : FROM scratch"))
    show(ProgressEvent("log", "compiling"))
    show(ProgressEvent("checkpoint", "model.safetensors", 1, 2, "files"))
    show(ProgressEvent("push", "abc: Pushing", 10, 20, "bytes"))
    show(ProgressEvent("push", "abc: Pushed"))
    show(ProgressEvent("done", "r/m:v1 pushed"))
    assert out.getvalue().splitlines() == [
        "  Step 1/2 : FROM scratch",
        "[checkpoint] model.safetensors (1/2 files)",
        "  push abc: Pushed",
        "[done] r/m:v1 pushed",
    ]


def test_cli_progress_live_status_line_then_plain_line() -> None:
    out = io.StringIO()
    show = CliProgress(out, live=True)
    show.color = False
    show(ProgressEvent("push", "layer", 500, 1000, "bytes"))
    show(ProgressEvent("done", "finished"))
    text = out.getvalue()
    assert "\r\x1b[K" in text and "500 B/1.0 kB" in text and "##########" in text
    assert text.endswith("[done] finished\n")


def test_cli_progress_shows_a_waits_seconds_on_the_status_line_only() -> None:
    """A silent wait (the engine's docker save) counts on a terminal; a plain log gets no line
    per second, only the line the stage printed before the wait."""
    plain = io.StringIO()
    CliProgress(plain, live=False)(ProgressEvent("push", "the engine is writing the image", 7, None, "seconds"))
    assert plain.getvalue() == ""
    out = io.StringIO()
    show = CliProgress(out, live=True)
    show.color = False
    show(ProgressEvent("push", "the engine is writing the image", 7, None, "seconds"))
    show(ProgressEvent("push", "abc: Pushed"))
    assert out.getvalue() == "\r\x1b[K[push] the engine is writing the image 7 s\r\x1b[K  push abc: Pushed\n"


def test_cli_progress_is_silent_with_quiet() -> None:
    out = io.StringIO()

    @click.command()
    def command() -> None:
        CliProgress(out)(ProgressEvent("done", "x"))

    from modelpack.cli import _add_common_behaviour

    _add_common_behaviour(command)
    result = CliRunner().invoke(command, ["--quiet"])
    assert result.exit_code == 0
    assert out.getvalue() == ""
    assert CliRunner().invoke(command, []).exit_code == 0
    assert out.getvalue() == "[done] x\n"


# --- generated reference ------------------------------------------------------------------------


def test_cli_reference_is_current() -> None:
    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == cli_reference(), (
        "docs/cli.md is stale: run `python -m modelpack.cli.reference > docs/cli.md`"
    )


def test_cli_reference_covers_every_command() -> None:
    text = cli_reference()
    for name in ALL:
        assert f"## modelpack {name}\n" in text
    assert "| 2 | invalid input or usage" in text


def _cli(*args: str, timeout: int = 120) -> Any:
    """The installed CLI in a subprocess (these commands start servers and configure logging)."""
    return run_modelpack(*args, without=("MODELPACK_DEBUG",), timeout=timeout)


def _raising_model(root: Path) -> Path:
    (root / "1").mkdir(parents=True)
    (root / "config.yaml").write_text("model: {id: m}\n")
    (root / "requirements.txt").write_text("")
    (root / "1" / "model.py").write_text(
        "from modelpack.runtime import ModelClass\n\n"
        "class M(ModelClass):\n"
        "    @ModelClass.method\n"
        "    def predict(self, x: str = 'a') -> str:\n"
        "        raise ValueError('boom')\n"
    )
    return root


def test_predict_on_a_directory_whose_model_raises_is_one_line(tmp_path: Path) -> None:
    done = _cli("predict", str(_raising_model(tmp_path / "m")), "predict")
    assert done.returncode == 1
    assert lines(done.stderr) == ["error: HTTP 500: ValueError: boom"], done.stderr


def test_serve_on_a_port_in_use_or_a_bad_host_is_one_line(tmp_path: Path) -> None:
    model = _raising_model(tmp_path / "m")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _cli("serve", str(model), "--port", str(port))
        assert done.returncode == 1 and lines(done.stderr) == [
            f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
        ], done.stderr
        as_json = _cli("serve", str(model), "--port", str(port), "--json")
        assert as_json.returncode == 1 and json.loads(as_json.stdout)["error"]["exit_code"] == 1
    bad_host = _cli("serve", str(model), "--host", "999.1.1.1", "--port", "1")
    assert bad_host.returncode == 1 and len(lines(bad_host.stderr)) == 1
    assert lines(bad_host.stderr)[0].startswith("error: cannot listen on 999.1.1.1:1: ")
