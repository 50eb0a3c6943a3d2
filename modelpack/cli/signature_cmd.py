"""`modelpack signature DIR`: the methods of 1/model.py, read without importing it."""

from __future__ import annotations

from pathlib import Path

import click

from modelpack.cli._common import emit_json, handle_errors, json_option, print_diagnostics
from modelpack.project.method_types import ToolSignature
from modelpack.project.methods import format_method
from modelpack.project.methods import signature as read_signature


@click.command("signature")
@click.argument("model_dir", type=click.Path(path_type=Path), metavar="DIR")
@json_option
@handle_errors
def signature(model_dir: Path, as_json: bool) -> None:
    """Print the method signatures of DIR/1/model.py (DIR may also be the model.py file).

    The file is parsed, never imported, so its dependencies need not be installed.
    Anything not understood is a located warning on stderr.
    """
    result = read_signature(model_dir)
    if as_json:
        emit_json(result)
    else:
        sig = result.signature
        click.echo(f"{sig.class_name} ({sig.base})")
        for method in sig.methods:
            click.echo(f"  {format_method(method)}")
            if method.description:
                click.echo("      " + " ".join(method.description.split()))
        if sig.base == "StdioMCPModelClass":
            click.echo("  tools: the stdio server's, listed at run time (GET /v1/methods)")
        elif sig.tools is not None:
            click.echo(f"  tools ({len(sig.tools)}, read statically):")
            for tool in sig.tools:
                click.echo(f"    {_format_tool(tool)}")
    if as_json:  # stdout holds only the JSON: warnings on stderr, no workflow annotations
        for warning in result.warnings:
            click.echo(warning.format(), err=True)
    else:
        print_diagnostics(list(result.warnings))


def _format_tool(tool: ToolSignature) -> str:
    params = ", ".join(
        f"{i.name}: {i.type}" + ("" if i.required else f" = {i.default!r}") for i in tool.inputs
    )
    description = " ".join(tool.description.split())
    return f"{tool.name}({params})" + (f"  {description}" if description else "")
