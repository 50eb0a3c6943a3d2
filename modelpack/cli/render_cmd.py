"""`modelpack render DIR -o OUT`: the Dockerfile and build context, without building."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from modelpack.cli._common import emit_json, handle_errors, json_option, model_dir_argument, print_diagnostics
from modelpack.pipeline.prepare import prepare
from modelpack.pipeline.rendering import render as run_render
from modelpack.pipeline.settings import BUILDERS, CLASSIC, BuildSettings


@click.command("render")
@model_dir_argument
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the build context; must be empty or absent (or --force).",
)
@click.option("--force", is_flag=True, help="Replace a non-empty output directory.")
@click.option(
    "--ca-bundle",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="CA bundle for a TLS-inspecting proxy; reaches the dependency builder stage only "
    "(default: $PIP_CERT, $REQUESTS_CA_BUNDLE or $SSL_CERT_FILE).",
)
@click.option(
    "--index-url",
    metavar="URL",
    default=None,
    help="Package index (may hold credentials), for the lock and as a build argument of the builder "
    "stage only (default: $UV_INDEX_URL, then $PIP_INDEX_URL, else PyPI).",
)
@click.option("--use-dockerfile", is_flag=True, help="Build with the model directory's own Dockerfile as-is.")
@click.option("--base-registry", metavar="PREFIX", default=None, help="Registry prefix for catalog bases.")
@click.option("--keep-clarifai", is_flag=True, help="Keep a clarifai requirement in the lock.")
@click.option(
    "--builder",
    type=click.Choice(BUILDERS),
    default=CLASSIC,
    show_default=True,
    help="Write the Dockerfile for this builder: buildkit takes the index URLs and CA bundle as secrets "
    "(`docker build --secret id=...`), classic as build args and a context file.",
)
@json_option
@handle_errors
def render(
    model_dir: Path,
    output: Path,
    force: bool,
    ca_bundle: Path | None,
    index_url: str | None,
    use_dockerfile: bool,
    base_registry: str | None,
    keep_clarifai: bool,
    builder: str,
    as_json: bool,
) -> None:
    """Write DIR's Dockerfile and complete build context to OUT.

    Runs validate, signature, resolve and lock (reused when up to date) first.
    """
    settings = BuildSettings.from_env(
        ca_bundle=ca_bundle, index_url=index_url, base_registry=base_registry, use_dockerfile=use_dockerfile
    )
    settings = replace(settings, builder=builder)
    prepared = prepare(model_dir, settings=settings, keep_clarifai=keep_clarifai)
    result = run_render(
        prepared.model_dir,
        output,
        resolved=prepared.resolved,
        lock=prepared.lock,
        signature=prepared.signature.signature,
        settings=settings,
        force=force,
    )
    if as_json:
        emit_json(result)
        return
    print_diagnostics([*prepared.model_dir.warnings, *prepared.signature.warnings, *result.warnings])
    if prepared.lock is not None:
        for note in prepared.lock.notes:
            click.echo(f"note: {note}", err=True)
    click.echo(f"base image:     {prepared.resolved.base_image}")
    click.echo(f"dockerfile:     {result.dockerfile}")
    click.echo(f"context files:  {len(result.files)}")
    click.echo(f"content digest: {result.content_digest}")
    if result.build_args:
        click.echo(f"build args:     {', '.join(sorted(result.build_args))} (values not shown)")
    if result.secrets:
        click.echo(f"secrets:        {', '.join(sorted(s.id for s in result.secrets))} (--secret id=...)")
