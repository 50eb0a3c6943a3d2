"""`modelpack build DIR --tag REPO`: the whole pipeline into a versioned image, optionally pushed."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from modelpack.cli._common import (
    CliProgress,
    echo_image_result,
    emit_json,
    handle_errors,
    json_option,
    model_dir_argument,
    registry_auth,
)
from modelpack.errors import InvalidInputError


class ProgressPrinter:
    """Prints build progress on stderr: one line per stage, Dockerfile step and pushed layer.

    On an interactive terminal (and not under CI) build output scrolls in a single
    status line; otherwise only plain lines are printed.
    """

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)()) and not os.environ.get("CI")
        self._status = False

    def __call__(self, stage: str, message: str) -> None:
        if stage == "log":
            if self.live:
                width = 100
                self.stream.write("\r\033[K  " + message[:width])
                self.stream.flush()
                self._status = True
            return
        if self._status:
            self.stream.write("\r\033[K")
            self._status = False
        prefix = {"step": "  ", "push": "  push "}.get(stage, f"[{stage}] ")
        if stage == "step" and len(message) > 160:  # LABEL/HEALTHCHECK steps run to kilobytes
            message = message[:157] + "..."
        self.stream.write(prefix + message + "\n")
        self.stream.flush()


def _settings(
    ca_bundle: Path | None,
    index_url: str | None,
    extra_index_urls: tuple[str, ...],
    use_dockerfile: bool = False,
) -> Any:
    """The render stage's BuildSettings, filled from options and the usual environment variables."""
    from dataclasses import fields

    from modelpack.image.builder import env_ca_bundle
    from modelpack.pipeline.settings import BuildSettings

    extra = list(extra_index_urls) or [u for u in os.environ.get("PIP_EXTRA_INDEX_URL", "").split() if u]
    values: dict[str, Any] = {
        "ca_bundle": ca_bundle or (Path(p) if (p := env_ca_bundle()) else None),
        "index_url": index_url or os.environ.get("PIP_INDEX_URL") or None,
        "extra_index_urls": tuple(extra),
        "use_dockerfile": use_dockerfile or None,
    }
    known = {f.name for f in fields(BuildSettings)}
    return BuildSettings(**{k: v for k, v in values.items() if k in known and v not in (None, ())})


def _signing_key(key: str | None, push: bool, *, interactive: bool) -> Any:
    """Load (and decrypt) the key before building, so a wrong password fails in a second."""
    from modelpack.supply.keys import load_signing_key

    if not push:
        raise InvalidInputError("--sign needs --push: signatures are stored in the registry")
    prompt = None
    if interactive and sys.stdin.isatty():
        from modelpack.cli.sign_cmd import _prompt_password

        prompt = _prompt_password
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
@click.option("--index-url", metavar="URL", help="pip index for the builder stage (default: PIP_INDEX_URL).")
@click.option("--extra-index-url", "extra_index_urls", multiple=True, metavar="URL", help="Extra pip index.")
@click.option(
    "--network", "network_mode", metavar="MODE", help="Engine network while building (default: auto)."
)
@click.option("--registry-username", metavar="U", help="Registry user (default: ~/.docker/config.json).")
@click.option("--registry-password-stdin", is_flag=True, help="Read the registry password from stdin.")
@click.option("--base-registry", metavar="P", help="Registry prefix for base images (mirrors).")
@click.option("--use-dockerfile", is_flag=True, help="Build with the model directory's own Dockerfile as-is.")
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
    sign: bool,
    key: str | None,
) -> None:
    """Build DIR into REPO:<version> (and REPO:c-<content>); with --push, upload it.

    Unchanged inputs report the existing version and push nothing; a changed
    model gets the next version. Progress goes to stderr, the result to stdout.
    """
    from modelpack.image.builder import build as run_build

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
    )
    from modelpack.deploy.github import maybe_write_job_summary

    maybe_write_job_summary(result.to_dict())  # on GitHub Actions only
    if as_json:
        emit_json(result)
        return
    echo_image_result(result)
    chain = getattr(result, "supply_chain", None)
    if chain is not None:
        click.echo(f"manifest: {chain.manifest_digest}" + (" (signed)" if chain.signed else " (unsigned)"))
        if chain.signed:
            click.echo(f"signature: {chain.signature_tag} (key {chain.key_id})")
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
