"""`modelpack deploy-manifest DIR|IMAGE`: Kubernetes Deployment + Service for a model image."""

from __future__ import annotations

from pathlib import Path

import click

from modelpack.cli._common import emit_json, handle_errors, json_option
from modelpack.deploy import kubernetes as deploy
from modelpack.errors import InvalidInputError
from modelpack.project import config as config_stage


@click.command("deploy-manifest")
@click.argument("target", metavar="DIR|IMAGE")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["kubernetes"]),
    default="kubernetes",
    show_default=True,
    help="Manifest format.",
)
@click.option("--image", "image", metavar="REF", help="Image to deploy (required with DIR).")
@click.option(
    "--replicas", type=click.IntRange(min=0), default=1, show_default=True, help="Deployment replicas."
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="Container port ($PORT of the runtime) and Service port.",
)
@json_option
@handle_errors
def deploy_manifest(
    target: str, output_format: str, image: str | None, replicas: int, port: int, as_json: bool
) -> None:
    """Print a Deployment and a Service for a model (YAML stream; --json: a v1 List).

    With DIR, the compute requirements, secrets and checkpoints come from its
    config.yaml and --image names the image. With IMAGE (a pushed modelpack
    image), the config is read back out of the image in the registry.
    Secrets are referenced (secretKeyRef), never included.
    """
    path = Path(target)
    if path.is_dir():
        if not image:
            raise InvalidInputError("--image REF is required with a model directory")
        objects = deploy.deploy_manifest(config_stage.load(path), image, replicas=replicas, port=port)
    elif path.exists():
        raise InvalidInputError(f"{target}: not a model directory")
    else:
        if image and image != target:
            raise InvalidInputError("--image is only for DIR; with IMAGE the image is the argument")
        objects = deploy.objects_for_image(target, replicas=replicas, port=port)
    if as_json:
        emit_json(deploy.to_list(objects))
        return
    click.echo(deploy.to_yaml(objects), nl=False)
