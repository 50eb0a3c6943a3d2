"""The `modelpack` command: a thin layer that formats what the library returns.

Each command lives in its own module under ``modelpack.cli`` and is registered
in ``_COMMANDS`` below; modules are imported only when their command runs, so
``modelpack --help`` stays fast. `LazyGroup` gives every command the same
``--quiet``/``--verbose``/``--no-color`` options and exit-status epilog, so the
behaviour is uniform and commands do not re-implement it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from modelpack._version import __version__
from modelpack.cli._common import EXIT_CODES_HELP, common_options, stop_on_sigterm, with_output_settings
from modelpack.resources import own_process
from modelpack.standby.wire import exit_process

# command name -> (module, attribute, one-line help shown by `modelpack --help`)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "validate": (
        "modelpack.cli.validate_cmd",
        "validate",
        "Check a model directory; located errors, exit 2 when invalid.",
    ),
    "signature": ("modelpack.cli.signature_cmd", "signature", "Print the method signatures of 1/model.py."),
    "init": ("modelpack.cli.init_cmd", "init", "Create a new model directory from a scaffold."),
    "serve": ("modelpack.cli.serve_cmd", "serve", "Serve a model directory over HTTP."),
    "test": ("modelpack.cli.test_cmd", "test", "Build a model's image, start it and call every method."),
    "predict": (
        "modelpack.cli.predict_cmd",
        "predict",
        "Call a method of a served model (URL) or a model directory.",
    ),
    "lock": ("modelpack.cli.lock_cmd", "lock", "Pin all dependencies with hashes into requirements.lock."),
    "render": ("modelpack.cli.render_cmd", "render", "Write the Dockerfile and build context for a model."),
    "concepts": (
        "modelpack.cli.concepts_cmd",
        "concepts",
        "Print a model's concepts and where they come from.",
    ),
    "build": ("modelpack.cli.build_cmd", "build", "Build (and push) a versioned image of a model directory."),
    "versions": ("modelpack.cli.versions_cmd", "versions", "List the versions of an image repository."),
    "inspect": ("modelpack.cli.inspect_cmd", "inspect", "Show the dev.modelpack.* labels of an image."),
    "resolve": (
        "modelpack.cli.resolve_cmd",
        "resolve",
        "Pick the base image (Python, torch, CUDA) and say why.",
    ),
    "deploy-manifest": (
        "modelpack.cli.deploy_manifest_cmd",
        "deploy_manifest",
        "Print a Kubernetes Deployment and Service for a model image.",
    ),
    "keygen": (
        "modelpack.cli.keygen_cmd",
        "keygen",
        "Create a cosign-compatible ECDSA P-256 signing key pair.",
    ),
    "sign": ("modelpack.cli.sign_cmd", "sign", "Sign an image and its modelpack manifest (cosign format)."),
    "verify": ("modelpack.cli.verify_cmd", "verify", "Verify an image's signature and its signed manifest."),
    "push": ("modelpack.cli.push_cmd", "push", "Push a locally built image as a new version."),
    "base": ("modelpack.cli.base_cmd", "base", "List, build or push the catalog's base images."),
    "standby": (
        "modelpack.cli.standby_cmd",
        "standby",
        "Keep modelpack loaded, so each command skips Python's start and imports.",
    ),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute, _ = entry
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        _add_common_behaviour(command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _add_common_behaviour(command: click.Command) -> None:
    """Once per command: the shared output options, their effect, and the exit-status epilog."""
    if getattr(command, "_modelpack_common", False):
        return
    taken = {name for param in command.params for name in getattr(param, "opts", [])}
    command.params.extend(o for o in common_options() if not set(o.opts) & taken)
    if command.callback is not None:
        command.callback = with_output_settings(command.callback)
    if not command.epilog:
        command.epilog = EXIT_CODES_HELP
    command._modelpack_common = True  # type: ignore[attr-defined]


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Every command also takes --json, --quiet, --verbose and --no-color (NO_COLOR is honored).",
)
@click.version_option(__version__, "--version", prog_name="modelpack")
def cli() -> None:
    """Compile a model directory into a versioned, signed container image.

    \b
    Exit status:
      0    success
      1    runtime failure: engine, registry, network, failed check
      2    invalid input or usage
      130  interrupted
    """


def _add_group_options() -> None:
    """`modelpack -q CMD` works as well as `modelpack CMD -q`."""
    cli.params.extend(common_options())


_add_group_options()


def main(argv: list[str] | None = None) -> Any:
    stop_on_sigterm()
    return cli.main(args=argv, prog_name="modelpack")


def run() -> None:
    """The `modelpack` executable: `main`, then a prompt process exit.

    Tearing down the interpreter (collecting every module the docker SDK, requests and
    jsonschema brought in) took a tenth of a second after the work was done; exit
    handlers still run and the output is flushed, then the process ends.
    """
    import atexit

    own_process()  # no other code shares this interpreter
    code: Any = 0
    try:
        main()
    except SystemExit as done:
        code = done.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message") prints it, status 1
        sys.stderr.write(f"{code}\n")
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed pipe or stream: nothing left to save
            code = code or 1
    exit_process(code)  # a standby's caller hears the status before this process is torn down
