"""The event store of /mcp sessions (`mcp_events.SessionEvents`): what it keeps, for how long,
and for whom. The real client and server across reconnections: test_runtime_mcp_sessions.py.

Each test runs in one task, which stands for the SDK's task that routes a session's messages
(the store drops a session's messages when that task ends)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from modelpack.runtime.mcp_events import SESSION, SessionEvents, SessionTag

GET = "32:abc:_GET_stream"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _number(event_id: str) -> str:
    return event_id.partition("@")[0]


async def _replayed(store: SessionEvents, after: str, session: str = "s1") -> tuple[str | None, list[Any]]:
    sent: list[Any] = []

    async def send(event: Any) -> None:
        sent.append((_number(event.event_id), event.message))

    async def replay() -> str | None:  # a request of `session`, in a task of its own
        SESSION.set(SessionTag(session))
        return await store.replay_events_after(after, send)

    return await asyncio.create_task(replay()), sent


def _run(body: Callable[[], Awaitable[None]], session: str = "s1") -> None:
    async def routed() -> None:
        SESSION.set(SessionTag(session))
        await body()

    asyncio.run(routed())


def test_a_requests_own_stream_is_never_kept_and_has_no_id() -> None:
    store = SessionEvents()

    async def body() -> None:
        assert await store.store_event("32:abc:7", {"result": "the model's output"}) == ""
        assert await store.store_event("32:abc:7", None) == ""

    _run(body)
    assert store.held_count() == 0


def test_get_stream_messages_are_bounded_by_count_and_age() -> None:
    clock = Clock()
    store = SessionEvents(max_events=3, max_seconds=10, clock=clock)

    async def body() -> None:
        ids = [await store.store_event(GET, f"m{i}") for i in range(5)]
        assert store.held_count() == 3
        expected = [(_number(ids[i]), f"m{i}") for i in (2, 3, 4)]
        assert await _replayed(store, "0@" + GET) == (GET, expected)
        clock.now = 11
        assert await _replayed(store, "0@" + GET) == (GET, [])
        assert store.held_count() == 0 and store.sessions_held() == 1

    _run(body)
    assert store.sessions_held() == 0  # its task ended: the session is gone


def test_replay_sends_what_follows_the_cursor_and_what_never_went_out() -> None:
    store = SessionEvents()

    async def body() -> None:
        first, second, third = [await store.store_event(GET, m) for m in ("a", "b", "c")]
        assert store.forwarded([first]) is False
        assert store.forwarded([third]) is True  # "b" was skipped: the stream should end
        # the client has "a" and "c"; "b" never went out, so it is sent
        assert await _replayed(store, third) == (GET, [(_number(second), "b")])
        assert await _replayed(store, third) == (GET, [(_number(second), "b")])  # until sent
        assert store.forwarded([second]) is False
        assert await _replayed(store, third) == (GET, [])

    _run(body)


def test_another_sessions_cursor_replays_nothing() -> None:
    store = SessionEvents()

    async def body() -> None:
        await store.store_event(GET, "secret")
        assert await _replayed(store, "0@" + GET, session="s2") == (None, [])
        assert store.first_cursor("s1") == "0@" + GET and store.first_cursor("s2") is None
        assert await _replayed(store, "not-an-id") == (None, [])

    _run(body)


def test_a_stream_reopened_without_a_cursor_gets_only_what_never_went_out() -> None:
    """A client that does not resume (no Last-Event-ID) gets the messages held while it had no
    stream, and none it was sent already."""
    store = SessionEvents()

    async def body() -> None:
        first, second = [await store.store_event(GET, m) for m in ("a", "b")]
        assert store.first_cursor("s1") == "0@" + GET  # nothing went out yet: both are sent
        store.forwarded([first])
        cursor = store.first_cursor("s1")
        assert cursor == _number(first) + "@" + GET
        assert await _replayed(store, cursor) == (GET, [(_number(second), "b")])
        store.forwarded([second])
        assert store.first_cursor("s1") is None  # all sent: the stream opens without a replay

    _run(body)
