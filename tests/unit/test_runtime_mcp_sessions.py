"""/mcp sessions, with the real `mcp` and `fastmcp` clients against the model server: a tool's
progress and log notifications reach the client; a client that opens a session (the pre-2026-07-28
protocol) gets elicitation and the session's state; sessions end on DELETE, on idle time, and
no more than the cap are open."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx

# The mcp client checks tool results with jsonschema: imported mid-session, its seconds of import
# would hold the client's loop past the 1.5 s idle time of the sessions here.
import jsonschema  # noqa: F401
import pytest
from mcp_results import first_text
from mcp_session_client import SessionClient, room_within

from modelpack.runtime import mcp
from modelpack.runtime.mcp import MAX_SESSIONS_VARIABLE, SESSION_IDLE_VARIABLE, SessionLimits
from modelpack.runtime.server import BackgroundServer

MODEL = Path(__file__).parent / "test_runtime_models" / "mcp_session"
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
LEGACY_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[BackgroundServer]:
    monkeypatch.setenv(MAX_SESSIONS_VARIABLE, "3")
    monkeypatch.setenv(SESSION_IDLE_VARIABLE, "1.5")
    with BackgroundServer(MODEL) as running:
        assert running.runner.state == "ready", running.runner.error
        yield running


async def _mcp_client(url: str, mode: str) -> dict[str, Any]:
    from mcp import Client
    from mcp.types import ElicitResult

    steps: list[float] = []
    logs: list[Any] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append(progress)

    async def on_log(params: Any) -> None:
        logs.append(params.data["msg"])  # FastMCP's log data: {"msg": ..., "extra": ...}

    async def elicit(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="accept", content={"value": "yes"})

    client = Client(url, elicitation_callback=elicit, logging_callback=on_log, mode=mode)
    async with client:
        counted = await client.call_tool("count", {"n": 3}, progress_callback=on_progress)
        asked = await client.call_tool("ask_user", {"question": "go?"})
        await client.call_tool("remember", {"value": "v1"})
        recalled = await client.call_tool("recall", {})
    return {
        "count": first_text(counted.content),
        "progress": steps,
        "logs": logs,
        "elicited": first_text(asked.content),
        "state": first_text(recalled.content),
    }


def test_a_session_client_gets_notifications_elicitation_and_its_state(server: BackgroundServer) -> None:
    found = asyncio.run(_mcp_client(server.url + "/mcp", "legacy"))
    assert found == {
        "count": "3",
        "progress": [1, 2, 3],
        "logs": ["step 1", "step 2", "step 3"],
        "elicited": "elicited: yes",
        "state": "v1",
    }


def test_current_clients_get_progress_and_logs_without_a_session(server: BackgroundServer) -> None:
    """The 2026-07-28 protocol has no sessions and no server-initiated requests: a tool's
    notifications still reach the `mcp` client (progress) and the `fastmcp` client (both)."""
    from fastmcp import Client

    modern = asyncio.run(_mcp_client(server.url + "/mcp", "auto"))
    assert modern["count"] == "3" and modern["progress"] == [1, 2, 3]

    steps: list[float] = []
    logs: list[Any] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append(progress)

    async def on_log(message: Any) -> None:
        logs.append(message.data["msg"])

    async def run() -> str:
        async with Client(server.url + "/mcp", progress_handler=on_progress, log_handler=on_log) as client:
            result = await client.call_tool("count", {"n": 2})
            return first_text(result.content)

    assert asyncio.run(run()) == "2" and steps == [1, 2] and logs == ["step 1", "step 2"]


def _open(url: str) -> str:
    answer = httpx.post(url, json=LEGACY_INIT, headers=ACCEPT, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.headers["mcp-session-id"]


def _list(url: str, session: str) -> int:
    headers = {**ACCEPT, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
    message = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    return httpx.post(url, json=message, headers=headers, timeout=30).status_code


def test_sessions_end_on_delete_and_when_idle_and_are_capped(server: BackgroundServer) -> None:
    url = server.url + "/mcp"
    first = _open(url)
    assert _list(url, first) == 200
    with httpx.stream("GET", url, headers={**ACCEPT, "mcp-session-id": first}, timeout=30) as stream:
        assert stream.status_code == 200  # the server's stream of the session
        assert stream.headers["content-type"].startswith("text/event-stream")
    assert httpx.delete(url, headers={"mcp-session-id": first}, timeout=30).status_code == 200
    assert _list(url, first) == 404

    sessions = [_open(url) for _ in range(3)]
    refused = httpx.post(url, json=LEGACY_INIT, headers=ACCEPT, timeout=30)
    assert refused.status_code == 503 and "Too many open sessions" in refused.text
    # a GET stream holds its session while open; once the client leaves it, the idle clock runs
    with httpx.stream("GET", url, headers={**ACCEPT, "mcp-session-id": sessions[0]}, timeout=30) as stream:
        assert stream.status_code == 200

    # left idle (any request would keep them): reaped after 1.5 s, and their room is free again;
    # polled by opening sessions, which touches none of the three
    deadline = time.monotonic() + 60
    while httpx.post(url, json=LEGACY_INIT, headers=ACCEPT, timeout=30).status_code == 503:
        assert time.monotonic() < deadline, "idle sessions were never closed"
        time.sleep(0.5)
    time.sleep(1.5)  # the other two were idle as long, give or take the requests that made them
    assert [_list(url, s) for s in sessions] == [404, 404, 404]


def test_a_gone_clients_session_is_reaped_and_a_live_clients_open_stream_keeps_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One session allowed, idle time 3 s. The real `mcp` client keeps its GET stream open: it
    holds its session past the idle time while it lives (the stream ended every 1.5 s, reopened);
    stopped (it reads nothing more, its connections stay open) its session is closed anyway,
    within 1.5 × the idle time (the library counted the open stream as a request for good); and
    killed (its connections closed) likewise."""
    monkeypatch.setenv(MAX_SESSIONS_VARIABLE, "1")
    monkeypatch.setenv(SESSION_IDLE_VARIABLE, "3")
    with BackgroundServer(MODEL) as running:
        assert running.runner.state == "ready", running.runner.error
        url = running.url + "/mcp"
        live = SessionClient(url, "remember", {"value": "v1"})
        try:
            time.sleep(7.5)  # 2.5 × the idle time without a request, the stream open
            assert live.call() == "kept"
            assert not room_within(url, 1), "the live client's session was closed"
            live.stop()
            assert room_within(url, 60), "a client that reads nothing kept its session"
        finally:
            live.kill()
        killed = SessionClient(url, "remember", {"value": "v2"})
        killed.kill()
        assert room_within(url, 60), "a killed client kept its session"


