"""``max_body_bytes`` on the routes that read a body themselves, against the real server (uvicorn
in a thread): ``/mcp`` counts the body as it arrives and refuses it before the MCP app sees any of
it (so a session goes on untouched, as the real `mcp` client sees), and a WebSocket message is
bounded by the same number. Each ``/mcp`` test runs with a limit below the MCP library's own
4 MiB cap and one above it, which that cap must not decide instead."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_results import first_text

from modelpack.runtime import wire
from modelpack.runtime.server import BackgroundServer

MODELS = Path(__file__).parent / "test_runtime_models"
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
LEGACY = "2025-06-18"


@dataclass(frozen=True)
class Limited:
    server: BackgroundServer
    limit: int


@pytest.fixture(scope="module", params=[64 * 1024, 5 * 1024 * 1024], ids=["64KiB", "5MiB"])
def mcp(request: pytest.FixtureRequest) -> Iterator[Limited]:
    with BackgroundServer(MODELS / "mcp_session", max_body_bytes=request.param) as running:
        assert running.runner.state == "ready", running.runner.error
        yield Limited(running, request.param)


def _too_large(limit: int) -> dict[str, Any]:
    return {"error": {"code": "payload_too_large", "message": f"request body is larger than {limit} bytes"}}


def _answer(response: httpx.Response) -> Any:
    """The JSON of an answer, else its text (what the MCP app says when a body reaches it)."""
    json_answer = response.headers.get("content-type", "").startswith("application/json")
    return response.json() if json_answer else response.text[:300]


def _padded(message: dict[str, Any], size: int) -> bytes:
    """``message`` as JSON of exactly ``size`` bytes (trailing whitespace is valid JSON)."""
    text = json.dumps(message).encode()
    assert len(text) <= size
    return text + b" " * (size - len(text))


def _initialize(size: int) -> bytes:
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
    return _padded({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}, size)


def _chunks(body: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    """No Content-Length: httpx sends a generator chunked."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def _async_chunks(body: bytes) -> AsyncIterator[bytes]:
    for chunk in _chunks(body):
        yield chunk


def test_an_mcp_body_at_the_limit_passes_and_one_byte_more_is_413(mcp: Limited) -> None:
    server, limit = mcp.server, mcp.limit
    url = server.url + "/mcp"
    at_limit = httpx.post(url, content=_initialize(limit), headers=HEADERS, timeout=60)
    assert at_limit.status_code == 200, at_limit.text[:300]
    assert at_limit.headers["mcp-session-id"]
    over = httpx.post(url, content=_initialize(limit + 1), headers=HEADERS, timeout=60)
    assert (over.status_code, _answer(over)) == (413, _too_large(limit))
    chunked = httpx.post(url, content=_chunks(_initialize(limit + 1)), headers=HEADERS, timeout=60)
    assert (chunked.status_code, _answer(chunked)) == (413, _too_large(limit))
    chunked_at_limit = httpx.post(url, content=_chunks(_initialize(limit)), headers=HEADERS, timeout=60)
    assert chunked_at_limit.status_code == 200, chunked_at_limit.text[:300]


