"""Progress reporting for long-running stages, so host tools can show it their way.

The library never prints. `build`, `push`, `lock`, `sign` and checkpoint fetching
take a ``progress=`` argument and report `ProgressEvent`s through it; the CLI's
progress display is just one observer (`modelpack.cli._common.CliProgress`).

``progress`` may be any of:

* a callable taking one `ProgressEvent` (e.g. ``events.append``);
* an object with an ``on_progress(event)`` method (see `ProgressObserver`);
* a legacy callable ``progress(stage, message)`` (as `modelpack.image.builder` always
  accepted), or ``progress(stage, message, current, total)``;
* None: nothing is reported.

Stages used: validate, signature, resolve, lock, render, build, step (a
Dockerfile step), log (build output), push (a layer), checkpoint (a file), sign,
note, done.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress: what stage, a one-line message and optional counters.

    ``current``/``total`` count ``unit`` ("bytes", "files", ...) when the stage knows them.
    """

    stage: str
    message: str
    current: int | None = None
    total: int | None = None
    unit: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class ProgressObserver(Protocol):
    """An object that receives progress events."""

    def on_progress(self, event: ProgressEvent) -> None: ...


EventCallback = Callable[[ProgressEvent], None]
LegacyCallback = Callable[..., None]
ProgressLike = ProgressObserver | EventCallback | LegacyCallback | None


class Reporter:
    """What a stage calls: ``report(stage, message, current=None, total=None, unit="")``.

    It adapts to the kind of ``progress`` the caller passed (see the module docstring).
    """

    def __init__(self, progress: Any = None) -> None:
        if isinstance(progress, Reporter):
            self._target: Any = progress._target
            self._mode: str = progress._mode
        else:
            self._target = progress
            self._mode = _mode_of(progress)

    def __call__(
        self,
        stage: str,
        message: str,
        current: int | None = None,
        total: int | None = None,
        unit: str = "",
    ) -> None:
        mode, target = self._mode, self._target
        if mode == "none":
            return
        if mode == "observer":
            target.on_progress(ProgressEvent(stage, message, current, total, unit))
        elif mode == "event":
            target(ProgressEvent(stage, message, current, total, unit))
        elif mode == "legacy4":
            target(stage, message, current or 0, total or 0)
        else:
            target(stage, message)

    def event(self, event: ProgressEvent) -> None:
        self(event.stage, event.message, event.current, event.total, event.unit)

    @property
    def active(self) -> bool:
        return self._mode != "none"

    @property
    def takes_counts(self) -> bool:
        """Whether the target sees current/total (frequent byte-count events are only sent then)."""
        return self._mode in ("observer", "event")


def _mode_of(progress: Any) -> str:
    if progress is None:
        return "none"
    if isinstance(progress, ProgressObserver):
        return "observer"
    if not callable(progress):
        raise TypeError(f"progress must be callable or have on_progress(), not {type(progress).__name__}")
    try:
        parameters = list(inspect.signature(progress).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature: assume an event callback
        return "event"
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in parameters)
    if len(positional) >= 4:
        return "legacy4"
    if len(positional) >= 2:
        return "legacy2"
    if len(positional) == 1 or varargs:
        return "event"
    return "legacy2"


def reporter(progress: ProgressLike | Reporter = None) -> Reporter:
    """The `Reporter` for whatever ``progress`` a caller passed (reused when already one)."""
    if isinstance(progress, Reporter):
        return progress
    return Reporter(progress)


@dataclass
class ProgressRecorder:
    """An observer that keeps every event (handy for tests and for replaying later)."""

    events: list[ProgressEvent] = field(default_factory=list)

    def on_progress(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def stages(self) -> list[str]:
        return [event.stage for event in self.events]


__all__ = [
    "ProgressEvent",
    "ProgressLike",
    "ProgressObserver",
    "ProgressRecorder",
    "Reporter",
    "reporter",
]


def format_size(count: int, *, binary: bool = False) -> str:
    """A byte count for people: `12.3 MB` (powers of 1000), or `12.3 MiB` with `binary`."""
    step = 1024 if binary else 1000
    units = ("B", "KiB", "MiB", "GiB") if binary else ("B", "kB", "MB", "GB")
    value = float(count)
    for unit in units:
        if value < step or unit == units[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= step
    return f"{count} B"  # pragma: no cover - the loop always returns
