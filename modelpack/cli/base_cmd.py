"""`modelpack base list|build|push`: the catalog's base images, built here and shared via a registry."""

from __future__ import annotations

from pathlib import Path

import click

from modelpack.cli._common import CliProgress, emit_json, handle_errors, json_option
from modelpack.cli.push_cmd import registry_auth
from modelpack.errors import InvalidInputError
from modelpack.image import bases
from modelpack.image import engine as engine_stage
from modelpack.image.session import ping, registry_for
from modelpack.oci.reference import parse_repository
from modelpack.pipeline.base_recipes import BaseSettings, recipe
from modelpack.pipeline.catalog import with_registry
from modelpack.pipeline.resolver import resolve
from modelpack.pipeline.settings import BuildSettings
from modelpack.progress import reporter
from modelpack.project.config import load


@click.command("base")
@click.argument("action", type=click.Choice(["list", "build", "push"]))
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option(
    "--for",
    "model_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="build: the base the model directory DIR resolves to.",
)
@click.option(
    "--base-registry",
    metavar="PREFIX",
    default=None,
    help="Registry prefix where bases are shared, e.g. 127.0.0.1:5000/team "
    "(default: $MODELPACK_BASE_REGISTRY). build pulls PREFIX/NAME first and pushes what it builds.",
)
@click.option(
    "--torch-index-url",
    metavar="URL",
    default=None,
    help="PyTorch-style wheel index for torch variants other than the PyPI wheel "
    "(default: $MODELPACK_TORCH_INDEX_URL, else https://download.pytorch.org/whl).",
)
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA bundle for the install step, as a build secret (default: PIP_CERT, REQUESTS_CA_BUNDLE "
    "or SSL_CERT_FILE).",
)
@click.option("--registry-username", metavar="U", help="Registry user (default: ~/.docker/config.json).")
@click.option("--registry-password-stdin", is_flag=True, help="Read the registry password from stdin.")
@json_option
@handle_errors
def base(
    action: str,
    names: tuple[str, ...],
    model_dir: Path | None,
    base_registry: str | None,
    torch_index_url: str | None,
    ca_bundle: Path | None,
    registry_username: str | None,
    registry_password_stdin: bool,
    as_json: bool,
) -> None:
    """List, build or push the catalog's base images.

    \b
    base list [PATTERN]...            bases with engine/registry presence, size, digest
    base build NAME... | --for DIR    build exactly these bases (or the one DIR resolves to)
    base push NAME... --base-registry PREFIX
    """
    settings = BuildSettings.from_env(ca_bundle=ca_bundle, base_registry=base_registry)
    base_settings = BaseSettings.from_env(torch_index_url=torch_index_url)
    if action == "build" and model_dir is not None:
        resolved = resolve(load(model_dir), base_registry="", torch_index=base_settings.torch_index)
        if resolved.base_from_config:
            raise InvalidInputError(
                f"{model_dir} builds on build_info.image {resolved.base_image}, not a catalog base"
            )
        names = (*names, resolved.base_name)
    elif model_dir is not None:
        raise InvalidInputError("--for goes with `base build`")
    if action != "list":
        if not names:
            raise InvalidInputError(f"base {action} needs a base NAME (see `modelpack base list`)")
        for name in names:
            recipe(name, base_settings)  # an unknown name fails here, before the engine is reached
    if action == "push" and not settings.base_registry:
        raise InvalidInputError("base push needs --base-registry PREFIX (or $MODELPACK_BASE_REGISTRY)")
    if settings.base_registry:
        with_registry("x", settings.base_registry)  # a malformed prefix is exit 2 now
    auth = registry_auth(registry_username, registry_password_stdin)
    progress = reporter(CliProgress())
    client = engine_stage.connect(timeout=30, request_timeout=3600)
    try:
        job = bases.BaseJob(client, base_settings, progress, settings.base_registry, auth, settings.ca_bundle)
        if action == "list":
            _list(job, names, as_json)
            return
        outcomes = []
        for name in names:
            if action == "build":
                outcomes.append(bases.ensure(job, name))
            else:
                outcomes.append(bases.push(job, name))
    finally:
        client.close()
    if as_json:
        emit_json({"bases": [o.to_dict() for o in outcomes]})
        return
    for outcome in outcomes:
        pushed = " (pushed)" if outcome.pushed else ""
        click.echo(f"{outcome.reference}: {outcome.source}{pushed} {outcome.digest or ''}".rstrip())


def _list(job: bases.BaseJob, patterns: tuple[str, ...], as_json: bool) -> None:
    registry_has = None
    if job.base_registry:
        prefix = parse_repository(with_registry("modelpack-base/x", job.base_registry))
        client = registry_for(prefix, job.auth)
        ping(client)

        def registry_has(reference: str) -> bool:
            repository, tag = reference.split("/", 1)[1].rsplit(":", 1)
            return client.head_manifest(repository, tag) is not None

    listed = bases.list_bases(job, patterns, registry_has)
    if as_json:
        emit_json(listed)
        return
    for status in listed.bases:
        where = ["engine" if status.in_engine else "-"]
        if status.in_registry is not None:
            where.append("registry" if status.in_registry else "-")
        size = f"{status.size / 1e9:.2f} GB" if status.size else ""
        click.echo(f"{status.name:<48} {' '.join(where):<16} {size:>9} {status.digest or ''}".rstrip())
    click.echo("python versions this machine can build:")
    for python, ways in listed.buildable_python.items():
        click.echo(f"  {python}: {', '.join(ways)}")
