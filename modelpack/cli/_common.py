"""Shared pieces of the CLI: error handling, JSON output, output level, progress display.

Every command gets ``--quiet``, ``--verbose`` and ``--no-color`` from `common_options`
(added centrally by `modelpack.cli.LazyGroup`), so commands never implement them:

* ``--quiet``: nothing but errors (and the JSON asked for with ``--json``);
* ``--verbose``: full build logs, library log messages and tracebacks of internal errors;
* ``--no-color`` or a non-empty ``NO_COLOR``: no ANSI colors anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from modelpack.errors import Diagnostic, ModelpackError
from modelpack.progress import ProgressEvent, format_size

if TYPE_CHECKING:
    from modelpack.image.results import BuildResult

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES_HELP = (
    "Exit status: 0 success; 1 runtime failure (engine, registry, network, failed check); "
    "2 invalid input or usage; 130 interrupted; 143 terminated (SIGTERM)."
)

_META_KEY = "modelpack.output"


@dataclass
class OutputSettings:
    """How chatty and colorful the CLI is for the command being run."""

    verbosity: int = 0  # -1 quiet, 0 normal, 1 verbose
    no_color: bool = False
    error_stream: TextIO | None = None  # the real stderr while --quiet silences the rest

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0

    @property
    def verbose(self) -> bool:
        return self.verbosity > 0

    @property
    def color(self) -> bool:
        return not (self.no_color or os.environ.get("NO_COLOR"))


def output_settings() -> OutputSettings:
    """The settings of the running command (defaults outside a click context)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return OutputSettings(no_color=bool(os.environ.get("NO_COLOR")))
    settings = ctx.meta.get(_META_KEY)
    if settings is None:
        settings = ctx.meta[_META_KEY] = OutputSettings()
    assert isinstance(settings, OutputSettings)
    return settings


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        settings = output_settings()
        if settings.verbose:
            raise click.UsageError("--quiet and --verbose exclude each other", ctx)
        settings.verbosity = -1


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        settings = output_settings()
        if settings.quiet:
            raise click.UsageError("--quiet and --verbose exclude each other", ctx)
        settings.verbosity = 1


