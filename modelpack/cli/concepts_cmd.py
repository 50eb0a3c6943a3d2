"""`modelpack concepts DIR`: the concepts a model will use and where they come from."""

from __future__ import annotations

from pathlib import Path

import click

from modelpack.cli._common import emit_json, handle_errors, json_option, model_dir_argument
from modelpack.project.concepts import infer_concepts


@click.command()
@model_dir_argument
@json_option
@click.option("--offline", is_flag=True, help="Do not contact the hub; fail if concepts would need it.")
@handle_errors
def concepts(model_dir: Path, as_json: bool, offline: bool) -> None:
    """Print the concepts of the model in DIR: from config.yaml, or inferred from the
    checkpoint's config.json id2label (only config.json is downloaded), or none.
    """
    result = infer_concepts(model_dir, online=not offline)
    if as_json:
        emit_json(result)
        return
    for diagnostic in result.diagnostics:
        click.echo(diagnostic.format(), err=True)
    origin = f" ({result.origin})" if result.origin else ""
    click.echo(f"source: {result.source}{origin}")
    for concept in result.concepts:
        click.echo(f"{concept.id}\t{concept.name}")
