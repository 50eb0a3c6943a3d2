"""`modelpack versions REPO`: the versions of a model image in its registry."""

from __future__ import annotations

import click

from modelpack.cli._common import emit_json, handle_errors, json_option
from modelpack.image.versions import list_versions


@click.command("versions")
@click.argument("repository", metavar="REPO")
@json_option
@handle_errors
def versions(repository: str, as_json: bool) -> None:
    """List REPO's versions (v1, v2, ...), newest first, with digest and creation time.

    A version's creation time is when `build --push` gave it to its content (recorded beside
    the image, so reproducible images keep their digest); versions pushed before modelpack
    recorded it show the image config's `created`.
    """
    result = list_versions(repository)
    if as_json:
        emit_json(result)
        return
    if not result.versions:
        click.echo(f"{result.repository}: no versions", err=True)
        return
    click.echo(f"{'VERSION':<9} {'DIGEST':<71} CREATED")
    for info in result.versions:
        click.echo(f"{info.version:<9} {info.digest:<71} {info.created or '-'}")