def test_a_stream_whose_writes_stall_is_cut_and_its_session_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer whose buffers are full: every write to it waits for good (a send that never
    returns stands in for the socket). The bridge still ends the library's handler of the stream
    (its session's idle clock runs), gives up the stream's last bytes after the grace time, and
    returns, so the server drops the connection."""
    monkeypatch.setenv(MAX_SESSIONS_VARIABLE, "1")
    monkeypatch.setenv(SESSION_IDLE_VARIABLE, "3")
    monkeypatch.setattr(mcp, "_END_GRACE", 0.5)
    with BackgroundServer(MODEL) as running:
        url = running.url + "/mcp"
        session = _open(url)
        instance = running.runner.instance
        assert isinstance(instance, mcp.MCPModelClass)
        bridge = instance.running_bridge()
        assert bridge is not None
        headers = [(b"accept", b"text/event-stream"), (b"mcp-session-id", session.encode())]
        headers.append((b"mcp-protocol-version", b"2025-06-18"))
        scope = {"type": "http", "method": "GET", "path": "/mcp", "headers": headers, "query_string": b""}
        sent: list[str] = []

        bodies = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if bodies:
                return bodies.pop()
            await asyncio.Event().wait()  # then nothing: the peer never leaves
            return {}

        async def stalled(message: MutableMapping[str, Any]) -> None:
            sent.append(message["type"])
            await asyncio.Event().wait()

        asyncio.run(asyncio.wait_for(bridge.handle(scope, receive, stalled), 60))
        assert sent and sent[0] == "http.response.start", sent
        assert room_within(url, 60), "a stream that stalled kept its session"


def test_session_limits_come_from_the_environment_and_bad_values_fall_back() -> None:
    assert SessionLimits.from_env({}) == SessionLimits(100, 600.0)
    assert SessionLimits.from_env({MAX_SESSIONS_VARIABLE: "7", SESSION_IDLE_VARIABLE: "30"}) == SessionLimits(
        7, 30.0
    )
    bad = {MAX_SESSIONS_VARIABLE: "0", SESSION_IDLE_VARIABLE: "inf"}
    assert SessionLimits.from_env(bad) == SessionLimits(100, 600.0)
    assert SessionLimits.from_env({SESSION_IDLE_VARIABLE: "soon"}) == SessionLimits(100, 600.0)


async def _ticks(url: str, count: int) -> list[str]:
    """The resource updates the session's `tick` sends on its GET stream, as the real `mcp`
    client receives them (it reopens its GET stream with Last-Event-ID)."""
    from mcp import Client

    got: list[str] = []

    async def on_message(message: Any) -> None:
        uri = getattr(getattr(message, "params", None), "uri", None)
        if uri is not None:
            got.append(str(uri))

    async with Client(url, mode="legacy", message_handler=on_message) as client:
        await client.call_tool("tick", {"n": count, "interval": 0.1})
        deadline = time.monotonic() + count * 0.1 + 30
        while len(got) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # and nothing more (no duplicate)
    return got


def test_notifications_sent_between_two_get_streams_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle time 1 s: the GET stream is ended every 0.5 s and the client reopens it 0.1 s later;
    40 notifications over 4 s, some in each gap. Each arrives once (they were lost in the gaps)."""
    monkeypatch.setenv(SESSION_IDLE_VARIABLE, "1")
    with BackgroundServer(MODEL) as running:
        got = asyncio.run(_ticks(running.url + "/mcp", 40))
    assert sorted(got, key=lambda uri: int(uri.rsplit("/", 1)[1])) == [f"tick://{i}" for i in range(40)]


def test_held_notifications_go_with_a_session_whose_client_never_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that opened a session, asked for notifications and left without a GET stream:
    its notifications are held for a reconnection, and dropped when its session is reaped
    (well before they would age out)."""
    monkeypatch.setenv(MAX_SESSIONS_VARIABLE, "1")
    monkeypatch.setenv(SESSION_IDLE_VARIABLE, "1.5")
    with BackgroundServer(MODEL) as running:
        url = running.url + "/mcp"
        instance = running.runner.instance
        assert isinstance(instance, mcp.MCPModelClass)
        bridge = instance.running_bridge()
        assert bridge is not None and bridge.events.max_seconds > 20
        session = _open(url)
        headers = {**ACCEPT, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "tick", "arguments": {"n": 5, "interval": 0.01}},
        }
        assert "ticking" in httpx.post(url, json=call, headers=headers, timeout=30).text
        deadline = time.monotonic() + 10
        while bridge.events.held_count() < 5:
            assert time.monotonic() < deadline, bridge.events.held_count()
            time.sleep(0.05)
        assert room_within(url, 60), "the session was never reaped"
        assert bridge.events.held_count() == 0 and bridge.events.sessions_held() == 0


class _Records(logging.Handler):
    """The server's log as it is written: uvicorn's error log and modelpack's (attach it once
    the server started: uvicorn's logging set-up removes the handlers of its loggers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.loggers = [logging.getLogger("uvicorn.error"), logging.getLogger("modelpack")]

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> _Records:
        for logger in self.loggers:
            logger.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        for logger in self.loggers:
            logger.removeHandler(self)

    def errors(self) -> list[str]:
        return [self.format(r) for r in self.records if r.levelno >= logging.ERROR or r.exc_info]


def _stalled_get(host: str, port: int, session: str) -> socket.socket:
    """A GET stream of ``session`` whose client reads nothing (a small receive buffer)."""
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.connect((host, port))
    request = (
        f"GET /mcp HTTP/1.1\r\nhost: {host}\r\naccept: text/event-stream\r\nmcp-session-id: {session}\r\n"
    )
    peer.sendall(f"{request}mcp-protocol-version: 2025-06-18\r\n\r\n".encode())
    return peer


def test_a_dropped_stalled_stream_logs_a_warning_and_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real socket that stops reading its GET stream while 100 MB of notifications go to it: the
    bridge gives up the stream's end after the grace time and the connection is dropped. The
    server logged uvicorn's "ASGI callable returned without completing response." (ERROR) for
    it; now one warning of ours, no error, no traceback."""
    monkeypatch.setenv(SESSION_IDLE_VARIABLE, "2")
    monkeypatch.setattr(mcp, "_END_GRACE", 0.5)
    with BackgroundServer(MODEL) as running, _Records() as log:  # after uvicorn configured its log
        url = running.url + "/mcp"
        session = _open(url)
        headers = {**ACCEPT, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
        arguments = {"n": 1000, "interval": 0.01, "padding": 100_000}  # 100 MB over 10 s
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "tick", "arguments": arguments},
        }
        assert "ticking" in httpx.post(url, json=call, headers=headers, timeout=30).text
        instance = running.runner.instance
        assert isinstance(instance, mcp.MCPModelClass)
        bridge = instance.running_bridge()
        assert bridge is not None
        deadline = time.monotonic() + 30
        while bridge.events.held_count() < 60:  # 6 MB for the stream to start with, more coming
            assert time.monotonic() < deadline, bridge.events.held_count()
            time.sleep(0.05)
        peers: list[socket.socket] = []
        try:  # a stream the bridge ends before it stalled ends cleanly: the next one stalls
            while not any("stopped reading" in r.getMessage() for r in log.records):
                assert len(peers) < 5, [r.getMessage() for r in log.records]
                peers.append(_stalled_get(running.host, running.port, session))  # cut after 1 s
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not any(
                    "stopped reading" in r.getMessage() for r in log.records
                ):
                    time.sleep(0.1)
            time.sleep(1)  # what the server logs after the app returned
        finally:
            for peer in peers:
                peer.close()
    dropped = [r for r in log.records if "stopped reading" in r.getMessage()]
    assert [r.levelno for r in dropped] == [logging.WARNING]
    assert log.errors() == []


def test_an_unfinished_answer_and_a_failing_mcp_app_still_log_errors(server: BackgroundServer) -> None:
    """What the drop's note leaves alone: an answer the app leaves unfinished for any other reason
    is uvicorn's error, and an MCP app that raises is logged with its traceback and answered
    as any route's model error."""
    instance = server.runner.instance
    assert isinstance(instance, mcp.MCPModelClass)
    bridge = instance.running_bridge()
    assert bridge is not None

    async def unfinished(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("the MCP app broke")

    url = server.url + "/mcp"
    with _Records() as log:
        bridge._app = unfinished
        with pytest.raises(httpx.HTTPError):
            httpx.post(url, json=LEGACY_INIT, headers=ACCEPT, timeout=30)
        bridge._app = failing
        answer = httpx.post(url, json=LEGACY_INIT, headers=ACCEPT, timeout=30)
        time.sleep(0.5)
    assert answer.status_code == 500
    assert answer.json() == {"error": {"code": "model_error", "message": "RuntimeError: the MCP app broke"}}
    errors = log.errors()
    assert any("returned without completing response" in e for e in errors), errors
    assert any("MCP request failed" in e and "the MCP app broke" in e for e in errors), errors
