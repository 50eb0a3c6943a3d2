"""Shared pieces of the CLI: error handling, JSON output, options."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from modelpack.errors import Diagnostic, ModelpackError

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, paths and tuples into plain JSON values."""
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def emit_json(value: Any) -> None:
    click.echo(json.dumps(to_jsonable(value), indent=2, sort_keys=True))


def _annotation_escape(text: str, *, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_value:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def github_annotation(diagnostic: Diagnostic) -> str:
    """A GitHub Actions workflow command that shows the finding on the pull request's line."""
    properties = [f"file={_annotation_escape(diagnostic.file, property_value=True)}"]
    if diagnostic.line is not None:
        properties.append(f"line={diagnostic.line}")
    if diagnostic.column is not None:
        properties.append(f"col={diagnostic.column}")
    title = diagnostic.path or "modelpack"
    properties.append(f"title={_annotation_escape(title, property_value=True)}")
    level = "error" if diagnostic.severity == "error" else "warning"
    return f"::{level} {','.join(properties)}::{_annotation_escape(diagnostic.message)}"


def print_diagnostics(diagnostics: list[Diagnostic]) -> None:
    """One line per finding on stderr; on GitHub Actions also as annotations on stdout."""
    for diagnostic in diagnostics:
        click.echo(diagnostic.format(), err=True)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for diagnostic in diagnostics:
            click.echo(github_annotation(diagnostic))


def handle_errors(func: F) -> F:
    """Turn library errors into one-line messages and exit codes; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ModelpackError as error:
            as_json = kwargs.get("as_json")
            if as_json:
                emit_json(
                    {
                        "error": {
                            "type": type(error).__name__,
                            "message": error.message,
                            "exit_code": error.exit_code,
                            "diagnostics": [d.to_dict() for d in error.diagnostics],
                        }
                    }
                )
            for line in error.lines():
                click.echo(f"error: {line}" if not error.diagnostics else line, err=True)
            sys.exit(error.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as error:  # a bug in modelpack: say so in one line
            if os.environ.get("MODELPACK_DEBUG"):
                traceback.print_exc()
            click.echo(
                f"internal error: {type(error).__name__}: {error} (set MODELPACK_DEBUG=1 for details)",
                err=True,
            )
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


model_dir_argument = click.argument(
    "model_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR"
)
