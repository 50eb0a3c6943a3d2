"""The HTTP edges every endpoint of the model server shares: request bodies in (bounded, valid
JSON), errors out as one JSON shape (`{"error": {"code", "message"}}`) with a status."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from modelpack.runtime.fetch import FetchError


class HTTPError(Exception):
    """An error answer; ``close`` ends the connection after it (``Connection: close``), for an
    answer sent while the request's body is still unread."""

    close = False

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, **self.extra)

    def response(self) -> JSONResponse:
        if self.close:
            return ClosingResponse(self.body(), status_code=self.status, headers={"connection": "close"})
        return error_response(self.status, self.code, self.message, **self.extra)


LINGER_SECONDS = 5.0


class ClosingResponse(JSONResponse):
    """An answer sent while the request's body is unread, then the connection closed (uvicorn
    closes it after a ``Connection: close`` answer). Closing a socket with unread bytes resets
    the connection, and the reset can overtake the answer: a client that writes its whole body
    before it reads (httpx, requests) would see a reset instead of the 413. So what it keeps
    sending is discarded, never parsed as a request, until it closes or `LINGER_SECONDS` pass."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import anyio

        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        with anyio.move_on_after(LINGER_SECONDS):
            while (await receive())["type"] != "http.disconnect":
                pass
        await send({"type": "http.response.body", "body": b""})


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one shape of every error the server sends: an answer's body (`error_response`, the
    closing 413's), a stream's error event, a WebSocket's last message."""
    return {"error": {"code": code, "message": message, **extra}}


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status)


def model_error(error: BaseException) -> HTTPError:
    if isinstance(error, FetchError):
        return HTTPError(400, "url_fetch_failed", str(error))
    return HTTPError(500, "model_error", f"{type(error).__name__}: {error}")


async def read_json(request: Request, limit: int) -> Any:
    body = await read_body(request, limit)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise HTTPError(400, "invalid_json", f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise HTTPError(400, "invalid_json", "request body is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(body):  # only a `\uD8xx` escape can make a lone surrogate
        try:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise HTTPError(400, "invalid_json", "request body holds a lone UTF-16 surrogate") from None
    return payload


_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_BODY_VARIABLE = "MODELPACK_MAX_BODY_BYTES"


def body_limit(explicit: int | None, environ: Mapping[str, str] = os.environ) -> int:
    """The largest request body (and WebSocket message): ``--max-body-bytes``, else
    ``MODELPACK_MAX_BODY_BYTES``, else 64 MiB; one answer for the routes and the uvicorn config."""
    if explicit:
        return explicit
    value = environ.get(MAX_BODY_VARIABLE, "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_BODY_BYTES


def too_large(limit: int) -> HTTPError:
    """413, and the connection closed after it (`ClosingResponse`): the server neither drains
    gigabytes it refused nor parses what follows the refused body as the next request."""
    error = HTTPError(413, "payload_too_large", f"request body is larger than {limit} bytes")
    error.close = True
    return error


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        if int(length) > limit:
            raise too_large(limit)
        body = await request.body()
    else:
        chunks = bytearray()
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > limit:
                raise too_large(limit)
        body = bytes(chunks)
    return body


async def bounded_receive(scope: Scope, receive: Receive, limit: int) -> Receive:
    """For an ASGI app that reads the body itself (``/mcp``): the whole body, read and counted
    before the app runs, then handed to it as one message (later messages, a disconnect, pass
    through). A ``Content-Length`` over ``limit`` is refused unread and a body that grows past it
    as soon as it does (413, `HTTPError`), so nothing of it reaches the app; a client gone
    mid-body is `ClientDisconnect`."""
    length = Headers(scope=scope).get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large(limit)
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunks += message.get("body", b"")
        if len(chunks) > limit:
            raise too_large(limit)
        if not message.get("more_body", False):
            break
    pending: list[Message] = [{"type": "http.request", "body": bytes(chunks), "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
