"""Read and parse model.py as Python does: in the encoding its PEP 263 coding line (or BOM) names,
with a nesting depth the parser cannot handle reported as a finding instead of a crash."""

from __future__ import annotations

import ast
import tokenize
from pathlib import Path


class SourceError(Exception):
    """model.py cannot be read or parsed; ``line`` locates it when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


def read_source(path: Path) -> str:
    """The text of a Python file, decoded as its coding line says (default UTF-8)."""
    try:
        with tokenize.open(path) as handle:
            return handle.read()
    except SyntaxError as error:  # an unknown coding name
        raise SourceError(f"cannot read: {error.msg}", error.lineno) from None
    except UnicodeDecodeError as error:
        raise SourceError(
            f"not text in its declared encoding ({error.reason} at byte {error.start})"
        ) from None
    except OSError as error:
        raise SourceError(f"cannot read: {error.strerror or error}") from None


def parse_source(source: str, filename: str) -> ast.Module:
    """`ast.parse`, with nesting too deep for the parser as a SyntaxError like any other."""
    try:
        return ast.parse(source, filename=filename)
    except (RecursionError, MemoryError):
        raise SyntaxError("nested too deeply for the Python parser", (filename, None, None, None)) from None
