"""`modelpack serve DIR`: run the model server locally (the same server as in the image)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from modelpack.cli._common import JsonLogFormatter, emit_json, handle_errors, json_option, model_dir_argument
from modelpack.errors import InvalidInputError
from modelpack.runtime.server import serve as run_server


@click.command("serve")
@model_dir_argument
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port to listen on."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--access-log", is_flag=True, help="Log every request.")
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1),
    default=None,
    help="Largest accepted request body (/mcp too) and WebSocket message [default: $MODELPACK_MAX_BODY_BYTES or 64 MiB].",
)
@json_option
@handle_errors
def serve(
    model_dir: Path, port: int, host: str, access_log: bool, max_body_bytes: int | None, as_json: bool
) -> None:
    """Serve DIR over HTTP until interrupted; exits 1 if the model fails to load.

    With --json, log records are JSON objects (one a line, on stderr) and the exit
    status is reported as a JSON object on stdout.
    """
    model_py = model_dir / "1" / "model.py"
    if not model_py.is_file():
        raise InvalidInputError(f"{model_py} does not exist")
    if as_json:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLogFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    else:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    status = run_server(model_dir, host=host, port=port, access_log=access_log, max_body_bytes=max_body_bytes)
    if as_json:
        emit_json({"model_dir": str(model_dir), "exit_status": status})
    if status:
        click.echo("error: the model failed to load (see the log above)", err=True)
        sys.exit(status)
