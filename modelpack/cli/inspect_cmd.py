"""`modelpack inspect IMAGE`: the dev.modelpack.* labels of an image."""

from __future__ import annotations

import click

from modelpack.cli._common import emit_json, handle_errors, json_option
from modelpack.image.versions import inspect as inspect_image


@click.command("inspect")
@click.argument("image", metavar="IMAGE")
@click.option("--remote", is_flag=True, help="Read from the registry even if the local engine has the image.")
@json_option
@handle_errors
def inspect(image: str, remote: bool, as_json: bool) -> None:
    """Show IMAGE's dev.modelpack.* labels, from the local engine or straight from the registry."""
    result = inspect_image(image, prefer="registry" if remote else "engine")
    if as_json:
        emit_json(result)
        return
    click.echo(f"image:  {result.image} (from {result.source})")
    click.echo(f"digest: {result.digest}")
    for key, value in result.labels.items():
        click.echo(f"{key}={value}")
