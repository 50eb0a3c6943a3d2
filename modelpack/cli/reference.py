"""Render the command-line reference (Markdown) from the click commands themselves.

`docs/cli.md` is generated, never edited by hand; a test fails when it is stale.
Regenerate with `python -m modelpack.cli.reference > docs/cli.md`. Part of the CLI layer:
it reads the click commands (the config reference is `modelpack.project.config_reference`).
"""

from __future__ import annotations

import click

from modelpack.cli import cli

_WIDTH = 100


def _help(command: click.Command, name: str, parent: click.Context) -> str:
    ctx = click.Context(
        command, info_name=name, parent=parent, terminal_width=_WIDTH, max_content_width=_WIDTH
    )
    return command.get_help(ctx)


def cli_reference() -> str:
    """The Markdown reference of `modelpack` and every command, exactly as `--help` shows them."""
    root = click.Context(
        cli, info_name="modelpack", terminal_width=_WIDTH, max_content_width=_WIDTH, **cli.context_settings
    )
    lines = [
        "# Command-line reference",
        "",
        "<!-- Generated from the click commands by `python -m modelpack.cli.reference`; do not edit. -->",
        "",
        "Every command takes `--json` (machine-readable result on stdout), `--quiet`",
        "(nothing but errors and the `--json` output), `--verbose` (full logs, tracebacks of",
        "internal errors) and `--no-color`; a non-empty `NO_COLOR` environment variable also",
        "turns colors off. Progress goes to stderr: plain lines when stderr is not a terminal",
        "or `CI` is set, a live status line on a terminal.",
        "",
        "## Exit status",
        "",
        "| code | meaning |",
        "| --- | --- |",
        "| 0 | success |",
        "| 1 | runtime failure: engine, registry or network; a failed check (`verify`, `lock --check`) |",
        "| 2 | invalid input or usage: bad options, a missing or invalid model directory, bad references |",
        "| 130 | interrupted (Ctrl-C) |",
        "",
        "Errors are one line on stderr (`error: ...`, or `file:LINE:COL: field: message` for located",
        "findings), never a traceback; with `--json` the error is also printed on stdout as",
        '`{"error": {"type", "message", "exit_code", "diagnostics"}}`.',
        "",
        "## modelpack",
        "",
        "```text",
        cli.get_help(root),
        "```",
        "",
    ]
    for name in cli.list_commands(root):
        command = cli.get_command(root, name)
        assert command is not None
        lines += [f"## modelpack {name}", "", "```text", _help(command, name, root), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(cli_reference(), end="")
