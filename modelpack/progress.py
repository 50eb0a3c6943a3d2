"""Progress reporting for long-running stages, so host tools can show it their way.

The library never prints. `build`, `push`, `lock`, `sign` and checkpoint fetching
take a ``progress=`` argument: a `ProgressObserver`, i.e. any callable taking one
`ProgressEvent` (``events.append``, a `ProgressRecorder`, the CLI's
`modelpack.cli._common.CliProgress`), or None for nothing.

Stages used: validate, signature, resolve, lock, render, build, step (a
Dockerfile step), log (build output), push (a layer), checkpoint (a file), sign,
note, done. Units of ``current``/``total``: "bytes", "files", and "seconds" for a wait
that gives no sign of its own (`Waiting`: ``total`` is None).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


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

    def to_dict(self) -> dict[str, str | int | None]:
        return asdict(self)


ProgressObserver = Callable[[ProgressEvent], None]


class Reporter:
    """What a stage calls: ``report(stage, message, current=None, total=None, unit="")``.

    Stages pass it down to the stages they run, so one observer sees a whole build.
    """

    def __init__(self, observer: ProgressObserver | None = None) -> None:
        if observer is not None and not callable(observer):
            raise TypeError(
                f"progress must be a callable taking a ProgressEvent, not {type(observer).__name__}"
            )
        self._observer = observer

    def __call__(
        self,
        stage: str,
        message: str,
        current: int | None = None,
        total: int | None = None,
        unit: str = "",
    ) -> None:
        if self._observer is not None:
            self._observer(ProgressEvent(stage, message, current, total, unit))


def reporter(progress: ProgressObserver | Reporter | None = None) -> Reporter:
    """The `Reporter` for a caller's observer (the same one when a stage passes its own down)."""
    if isinstance(progress, Reporter):
        return progress
    return Reporter(progress)


class Waiting:
    """The seconds of a wait that gives no sign of its own, reported each `every` seconds (unit
    "seconds") until `stop()` or the block's end. The engine's `docker save` is one: it writes the
    whole image, base included, before it sends a byte, which takes most of a minute on a torch
    base. A terminal shows the count on its status line; plain logs leave it out."""

    def __init__(self, report: Reporter, stage: str, message: str, every: float = 1.0) -> None:
        self._report, self._stage, self._message, self._every = report, stage, message, every
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelpack-waiting", daemon=True)

    def __enter__(self) -> Waiting:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._thread.join()

    def stop(self) -> None:
        """The wait is over (the first byte came): no more counts. Any thread may call it."""
        self._stopped.set()

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stopped.wait(self._every):
            self._report(self._stage, self._message, round(time.monotonic() - started), None, "seconds")


@dataclass
class ProgressRecorder:
    """An observer that keeps every event (handy for tests and for replaying later)."""

    events: list[ProgressEvent] = field(default_factory=list)

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def stages(self) -> list[str]:
        return [event.stage for event in self.events]


__all__ = [
    "ProgressEvent",
    "ProgressObserver",
    "ProgressRecorder",
    "Reporter",
    "Waiting",
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
