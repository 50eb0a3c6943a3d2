"""`modelpack resolve DIR`: which base image the model builds on, and why."""

from __future__ import annotations

from pathlib import Path

import click

from modelpack.cli._common import emit_json, handle_errors, json_option, model_dir_argument, print_diagnostics
from modelpack.pipeline.catalog import load_catalog
from modelpack.pipeline.resolver import resolve as run_resolve
from modelpack.project.config import load


@click.command("resolve")
@model_dir_argument
@click.option(
    "--base-registry",
    metavar="PREFIX",
    default=None,
    help="Registry prefix for catalog bases, e.g. 127.0.0.1:5000/team "
    "(default: $MODELPACK_BASE_REGISTRY, else none).",
)
@click.option(
    "--catalog",
    "catalog_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Base-image catalog JSON to use instead of the shipped one.",
)
@json_option
@handle_errors
def resolve(model_dir: Path, base_registry: str | None, catalog_path: Path | None, as_json: bool) -> None:
    """Print the Python, torch and CUDA versions and the base image DIR builds on.

    torch comes from requirements.txt, CPU or GPU from the compute section, and
    build_info.python_version / cuda_version / image from config.yaml.
    """
    loaded = load(model_dir)
    catalog = load_catalog(catalog_path) if catalog_path is not None else None
    result = run_resolve(loaded, base_registry=base_registry, catalog=catalog)
    if as_json:  # stdout holds only the JSON: warnings on stderr, no workflow annotations
        for warning in loaded.warnings:
            click.echo(warning.format(), err=True)
        emit_json(result)
        return
    print_diagnostics(list(loaded.warnings))
    fields = result.to_dict()
    width = max(len(name) for name in fields) + 1
    for name, value in fields.items():
        click.echo(f"{name + ':':<{width}} {'none' if value is None else value}")
