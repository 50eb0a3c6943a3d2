"""`modelpack init DIR --type TYPE`: start a model directory from a scaffold."""

from __future__ import annotations

from pathlib import Path

import click

from modelpack.cli._common import emit_json, handle_errors, json_option
from modelpack.project.scaffold import SCAFFOLDS, init_model_dir

SCAFFOLD_TYPES = tuple(SCAFFOLDS)


@click.command("init")
@click.argument("model_dir", type=click.Path(path_type=Path), metavar="DIR")
@click.option(
    "--type",
    "model_type",
    type=click.Choice(SCAFFOLD_TYPES),
    required=True,
    help="Kind of model to scaffold.",
)
@click.option("--model-id", default=None, help="model.id in config.yaml (default: from the directory name).")
@click.option("--force", is_flag=True, help="Write into a non-empty directory, overwriting scaffold files.")
@json_option
@handle_errors
def init(model_dir: Path, model_type: str, model_id: str | None, force: bool, as_json: bool) -> None:
    """Create the model directory DIR (config.yaml, requirements.txt, 1/model.py).

    Refuses a non-empty DIR unless --force. Edit 1/model.py where its comments say
    EDIT, then check the result with `modelpack validate DIR`.
    """
    result = init_model_dir(model_dir, model_type, model_id=model_id, force=force)
    if as_json:
        emit_json(result)
        return
    click.echo(f"created {model_type} model in {result.directory}:")
    for name in result.files:
        click.echo(f"  {result.directory / name}")
