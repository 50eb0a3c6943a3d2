"""`modelpack build DIR --tag REPO`: the whole pipeline into a versioned image, optionally pushed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from modelpack.cli._common import (
    CliProgress,
    echo_image_result,
    emit_json,
    handle_errors,
    json_option,
    model_dir_argument,
    prompt_password,
)
from modelpack.cli.registry_options import registry_auth
from modelpack.deploy.job_summary import maybe_write_job_summary
from modelpack.errors import InvalidInputError
from modelpack.image.builder import build as run_build
from modelpack.pipeline.base_recipes import BaseSettings
from modelpack.pipeline.settings import BuildSettings
from modelpack.supply.keys import load_signing_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey


def _settings(
    ca_bundle: Path | None,
    index_url: str | None,
    extra_index_urls: tuple[str, ...],
    use_dockerfile: bool = False,
) -> BuildSettings:
    """The options over the environment, as `lock` and `render` take them: one index for all three."""
    return BuildSettings.from_env(
        ca_bundle=ca_bundle,
        index_url=index_url,
        extra_index_urls=extra_index_urls,
        use_dockerfile=use_dockerfile,
    )


def _signing_key(key: str | None, push: bool, *, interactive: bool) -> EllipticCurvePrivateKey:
    """Load (and decrypt) the key before building, so a wrong password fails in a second."""
    if not push:
        raise InvalidInputError("--sign needs --push: signatures are stored in the registry")
    prompt = prompt_password if interactive and sys.stdin.isatty() else None
    return load_signing_key(key, prompt=prompt)


@click.command("build")
@model_dir_argument
@click.option(
    "--tag", "-t", "repository", required=True, metavar="REPO", help="Repository, e.g. 127.0.0.1:5000/acme/m."
)
@click.option("--push", is_flag=True, help="Push the image and its tags to the registry.")
@click.option(
    "--version", "version", metavar="V", help="Use this version (v1, v2, ...) instead of the next one."
)
@json_option
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA bundle for pip in the builder stage (default: PIP_CERT, REQUESTS_CA_BUNDLE or SSL_CERT_FILE).",
)
@click.option(
    "--index-url",
    metavar="URL",
    help="Package index for the lock and the builder stage (default: $UV_INDEX_URL, then $PIP_INDEX_URL).",
)
@click.option(
    "--extra-index-url",
    "extra_index_urls",
    multiple=True,
    metavar="URL",
    help="Extra package index (default: $UV_EXTRA_INDEX_URL, then $PIP_EXTRA_INDEX_URL).",
)
@click.option(
    "--network", "network_mode", metavar="MODE", help="Engine network while building (default: auto)."
)
@click.option("--registry-username", metavar="U", help="Registry user (default: ~/.docker/config.json).")
@click.option("--registry-password-stdin", is_flag=True, help="Read the registry password from stdin.")
@click.option("--base-registry", metavar="P", help="Registry prefix for base images (mirrors).")
@click.option("--use-dockerfile", is_flag=True, help="Build with the model directory's own Dockerfile as-is.")
@click.option(
    "--no-build-base",
    is_flag=True,
    help="Fail instead of building a catalog base that is neither in the engine nor in the base registry.",
)
@click.option(
    "--torch-index-url",
    metavar="URL",
    help="PyTorch-style wheel index for torch variants other than the PyPI wheel "
    "(default: $MODELPACK_TORCH_INDEX_URL, else https://download.pytorch.org/whl).",
)
@click.option(
    "--builder",
    type=click.Choice(["auto", "buildkit", "classic"]),
    default="auto",
    show_default=True,
    help="Engine builder: BuildKit (secret and cache mounts) where the engine runs it, or the classic one.",
)
@click.option(
    "--cache-registry",
    metavar="REF",
    help="Share the BuildKit build cache through this image (REPO[:TAG], tag default buildcache): "
    "exported after the build, imported before it; for runners that start with an empty engine.",
)
@click.option(
    "--sign",
    "sign",
    is_flag=True,
    help="With --push: sign the image and its modelpack manifest (cosign format).",
)
@click.option(
    "--key",
    "key",
    metavar="KEY",
    help="Private key file or env://VAR for --sign (default: the PEM in MODELPACK_SIGNING_KEY); "
    "password from MODELPACK_KEY_PASSWORD or COSIGN_PASSWORD.",
)
@handle_errors
def build(
    model_dir: Path,
    repository: str,
    push: bool,
    version: str | None,
    as_json: bool,
    ca_bundle: Path | None,
    index_url: str | None,
    extra_index_urls: tuple[str, ...],
    network_mode: str | None,
    registry_username: str | None,
    registry_password_stdin: bool,
    base_registry: str | None,
    use_dockerfile: bool,
    no_build_base: bool,
    torch_index_url: str | None,
    builder: str,
    cache_registry: str | None,
    sign: bool,
    key: str | None,
) -> None:
    """Build DIR into REPO:<version> (and REPO:c-<content>); with --push, upload it.

    Unchanged inputs report the existing version and push nothing; a changed
    model gets the next version. A catalog base missing from the engine is pulled
    from --base-registry, else built (and pushed there). Progress goes to stderr,
    the result to stdout.
    """
    auth = registry_auth(registry_username, registry_password_stdin)
    signing_key = _signing_key(key, push, interactive=not registry_password_stdin) if sign or key else None
    result = run_build(
        model_dir,
        repository=repository,
        push=push,
        version=version,
        settings=_settings(ca_bundle, index_url, extra_index_urls, use_dockerfile),
        base_registry=base_registry,
        network_mode=network_mode,
        auth=auth,
        progress=CliProgress(),
        signing_key=signing_key,
        build_base=not no_build_base,
        base_settings=BaseSettings.from_env(torch_index_url=torch_index_url),
        builder=None if builder == "auto" else builder,
        cache_registry=cache_registry,
    )
    maybe_write_job_summary(result.to_dict())  # on GitHub Actions only
    if as_json:
        emit_json(result)
        return
    echo_image_result(result)
    chain = result.supply_chain
    if chain is not None:
        click.echo(f"manifest: {chain.manifest_digest}" + (" (signed)" if chain.signed else " (unsigned)"))
        if chain.signed:
            click.echo(f"signature: {chain.signature_tag} (key {chain.key_id})")
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
