"""`modelpack keygen [--output PREFIX]`."""

from __future__ import annotations

import click

from modelpack.cli._common import emit_json, handle_errors, json_option
from modelpack.supply.keys import keygen as run_keygen
from modelpack.supply.keys import resolve_password


def _prompt_new_password() -> str:
    value: str = click.prompt(
        "Password for the private key", hide_input=True, confirmation_prompt=True, default="", show_default=False,
        err=True,
    )  # fmt: skip
    return value


@click.command()
@click.option(
    "--output",
    "-o",
    "prefix",
    default="modelpack",
    show_default=True,
    metavar="PREFIX",
    help="Write PREFIX.key (encrypted, mode 0600) and PREFIX.pub.",
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@json_option
@handle_errors
def keygen(prefix: str, force: bool, as_json: bool) -> None:
    """Create an ECDSA P-256 key pair in cosign's format (cosign can use it, and vice versa).

    The private key is encrypted with a password from MODELPACK_KEY_PASSWORD or
    COSIGN_PASSWORD, else asked for on the terminal.
    """
    password = resolve_password(_prompt_new_password)
    files = run_keygen(prefix, password, force=force)
    if as_json:
        emit_json(files)
    else:
        click.echo(f"private key: {files.private_key} (encrypted, mode 0600; keep it secret)")
        click.echo(f"public key:  {files.public_key}")
        click.echo(f"key id:      {files.key_id}")
