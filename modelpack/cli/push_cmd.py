"""`modelpack push IMAGE [--tag REPO]`: push a locally built image as a version."""

from __future__ import annotations

import click

from modelpack.cli._common import CliProgress, echo_image_result, emit_json, handle_errors, json_option
from modelpack.cli.registry_options import registry_auth
from modelpack.image.stages import push as run_push


@click.command("push")
@click.argument("image", metavar="IMAGE")
@click.option(
    "--tag",
    "-t",
    "repository",
    default=None,
    metavar="REPO",
    help="Repository to push to, e.g. 127.0.0.1:5000/acme/m (default: IMAGE's repository).",
)
@click.option(
    "--version", "version", metavar="V", help="Use this version (v1, v2, ...) instead of the next one."
)
@click.option("--registry-username", metavar="U", help="Registry user (default: ~/.docker/config.json).")
@click.option("--registry-password-stdin", is_flag=True, help="Read the registry password from stdin.")
@json_option
@handle_errors
def push(
    image: str,
    repository: str | None,
    version: str | None,
    registry_username: str | None,
    registry_password_stdin: bool,
    as_json: bool,
) -> None:
    """Push IMAGE from the local engine (e.g. a `build` without --push) to REPO as a version.

    Same rules as `build --push`: content the registry already has is reported
    with its existing version and nothing is uploaded; new content gets the next
    version. Progress goes to stderr, the result to stdout.
    """
    auth = registry_auth(registry_username, registry_password_stdin)
    result = run_push(image, repository, version=version, auth=auth, progress=CliProgress())
    if as_json:
        emit_json(result)
        return
    echo_image_result(result)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
