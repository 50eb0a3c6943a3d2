"""`modelpack resolve DIR`: which base image the model builds on, and why."""

from __future__ import annotations

from pathlib import Path

import click

from modelpack.cli._common import emit_json, handle_errors, json_option, model_dir_argument, print_diagnostics
from modelpack.pipeline.catalog import TorchIndex, load_catalog
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
@click.option(
    "--torch-index-url",
    metavar="URL",
    default=None,
    help="PyTorch-style wheel index for torch variants other than the PyPI wheel, URL/cpu, URL/cu118, ... "
    "(default: $MODELPACK_TORCH_INDEX_URL, else https://download.pytorch.org/whl).",
)
@json_option
@handle_errors
def resolve(
    model_dir: Path,
    base_registry: str | None,
    catalog_path: Path | None,
    torch_index_url: str | None,
    as_json: bool,
) -> None:
    """Print the Python, torch and CUDA versions and the base image DIR builds on.

    torch comes from requirements.txt, CPU or GPU from the compute section, and
    build_info.python_version / cuda_version / image from config.yaml.
    """
    loaded = load(model_dir)
    catalog = load_catalog(catalog_path) if catalog_path is not None else None
    result = run_resolve(
        loaded, base_registry=base_registry, catalog=catalog, torch_index=TorchIndex.from_env(torch_index_url)
    )
    if as_json:  # stdout holds only the JSON: warnings on stderr, no workflow annotations
        for warning in loaded.warnings:
            click.echo(warning.format(), err=True)
        emit_json(result)
        return
    print_diagnostics(list(loaded.warnings))
    for note in result.notes:
        click.echo(f"warning: {note}", err=True)
    shown = ("python_version", "torch_version", "cuda_version", "accelerator", "base_image", "reason")
    fields = {key: value for key, value in result.to_dict().items() if key in shown}
    if result.torch_source:
        where = result.torch_index_url or {"pypi": "PyPI", "lock": "the lock"}.get(result.torch_source)
        fields["torch_source"] = f"{result.torch_variant or 'torch'} from {where}"
    width = max(len(name) for name in fields) + 1
    for name, value in fields.items():
        click.echo(f"{name + ':':<{width}} {'none' if value is None else value}")
