"""`modelpack verify IMAGE --key PUB [--deep] [--json]`."""

from __future__ import annotations

import click

from modelpack.cli._common import emit_json, handle_errors, json_option
from modelpack.supply.verification import verify as run_verify


@click.command()
@click.argument("image", metavar="IMAGE")
@click.option("--key", "key", required=True, metavar="PUB", help="Public key file (PEM) or env://VAR.")
@click.option(
    "--deep", is_flag=True, help="Also pull the layers and re-hash every file the manifest records."
)
@click.option(
    "--source-repository",
    metavar="REPO",
    help="The repository the image was built and signed for, when IMAGE is a mirror or a deliberate "
    "copy (default: IMAGE's own repository).",
)
@json_option
@handle_errors
def verify(image: str, key: str, deep: bool, source_repository: str | None, as_json: bool) -> None:
    """Verify IMAGE: the signature matches its digest and KEY and was made for IMAGE's repository,
    the modelpack manifest is signed by the same key and records this digest, repository and tag.
    Exit 0 when all hold, 1 with the reason otherwise."""
    result = run_verify(image, key, deep=deep, source_repository=source_repository)
    if as_json:
        emit_json(result)
        return
    click.echo(f"verified {result.image}")
    click.echo(f"  key:      {result.key_id}")
    click.echo(f"  manifest: {result.manifest_digest} (built {result.manifest.build_time})")
    if deep:
        line = f"  files:    {result.files_checked} checked in the image layers"
        if result.files_not_in_image:
            line += f", {result.files_not_in_image} fetched at runtime (not in the image)"
        click.echo(line)
