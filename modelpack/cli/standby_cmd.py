"""`modelpack standby start|stop|status`: keep modelpack loaded for the commands that follow.

The `modelpack` executable asks the standby process first (see `modelpack/__main__.py`), so
with one running a command skips Python's start and the imports: most of a build that only
changes a line of model code. The standby process loads the modules a build uses, but none
that reads the environment when imported (huggingface_hub, torch): each command runs with its
caller's environment, so those load in the command's own child.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

import modelpack
from modelpack.cli import run
from modelpack.cli._common import emit_json, handle_errors, json_option
from modelpack.errors import InvalidInputError, ModelpackError, RuntimeFailure
from modelpack.image.build_records import installation_id
from modelpack.oci.transfer import deadline_session
from modelpack.pipeline.locking import runtime_requirements
from modelpack.pipeline.runtime_library import runtime_library
from modelpack.project.ignore import default_rules
from modelpack.resources import import_jsonschema, own_process
from modelpack.standby import client, place
from modelpack.standby.server import Channel, Request, StandbyError, StandbyOptions, serve

# Not loaded ahead: data, the executable's launcher, and the model server's own package.
SKIPPED_PACKAGES = ("modelpack.runtime", "modelpack._data", "modelpack.__main__")
# Loaded lazily by modelpack's stages, and needed by a build.
# jsonschema too, through resources.import_jsonschema (without its format checkers' packages)
THIRD_PARTY = ("docker", "requests", "isal.igzip", "jinja2", "yaml", "pathspec", "netrc")
# Must never be loaded in the standby process: they read the environment at import.
ENVIRONMENT_READERS = ("huggingface_hub", "torch", "transformers")
_READY_SECONDS = 60.0


@click.command("standby")
@click.argument("action", type=click.Choice(["start", "stop", "status"]))
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.01),
    default=None,
    metavar="MINUTES",
    help="start: end after this many minutes without a command (default: 15).",
)
@click.option("--foreground", is_flag=True, help="start: serve in this process instead of in the background.")
@json_option
@handle_errors
def standby(action: str, idle_timeout: float | None, foreground: bool, as_json: bool) -> None:
    """Keep modelpack loaded, so each command skips Python's start and the imports.

    \b
    standby start     start one for this installation (the executable uses it on its own)
    standby status    whether one runs: its process, commands served, idle timeout
    standby stop      end it once the commands it runs have ended

    MODELPACK_STANDBY=off makes a command run in its own process although one runs.
    """
    if action != "start" and (foreground or idle_timeout is not None):
        raise InvalidInputError(
            f"--foreground and --idle-timeout go with `standby start`, not `standby {action}`"
        )
    if action == "start":
        answer = _start((idle_timeout or 15.0) * 60.0, foreground)
    else:
        asked = client.ask({"kind": action})
        answer = (
            {"running": False} if asked is None else {"running": True, "stopping": action == "stop", **asked}
        )
    answer.pop("kind", None)
    answer["socket"] = place.socket_path(place.folder(), place.installation_key())
    if as_json:
        emit_json(answer)
    else:
        click.echo(_describe(action, answer))


def _describe(action: str, answer: dict[str, Any]) -> str:
    if not answer.get("running"):
        return "no standby process runs for this installation"
    if answer.get("stopping"):
        running = answer.get("commands_running", 0)
        return f"standby process {answer.get('pid')} stops (after its running commands end: {running})"
    minutes = float(answer.get("idle_timeout", 0)) / 60.0
    return (
        f"standby process {answer.get('pid')} {'ready' if action == 'start' else 'runs'}: "
        f"{answer.get('served', 0)} command(s) served, {answer.get('commands_running', 0)} running, "
        f"ends after {minutes:g} idle minute(s); socket {answer.get('socket', '')}"
    )


def _start(idle_seconds: float, foreground: bool) -> dict[str, Any]:
    if foreground:
        _serve(StandbyOptions(idle_timeout=idle_seconds))
        return {"running": False, "ended": True}
    known = client.ask({"kind": "status"})
    if known is not None:
        return {"running": True, "already": True, **known}
    root = place.private_folder(create=True)
    if root is None:
        raise InvalidInputError(f"{place.folder()} is not a folder of this user's alone: no standby process")
    log = Path(root) / f"{place.installation_key()}.log"
    command = [sys.executable, "-m", "modelpack", "standby", "start", "--foreground"]
    command += ["--idle-timeout", f"{idle_seconds / 60.0:g}"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MODELPACK_STANDBY": "off"},
            cwd=_starting_folder(root),
        )
    deadline = time.monotonic() + _READY_SECONDS
    while time.monotonic() < deadline:
        answer = client.ask({"kind": "status"})
        if answer is not None:
            return {"running": True, **answer}
        if process.poll() is not None:
            raise RuntimeFailure(f"the standby process ended at start: {_last_line(log)}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeFailure(f"the standby process did not answer within {_READY_SECONDS:g} s (log: {log})")


def _starting_folder(root: str) -> str:
    """Where the standby process starts: `python -m` puts that folder first on its search path,
    so it must hold the modelpack this process runs, or none. Started in a source checkout, the
    installed executable's standby would otherwise load the checkout's modules: another
    installation, whose socket the executable never finds."""
    package_folder = os.path.dirname(os.path.dirname(os.path.abspath(modelpack.__file__)))
    first = os.path.abspath(sys.path[0] or os.curdir) if sys.path else ""
    return package_folder if first == package_folder else root


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"exit without a message (log: {log})"


def _serve(options: StandbyOptions) -> None:
    own_process()
    preload()
    try:
        serve(
            _run_command,
            options,
            ready=lambda path: click.echo(f"standby process {os.getpid()} listens on {path}", err=True),
        )
    except StandbyError as error:
        raise InvalidInputError(str(error)) from error


def preload() -> list[str]:
    """Import what a command would: modelpack's stages and the libraries they load lazily."""
    loaded = []
    for module in pkgutil.walk_packages(modelpack.__path__, "modelpack."):
        if not module.name.startswith(SKIPPED_PACKAGES):
            importlib.import_module(module.name)
            loaded.append(module.name)
    for name in THIRD_PARTY:
        importlib.import_module(name)
        loaded.append(name)
    import_jsonschema()  # as a command loads it: rfc3987_syntax alone builds a grammar for seconds
    loaded.append("jsonschema")
    present = [name for name in ENVIRONMENT_READERS if name in sys.modules]
    if present:
        raise RuntimeFailure(
            f"the standby process loaded {', '.join(present)}, which read the environment at import"
        )
    warm_up()
    return loaded


def warm_up() -> None:
    """Compute once, before the forks, what every build reads of this installation and would
    otherwise compute again in each child: the installation's digest (build records), the
    runtime library's files, modelpack's runtime requirements, the default ignore rules and the
    registry client's session classes. The files read are re-checked by their state in each
    child; the installed metadata and the modules are what the standby's own key covers. Not
    here: what a process keeps without such a check (the config schema, a data file a source
    tree's developer may edit while the standby runs). None depends on the caller's environment."""
    try:
        installation_id()
        runtime_library()
        runtime_requirements()
        default_rules()
        deadline_session().close()
    except (ModelpackError, OSError, ValueError):
        pass  # a child computes it itself, and reports what is wrong


def _run_command(request: Request, channel: Channel) -> None:
    """In a forked child: the command, as the executable runs it (ends the process)."""
    click.termui.hidden_prompt_func = channel.ask  # type: ignore[assignment]
    run()
