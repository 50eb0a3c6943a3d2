"""`modelpack.progress.Waiting`: the seconds of a wait that says nothing until it ends."""

from __future__ import annotations

import threading

from modelpack.progress import ProgressRecorder, Reporter, Waiting


def test_a_wait_is_counted_in_seconds_until_it_is_stopped() -> None:
    recorder = ProgressRecorder()
    ticked = threading.Event()

    def observe(event: object) -> None:
        recorder(event)  # type: ignore[arg-type]
        ticked.set()

    with Waiting(Reporter(observe), "push", "the engine is writing the image", every=0.01) as waiting:
        assert ticked.wait(10)
        waiting.stop()
        counted = len(recorder.events)
    assert counted >= 1
    assert len(recorder.events) <= counted + 1  # at most the one count already under way
    event = recorder.events[0]
    assert (event.stage, event.message, event.unit, event.total) == (
        "push",
        "the engine is writing the image",
        "seconds",
        None,
    )
    assert isinstance(event.current, int) and event.current >= 0


def test_a_wait_over_before_its_first_count_reports_nothing() -> None:
    recorder = ProgressRecorder()
    with Waiting(Reporter(recorder), "push", "waiting", every=60):
        pass
    assert recorder.events == []
