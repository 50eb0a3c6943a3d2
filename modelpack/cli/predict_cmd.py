"""`modelpack predict URL|DIR METHOD --input name=value ...`: call one method.

With a directory, the model is served in-process on a free loopback port first.
Values are parsed as JSON when they parse, else taken as strings.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import click

from modelpack.cli._common import emit_json, handle_errors, json_option, output_settings
from modelpack.errors import InvalidInputError, RuntimeFailure
from modelpack.runtime.client import Model
from modelpack.runtime.server import BackgroundServer

_STRING_TYPES = ("str", "Text", "Optional[str]", "Optional[Text]")


def parse_inputs(pairs: tuple[str, ...], string_args: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``name=value`` pairs; values are JSON when they parse, else strings.

    Arguments declared as strings (``string_args``) keep the text as given, so
    ``-i prompt=42`` sends ``"42"``; a JSON string (``-i 'prompt="x"'``) is unquoted.
    """
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise InvalidInputError(f"--input {pair!r}: expected name=value")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if name in string_args and not isinstance(value, str):
            value = raw
        inputs[name] = value
    return inputs


def _quiet_server_log() -> None:
    """The in-process server logs a model's exception with its traceback; here the error comes
    back as the call's one-line answer, so the log shows it only with --verbose or MODELPACK_DEBUG."""
    if os.environ.get("MODELPACK_DEBUG") or output_settings().verbose:
        return
    logger = logging.getLogger("modelpack.runtime")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@click.command("predict")
@click.argument("target", metavar="URL|DIR")
@click.argument("method")
@click.option(
    "--input", "-i", "inputs", multiple=True, metavar="NAME=VALUE", help="An argument (repeatable)."
)
@json_option
@handle_errors
def predict(target: str, method: str, inputs: tuple[str, ...], as_json: bool) -> None:
    """Call METHOD of the model served at URL, or of the model directory DIR."""
    parse_inputs(inputs)  # report malformed pairs before starting anything
    server = None
    if target.startswith(("http://", "https://")):
        url = target
    else:
        directory = Path(target)
        if not (directory / "1" / "model.py").is_file():
            raise InvalidInputError(f"{target}: not a URL and no {directory / '1' / 'model.py'}")
        _quiet_server_log()
        server = BackgroundServer(directory).start()
        if server.runner.state != "ready":
            server.stop()
            raise RuntimeFailure(f"the model failed to load: {server.runner.error}")
        url = server.url
    try:
        with Model(url, typed=False) as model:  # printed as JSON
            spec = next((m for m in model.signature()["methods"] if m["name"] == method), None)
            if spec is None:
                names = ", ".join(model.available_methods())
                raise InvalidInputError(f"the model has no method {method!r} (has: {names})")
            kind = spec["kind"]
            strings = frozenset(i["name"] for i in spec["inputs"] if i["type"] in _STRING_TYPES)
            arguments = parse_inputs(inputs, strings)
            result = model.call(method, **arguments)
            if kind == "unary-unary":
                if as_json:
                    emit_json({"method": method, "result": result})
                else:
                    click.echo(_show(result))
                return
            items = []
            for item in result:
                if as_json:
                    items.append(item)
                else:
                    click.echo(_show(item))
            if as_json:
                emit_json({"method": method, "results": items})
    finally:
        if server is not None:
            server.stop()
