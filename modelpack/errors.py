"""One exception hierarchy for the library; the CLI maps it to exit codes.

Exit codes: 2 for invalid input or usage (``InvalidInputError``), 1 for runtime
failures of the engine, registry or network (``RuntimeFailure``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]

# characters str.splitlines() breaks on: a message must stay one line
_LINE_BREAKS: dict[str, str | int | None] = {c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """Escape line breaks so one finding prints as exactly one line."""
    return text.translate(str.maketrans(_LINE_BREAKS))


@dataclass(frozen=True)
class Diagnostic:
    """A located finding: the file, 1-based line and column, field path and message."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    severity: Severity = "error"

    def format(self) -> str:
        location = self.file
        if self.line is not None:
            location += f":{self.line}"
            if self.column is not None:
                location += f":{self.column}"
        prefix = f"{location}: "
        if self.path:
            prefix += f"{self.path}: "
        if self.severity == "warning":
            prefix += "warning: "
        return one_line(prefix + self.message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelpackError(Exception):
    """Base of every error modelpack raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.diagnostics: list[Diagnostic] = list(diagnostics or [])

    def lines(self) -> list[str]:
        """The one-line messages the CLI prints for this error."""
        if self.diagnostics:
            return [d.format() for d in self.diagnostics if d.severity == "error"] or [self.message]
        return [self.message]


class InvalidInputError(ModelpackError):
    """The user's input (model directory, arguments, files) is wrong; exit 2."""

    exit_code = 2


class ConfigError(InvalidInputError):
    """The model directory failed validation; carries every located error."""


class SignatureError(InvalidInputError):
    """model.py cannot be read for method signatures."""


class ResolveError(InvalidInputError):
    """No base image fits the requirements, or they conflict."""


class LockError(ModelpackError):
    """Dependency locking failed (resolver error or network)."""


class RenderError(InvalidInputError):
    """The build context cannot be rendered from the inputs."""


class ModelFileError(RenderError):
    """A file of the model directory cannot go into an image (a symlink out or in a loop, not a
    regular file, unreadable): `rel` names it, so validate can locate what render refuses."""

    def __init__(self, rel: str, detail: str) -> None:
        super().__init__(f"{rel}: {detail}")
        self.rel = rel
        self.detail = detail


class RuntimeFailure(ModelpackError):
    """Something outside the user's input failed: engine, registry, network; exit 1."""

    exit_code = 1


class StorageError(RuntimeFailure):
    """A file could not be written (a full disk, an I/O error): nothing half-written is left."""


class EngineError(RuntimeFailure):
    """The Docker engine is unreachable or a build failed inside it."""


class RegistryError(RuntimeFailure):
    """The registry is unreachable, refused authentication or rejected a request.

    `status` is the HTTP status of the answer that failed, None when there was no answer.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HubError(RuntimeFailure):
    """The model hub could not be reached or refused a request."""


class SigningError(RuntimeFailure):
    """Signing or verification could not be completed or failed."""
