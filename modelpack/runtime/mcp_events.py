"""The notifications of an MCP session's GET stream, held for the client's reconnection.

The bridge ends each GET stream after ``stream_seconds`` (`mcp.SessionLimits`) and the client
reopens it 0.1 s later; a server notification or request not tied to a client request (a
resource update, a list change) sent in between found no stream and was lost. `SessionEvents`
is the MCP SDK's event store for the session app: it numbers each such message, the SSE
answer carries the number as its ``id``, and the `mcp` client reopens the stream with
``Last-Event-ID``, on which the SDK replays what it missed (then streams on live).

What it holds: only GET-stream messages (a request's own stream, its answer and progress, is
the model's output: never kept, and its events carry no id), per session at most
`MAX_HELD_EVENTS` and none older than `HELD_SECONDS`, and nothing of a session once the SDK's
task that routed its messages ended (its session closed, reaped or deleted). Memory only.

The SDK calls it through its ``EventStore`` interface, by the interface's two methods: the SDK
is imported only when an MCP model runs, so this module does not import it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

MAX_HELD_EVENTS = 100
HELD_SECONDS = 30.0
_GET_STREAM = "_GET_stream"  # the SDK's stream key of a session's GET stream (its GET_STREAM_KEY)


@dataclass
class SessionTag:
    """The MCP session a request at ``/mcp`` belongs to, seen by the store through the request's
    context (`SESSION`). The request that opens a session has none yet: its tag is filled from
    its answer's ``Mcp-Session-Id``, and the session's own tasks, started by that request, keep
    that tag (a task starts with its starter's context)."""

    session_id: str | None = None


SESSION: ContextVar[SessionTag | None] = ContextVar("modelpack_mcp_session", default=None)


@dataclass
class _Held:
    """One session's GET-stream messages: (number, time stored, message), oldest first."""

    stream_id: str
    session: SessionTag | None
    events: deque[tuple[int, float, Any]] = field(default_factory=deque)
    forwarded: set[int] = field(default_factory=set)  # numbers the bridge sent on a GET stream


class SessionEvents:
    """A bounded, memory-only event store for the session app (the SDK's ``EventStore``)."""

    def __init__(
        self,
        max_events: int = MAX_HELD_EVENTS,
        max_seconds: float = HELD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_events, self.max_seconds, self.clock = max_events, max_seconds, clock
        self._numbers = itertools.count(1)
        self._held: dict[str, _Held] = {}

    async def store_event(self, stream_id: str, message: Any) -> str:
        """The message's event id, ``NUMBER@STREAM`` (a resumed stream is found from it alone);
        ``""`` (no id) for a request's own stream, which is not kept."""
        if not stream_id.endswith(_GET_STREAM):
            return ""
        number = next(self._numbers)
        now = self.clock()
        self._expire(now)
        if message is not None:  # None: the SDK's priming event, a cursor that holds nothing
            held = self._held.get(stream_id)
            if held is None:
                held = self._held[stream_id] = _Held(stream_id, SESSION.get())
                self._drop_when_session_ends(held)
            held.events.append((number, now, message))
            while len(held.events) > self.max_events:
                held.forwarded.discard(held.events.popleft()[0])
        return f"{number}@{stream_id}"

    async def replay_events_after(
        self, last_event_id: str, send_callback: Callable[[Any], Awaitable[None]]
    ) -> str | None:
        """Send what the session's GET stream held after ``last_event_id``; its stream id (the
        SDK then streams on live), or None for an id this store did not make."""
        from mcp.server.streamable_http import EventMessage

        number, _, stream_id = last_event_id.partition("@")
        if not number.isdigit() or not stream_id.endswith(_GET_STREAM):
            return None
        self._expire(self.clock())
        held = self._held.get(stream_id)
        if held is not None and not _same_session(held.session, SESSION.get()):
            return None  # another session's stream: none of it is this client's
        if held is not None:
            after = int(number)
            missed = [(n, m) for n, _, m in held.events if n > after or n not in held.forwarded]
            kept = {n for n, _ in missed}
            held.events = deque(event for event in held.events if event[0] in kept)  # the client has the rest
            held.forwarded &= kept
            for event_number, message in missed:
                await send_callback(EventMessage(message, f"{event_number}@{stream_id}"))
        return stream_id

    def forwarded(self, event_ids: Sequence[str]) -> bool:
        """Note the events a GET stream just sent; True when a held message before them was never
        sent (the SDK routed it while no stream was registered: between a replay and the stream's
        registration): the stream should end, so that the client's reconnection fetches it."""
        hole = False
        for event_id in event_ids:
            number, _, stream_id = event_id.partition("@")
            held = self._held.get(stream_id)
            if held is None or not number.isdigit():
                continue
            held.forwarded.add(int(number))
            hole = hole or any(n < int(number) and n not in held.forwarded for n, _, _ in held.events)
        return hole

    def first_cursor(self, session_id: str) -> str | None:
        """For a GET stream reopened without ``Last-Event-ID``: an event id after every held
        message a stream sent already and before those none did (a client that does not resume
        must not get a message twice), or None when no held message of ``session_id`` is unsent."""
        for held in self._held.values():
            if held.session is None or held.session.session_id != session_id:
                continue
            if any(number not in held.forwarded for number, _, _ in held.events):
                return f"{max(held.forwarded, default=0)}@{held.stream_id}"
        return None

    def held_count(self) -> int:
        """How many messages are held, over all sessions."""
        return sum(len(held.events) for held in list(self._held.values()))

    def sessions_held(self) -> int:
        """How many sessions have an entry (kept, even empty, until the session ends)."""
        return len(self._held)

    def _expire(self, now: float) -> None:
        """Messages past their time go; a session's entry stays (empty) until its session ends."""
        for held in self._held.values():
            while held.events and now - held.events[0][1] > self.max_seconds:
                held.forwarded.discard(held.events.popleft()[0])

    def _drop_when_session_ends(self, held: _Held) -> None:
        """The SDK stores a session's GET-stream messages from the one task that routes them, which
        ends with the session (closed, reaped, deleted): its messages go with it."""
        task = asyncio.current_task()
        if task is None:  # not the SDK's router: nothing tells when the session ends
            return

        def drop(_: object) -> None:
            if self._held.get(held.stream_id) is held:
                del self._held[held.stream_id]

        task.add_done_callback(drop)


def _same_session(owner: SessionTag | None, asking: SessionTag | None) -> bool:
    """A stream's messages go only to a request of the session that stored them (when known)."""
    if owner is None or owner.session_id is None or asking is None:
        return True
    return owner.session_id == asking.session_id
