"""`modelpack test DIR`: build the image, start it and call every method (the SDK's local test)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from modelpack.cli._common import CliProgress, emit_json, handle_errors, json_option, model_dir_argument
from modelpack.deploy.testing import run_test
from modelpack.pipeline.settings import BuildSettings


@click.command("test")
@model_dir_argument
@click.option(
    "--tag", "repository", default=None, help="Repository for the test image (default: modelpack-test/DIR)."
)
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CA bundle for the dependency install (default: PIP_CERT / REQUESTS_CA_BUNDLE / SSL_CERT_FILE).",
)
@click.option(
    "--timeout", type=click.IntRange(1), default=600, show_default=True, help="Seconds to wait for ready."
)
@click.option(
    "--venv",
    is_flag=True,
    help="Install the lock into a cached virtualenv and run the server from it, instead of an image.",
)
@json_option
@handle_errors
def test(
    model_dir: Path, repository: str | None, ca_bundle: Path | None, timeout: int, venv: bool, as_json: bool
) -> None:
    """Build DIR's image (not pushed), start it and call every method: with the model's own
    test() when its class defines one, else with example inputs from each signature.

    With --venv, the lock is installed (hashes required, the build's indexes and CA bundle)
    into a virtualenv cached by the lock's digest and Python version, and the server runs
    from it: no engine needed. Prints each method's result or error; exits 1 when any
    fails. `serve` is the quick in-process server.
    """
    report = run_test(
        model_dir,
        repository=repository,
        settings=BuildSettings.from_env(ca_bundle=ca_bundle),
        progress=CliProgress(),
        ready_timeout=timeout,
        venv=venv,
    )
    if as_json:
        emit_json(report)
    else:
        click.echo(f"venv: {report.venv}" if report.venv else f"image: {report.image}")
        for outcome in report.outcomes:
            if outcome.ok:
                click.echo(f"ok    {outcome.name}: {json.dumps(outcome.result, ensure_ascii=False)[:200]}")
            else:
                click.echo(f"FAIL  {outcome.name}: {outcome.error}")
    if not report.passed:
        sys.exit(1)
