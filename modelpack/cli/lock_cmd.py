"""`modelpack lock DIR`: write (or reuse, or check) DIR/requirements.lock."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelpack.cli._common import emit_json, handle_errors, json_option, model_dir_argument, print_diagnostics
from modelpack.pipeline.locking import LOCK_FILE, lock_status
from modelpack.pipeline.locking import lock as run_lock
from modelpack.pipeline.node_lock import NODE_LOCK_FILE
from modelpack.pipeline.resolver import resolve
from modelpack.pipeline.settings import BuildSettings
from modelpack.project.config import load


@click.command("lock")
@model_dir_argument
@click.option("--check", is_flag=True, help="Only report; exit 1 when the lock is missing or stale.")
@click.option(
    "--force",
    is_flag=True,
    help="Resolve afresh, up to date or not, without keeping the existing pins (upgrades what it can).",
)
@click.option(
    "--keep-clarifai",
    is_flag=True,
    help="Keep a clarifai requirement (default: the runtime's shim replaces it).",
)
@click.option(
    "--index-url",
    metavar="URL",
    default=None,
    help="Package index (default: $UV_INDEX_URL, then $PIP_INDEX_URL, else PyPI).",
)
@click.option(
    "--ca-bundle",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="CA bundle for a TLS-inspecting proxy (default: $PIP_CERT, $REQUESTS_CA_BUNDLE or $SSL_CERT_FILE, "
    "else the system store).",
)
@click.option("--base-registry", metavar="PREFIX", default=None, help="Registry prefix for catalog bases.")
@json_option
@handle_errors
def lock(
    model_dir: Path,
    check: bool,
    force: bool,
    keep_clarifai: bool,
    index_url: str | None,
    ca_bundle: Path | None,
    base_registry: str | None,
    as_json: bool,
) -> None:
    """Pin every dependency of DIR, with hashes, for the image's Python on Linux x86_64.

    The torch family comes with the base image and is left out; so is clarifai
    unless --keep-clarifai. An up-to-date lock is reused without network access.
    A stale lock's pins are kept where the new requirements allow (nothing is
    upgraded unasked), and lines only added to requirements.txt are resolved
    alone against those pins; --force resolves everything afresh.
    """
    settings = BuildSettings.from_env(ca_bundle=ca_bundle, index_url=index_url, base_registry=base_registry)
    loaded = load(model_dir)
    resolved = resolve(loaded, base_registry=settings.base_registry)
    if check:
        status = lock_status(loaded, resolved, keep_clarifai=keep_clarifai)
        path = loaded.root / LOCK_FILE
        if as_json:
            emit_json({"path": str(path), "status": status})
        else:
            click.echo(f"{path}: {status}")
        sys.exit(0 if status == "up-to-date" else 1)
    result = run_lock(loaded, resolved=resolved, settings=settings, force=force, keep_clarifai=keep_clarifai)
    if as_json:
        emit_json(result)
        return
    print_diagnostics(list(loaded.warnings))
    state = "up to date, reused" if result.up_to_date_before else f"locked {len(result.packages)} packages"
    click.echo(f"{result.path}: {state} (python {resolved.python_version}, {result.platform})")
    if result.node is not None:
        npx = f", {result.node.npx_package}@{result.node.npx_version}" if result.node.npx_package else ""
        click.echo(f"{NODE_LOCK_FILE}: Node.js {result.node.node_version}{npx}")
    for note in result.notes:
        click.echo(f"note: {note}")