def test_a_chunked_mcp_body_is_cut_off_as_it_grows_past_the_limit(mcp: Limited) -> None:
    """The 413 comes while the body is still being sent: its end never arrives."""
    server, limit = mcp.server, mcp.limit
    head = f"POST /mcp HTTP/1.1\r\nhost: {server.host}\r\ntransfer-encoding: chunked\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items()) + "\r\n"
    piece = b" " * (64 * 1024)
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(head.encode())
        for _ in range(limit // len(piece) + 1):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            data = sock.recv(65536)
            assert data, answer
            answer += data
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413 ") and b"content-type: application/json" in status.lower()
    assert json.loads(body) == _too_large(limit)


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    answer = b""
    while data := sock.recv(65536):
        answer += data
    return answer


@pytest.mark.parametrize("model, path", [("mcp_session", "/mcp"), ("kitchen", "/v1/methods/add")])
def test_a_413_closes_the_connection_and_a_request_pipelined_after_the_body_is_not_answered(
    model: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oversize body is sent in full, a second request right behind it on the same
    connection: the server answers the 413 with ``Connection: close`` and closes, and the
    request after the refused body gets no answer (uvicorn used to drain the body, keep the
    connection and answer it)."""
    monkeypatch.setattr(wire, "LINGER_SECONDS", 1.0)
    with BackgroundServer(MODELS / model, max_body_bytes=1000) as running:
        assert running.runner.state == "ready", running.runner.error
        head = f"POST {path} HTTP/1.1\r\nhost: {running.host}\r\ncontent-length: 2000\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items()) + "\r\n"
        pipelined = f"GET /health HTTP/1.1\r\nhost: {running.host}\r\n\r\n"
        with socket.create_connection((running.host, running.port), timeout=30) as sock:
            sock.sendall(head.encode() + b" " * 2000 + pipelined.encode())
            answer = _until_closed(sock)
    status, _, rest = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert b"\r\nconnection: close" in status.lower()
    assert rest == json.dumps(_too_large(1000), separators=(",", ":")).encode()
    assert answer.count(b"HTTP/1.1 ") == 1, answer


def test_oversize_posts_never_reach_the_session_and_it_goes_on(mcp: Limited) -> None:
    """The real `mcp` client keeps a value in its session; bodies over the limit that would
    overwrite it, declared or chunked, are refused, and the client then reads the value it kept."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    server, limit = mcp.server, mcp.limit
    url = server.url + "/mcp"
    sessions: list[str] = []

    async def keep_session(response: Any) -> None:
        if "mcp-session-id" in response.headers:
            sessions.append(response.headers["mcp-session-id"])

    async def run() -> tuple[list[tuple[int, Any]], str]:
        async with httpx2.AsyncClient(event_hooks={"response": [keep_session]}, timeout=60) as http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode="legacy") as client, httpx.AsyncClient(timeout=60) as raw:
                assert first_text((await client.call_tool("remember", {"value": "v1"})).content) == "kept"
                headers = {**HEADERS, "mcp-session-id": sessions[-1], "mcp-protocol-version": LEGACY}
                call = {"name": "remember", "arguments": {"value": "overwritten"}}
                big = _padded({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": call}, limit + 1)
                refused = []
                for content in (big, _async_chunks(big)):
                    answer = await raw.post(url, content=content, headers=headers)
                    refused.append((answer.status_code, _answer(answer)))
                recalled = await client.call_tool("recall", {})
                return refused, first_text(recalled.content)

    refused, recalled = asyncio.run(run())
    assert refused == [(413, _too_large(limit)), (413, _too_large(limit))]
    assert recalled == "v1"


def test_a_websocket_message_over_the_limit_is_refused_unread() -> None:
    """uvicorn's ws_max_size is the server's limit, not a fixed 64 MiB: a longer message is
    closed with 1009 (message too big) from its frame header, before it is read."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with BackgroundServer(MODELS / "kitchen", max_body_bytes=4096) as running:
        ws_url = running.url.replace("http://", "ws://") + "/v1/methods/upper/stream"
        with connect(ws_url, open_timeout=30, max_size=None) as ws:
            ws.send(json.dumps({"args": {}}))
            ws.send(json.dumps({"item": "ab"}))
            assert json.loads(ws.recv(timeout=30)) == {"result": "AB"}
            ws.send(json.dumps({"item": "x" * 100_000}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_mcp_transport_takes_a_message_as_large_as_its_body_allows(mcp: Limited) -> None:
    """``mcp_transport``'s message is bounded by its POST's body alone (the MCP library's cap
    answered a 4-5 MiB message with the text "Request body too large" as its result)."""
    server, limit = mcp.server, mcp.limit
    message = _padded({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}}, limit - 1024)
    body = json.dumps({"msg": message.decode()}).encode()
    assert len(body) <= limit
    response = httpx.post(f"{server.url}/v1/methods/mcp_transport", content=body, timeout=60)
    assert response.status_code == 200, response.text[:300]
    answer = json.loads(response.json()["result"])
    assert answer["id"] == 5 and "count" in [tool["name"] for tool in answer["result"]["tools"]]


def test_a_closing_answer_has_the_body_every_error_answer_has() -> None:
    """The 413 that closes the connection and an ordinary error answer are built by one builder:
    the same code, message and extra fields give the same bytes."""
    closing = wire.HTTPError(413, "payload_too_large", "too big", limit=10)
    closing.close = True
    plain = wire.HTTPError(413, "payload_too_large", "too big", limit=10)
    answers = [
        closing.response(),
        plain.response(),
        wire.error_response(413, "payload_too_large", "too big", limit=10),
    ]
    assert isinstance(answers[0], wire.ClosingResponse) and not isinstance(answers[1], wire.ClosingResponse)
    bodies = {bytes(answer.body) for answer in answers}
    assert len(bodies) == 1
    assert json.loads(bodies.pop()) == wire.error_body("payload_too_large", "too big", limit=10)
    assert answers[0].headers["connection"] == "close"
