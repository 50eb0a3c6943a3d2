"""`modelpack render DIR -o OUT`: the Dockerfile and build context, without building."""

from __future__ import annotations

from pathlib import Path

import click

from modelpack.cli._common import emit_json, handle_errors, json_option, model_dir_argument, print_diagnostics


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
    help="CA bundle for a TLS-inspecting proxy; reaches the dependency builder stage only.",
)
@click.option(
    "--index-url",
    metavar="URL",
    default=None,
    help="pip index (may hold credentials): passed as a build argument to the builder stage only.",
)
@click.option("--use-dockerfile", is_flag=True, help="Build with the model directory's own Dockerfile as-is.")
@click.option("--base-registry", metavar="PREFIX", default=None, help="Registry prefix for catalog bases.")
@click.option("--keep-clarifai", is_flag=True, help="Keep a clarifai requirement in the lock.")
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
    as_json: bool,
) -> None:
    """Write DIR's Dockerfile and complete build context to OUT.

    Runs validate, signature, resolve and lock (reused when up to date) first.
    """
    from modelpack.pipeline.locking import lock
    from modelpack.pipeline.rendering import render as run_render
    from modelpack.pipeline.resolver import resolve
    from modelpack.pipeline.settings import BuildSettings
    from modelpack.project.config import load
    from modelpack.project.methods import signature

    loaded = load(model_dir)
    sig = signature(loaded.root)
    resolved = resolve(loaded, base_registry=base_registry)
    settings = BuildSettings(ca_bundle=ca_bundle, index_url=index_url, use_dockerfile=use_dockerfile)
    locked = None
    if not use_dockerfile:
        locked = lock(loaded, resolved=resolved, settings=settings, keep_clarifai=keep_clarifai)
    result = run_render(
        loaded,
        output,
        resolved=resolved,
        lock=locked,
        signature=sig.signature,
        settings=settings,
        force=force,
    )
    if as_json:
        emit_json(result)
        return
    print_diagnostics([*loaded.warnings, *sig.warnings, *result.warnings])
    if locked is not None:
        for note in locked.notes:
            click.echo(f"note: {note}", err=True)
    click.echo(f"base image:     {resolved.base_image}")
    click.echo(f"dockerfile:     {result.dockerfile}")
    click.echo(f"context files:  {len(result.files)}")
    click.echo(f"content digest: {result.content_digest}")
    if result.build_args:
        click.echo(f"build args:     {', '.join(sorted(result.build_args))} (values not shown)")
