"""`modelpack sign IMAGE --key KEY`."""

from __future__ import annotations

import click

from modelpack.cli._common import CliProgress, emit_json, handle_errors, json_option, prompt_password
from modelpack.supply.keys import load_signing_key
from modelpack.supply.signing import sign as run_sign


@click.command()
@click.argument("image", metavar="IMAGE")
@click.option(
    "--key",
    "key",
    default=None,
    metavar="KEY",
    help="Private key file (cosign format) or env://VAR; default: the PEM in MODELPACK_SIGNING_KEY.",
)
@click.option("--manifest-digest", default=None, help="Sign only this modelpack manifest artifact.")
@json_option
@handle_errors
def sign(image: str, key: str | None, manifest_digest: str | None, as_json: bool) -> None:
    """Sign IMAGE's digest and its modelpack manifest in cosign's format.

    The key password comes from MODELPACK_KEY_PASSWORD or COSIGN_PASSWORD, else a prompt.
    Registry credentials come from ~/.docker/config.json.
    """
    private = load_signing_key(key, prompt=prompt_password)
    result = run_sign(image, private, manifest_digest=manifest_digest, progress=CliProgress())
    if as_json:
        emit_json(result)
        return
    click.echo(f"signed {result.image}")
    click.echo(f"  signature: {result.signature_tag}")
    if result.manifests_signed:
        for digest in result.manifests_signed:
            click.echo(f"  manifest:  {digest}")
    else:
        click.echo("  warning: no modelpack manifest is attached to this image; `verify` will fail", err=True)