def _set_no_color(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        output_settings().no_color = True


def common_options() -> list[click.Option]:
    """Fresh ``--quiet``/``--verbose``/``--no-color`` options (a parameter belongs to one command)."""
    return [
        click.Option(
            ["--quiet", "-q"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_set_quiet,
            help="Print nothing but errors (and --json output).",
        ),
        click.Option(
            ["--verbose", "-v"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_set_verbose,
            help="Print full logs, and tracebacks of internal errors.",
        ),
        click.Option(
            ["--no-color"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_set_no_color,
            help="No colors (also when NO_COLOR is set).",
        ),
    ]


class _NullWriter(io.StringIO):
    """Swallows what --quiet silences."""

    def write(self, text: str) -> int:
        return len(text)


@contextlib.contextmanager
def applied_output(keep_stdout: bool) -> Iterator[OutputSettings]:
    """Apply the output settings around a command: colors, log level, --quiet streams."""
    settings = output_settings()
    ctx = click.get_current_context(silent=True)
    if ctx is not None and not settings.color:
        ctx.color = False
    if settings.verbose:
        _enable_library_logging()
    if not settings.quiet:
        yield settings
        return
    settings.error_stream = sys.stderr
    stdout = contextlib.nullcontext() if keep_stdout else contextlib.redirect_stdout(_NullWriter())
    try:
        with stdout, contextlib.redirect_stderr(_NullWriter()):
            yield settings
    finally:
        settings.error_stream = None


def _enable_library_logging() -> None:
    logger = logging.getLogger("modelpack")
    if not any(getattr(h, "_modelpack_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler._modelpack_cli = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def with_output_settings(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command callback so the central output options take effect."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        with applied_output(keep_stdout=bool(kwargs.get("as_json"))):
            return callback(*args, **kwargs)

    return run


def echo_error(message: str) -> None:
    """An error line on stderr: shown even with --quiet; red on a terminal unless NO_COLOR."""
    settings = output_settings()
    stream = settings.error_stream or sys.stderr
    if message.startswith("error:") and settings.color:
        message = click.style("error:", fg="red", bold=True) + message[len("error:") :]
    click.echo(message, file=stream, color=None if settings.color else False)


class CliProgress:
    """The CLI's progress observer (one of many possible; see `modelpack.progress`).

    Plain lines on stderr when stderr is not a terminal or ``CI`` is set; on a
    terminal, build output, byte/file counters and the seconds of a silent wait share one
    live status line.
    Silent with --quiet; with --verbose every build log line is printed.
    """

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        settings = output_settings()
        self.stream = stream or sys.stderr
        self.quiet = settings.quiet
        self.verbose = settings.verbose
        self.color = settings.color
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.live = (tty and not os.environ.get("CI") and not self.verbose) if live is None else live
        self._status = False

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        message = event.message
        if event.stage == "log":
            if self.verbose:
                self._line("  | " + message)
            elif self.live:
                self._status_line("  " + message[:100])
            return
        if event.unit == "seconds":  # a wait's count (progress.Waiting): the status line only
            if self.live:
                self._status_line(f"[{event.stage}] {message[:80]} {event.current or 0} s")
            return
        if event.total and event.current is not None:
            counter = _counter(event)
            if self.live and (event.current < event.total or event.unit == "bytes"):
                self._status_line(f"[{event.stage}] {message[:60]} {self._bar(event)} {counter}")
                return
            if event.unit == "bytes":  # plain lines: byte counts would flood a CI log
                return
            message = f"{message} ({counter})"
        prefix = {"step": "  ", "push": "  push "}.get(event.stage, f"[{event.stage}] ")
        if event.stage == "step" and len(message) > 160 and not self.verbose:
            message = message[:157] + "..."
        self._line(prefix + message)

    def _bar(self, event: ProgressEvent, width: int = 20) -> str:
        filled = int(width * min(event.current or 0, event.total or 1) / (event.total or 1))
        bar = "#" * filled + "-" * (width - filled)
        return click.style(bar, fg="green") if self.color else bar

    def _status_line(self, text: str) -> None:
        self.stream.write("\r\033[K")  # a terminal control, not a color: kept with NO_COLOR
        click.echo(text, file=self.stream, nl=False, color=self.color)
        self._status = True

    def _line(self, text: str) -> None:
        if self._status:
            self.stream.write("\r\033[K")
            self._status = False
        click.echo(text, file=self.stream, color=self.color and self.live)


def _counter(event: ProgressEvent) -> str:
    if event.unit == "bytes":
        return f"{_size(event.current or 0)}/{_size(event.total or 0)}"
    unit = f" {event.unit}" if event.unit else ""
    return f"{event.current}/{event.total}{unit}"


def _size(count: int) -> str:
    return format_size(count)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log record (for `serve --json` and log collectors)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, sort_keys=True)


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


def echo_image_result(result: BuildResult) -> None:
    """The plain-text lines of a build or push result: image, version, digest and bytes pushed."""
    click.echo(f"image:   {result.image}")
    click.echo(f"version: {result.version}" + (" (unchanged)" if result.reused and not result.pushed else ""))
    click.echo(f"digest:  {result.digest}")
    if result.pushed:
        click.echo(f"pushed:  {result.bytes_pushed} bytes")
    if result.builder is not None:
        click.echo(f"builder: {result.builder.name} ({result.builder.reason})")


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
    """One line per finding on stderr; on GitHub Actions also as annotations on stdout.

    Errors still show with --quiet; warnings do not.
    """
    for diagnostic in diagnostics:
        if diagnostic.severity == "error":
            echo_error(diagnostic.format())
        else:
            click.echo(diagnostic.format(), err=True)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for diagnostic in diagnostics:
            click.echo(github_annotation(diagnostic))


# file-system failures that are the machine's, not a bug: one line, exit 1
_STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM})


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled, `docker stop`, `kill`), raised where the program is, like
    Ctrl-C: every `with` and `finally` on the way out runs, so temporary directories go."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated` (main thread only); a second SIGTERM ends at once."""

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


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
                echo_error(f"error: {line}" if not error.diagnostics else line)
            sys.exit(error.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt as stop:
            terminated = isinstance(stop, Terminated)
            echo_error("error: terminated" if terminated else "error: interrupted")
            sys.exit(128 + signal.SIGTERM if terminated else 130)
        except BrokenPipeError:
            # the reader of our output went away (`| head`): stop without a traceback, and
            # point stdout at /dev/null so the interpreter's final flush cannot fail again
            with contextlib.suppress(Exception):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as error:  # a bug in modelpack (or the machine's files failing): one line
            if isinstance(error, OSError) and error.errno in _STORAGE_ERRORS:
                where = f": {os.fsdecode(error.filename)}" if error.filename else ""
                echo_error(f"error: {error.strerror or error}{where}")  # a full disk is no bug
                sys.exit(1)
            if os.environ.get("MODELPACK_DEBUG") or output_settings().verbose:
                traceback.print_exc(file=output_settings().error_stream or sys.stderr)
            text = str(error).splitlines()[0] if str(error) else ""
            echo_error(
                f"error: internal error: {type(error).__name__}: {text} "
                "(set MODELPACK_DEBUG=1 or use --verbose for details)"
            )
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


model_dir_argument = click.argument(
    "model_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR"
)


def prompt_password() -> str:
    """Ask for a private key's password on the terminal (also `build --sign`'s prompt)."""
    value: str = click.prompt(
        "Password for the private key", hide_input=True, default="", show_default=False, err=True
    )
    return value
