"""`modelpack validate DIR`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelpack.cli._common import emit_json, handle_errors, json_option, model_dir_argument, print_diagnostics
from modelpack.pipeline.validate import validate as run_validate


@click.command()
@model_dir_argument
@json_option
@click.option(
    "--online",
    is_flag=True,
    help="Also check that the checkpoint repo and revision exist and the token (HF_TOKEN) can read them.",
)
@handle_errors
def validate(model_dir: Path, as_json: bool, online: bool) -> None:
    """Check the model directory DIR: config.yaml, requirements.txt and 1/model.py.

    Prints every error as `file:LINE:COL: field.path: message` and exits 2 when
    the directory is invalid; warnings go to stderr and do not fail.
    """
    report = run_validate(model_dir, online=online)
    if as_json:
        emit_json(report)
    else:
        print_diagnostics(list(report.errors) + list(report.warnings))
        if report.valid:
            click.echo(
                f"{model_dir}: valid" + (f" ({len(report.warnings)} warnings)" if report.warnings else "")
            )
    sys.exit(0 if report.valid else 2)
