"""The HTTP edges every endpoint of the model server shares: request bodies in (bounded, valid
JSON), errors out as one JSON shape (`{"error": {"code", "message"}}`) with a status."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from modelpack.runtime.fetch import FetchError


class HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, **self.extra)


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


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


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        if int(length) > limit:
            raise HTTPError(413, "payload_too_large", f"request body is larger than {limit} bytes")
        body = await request.body()
    else:
        chunks = bytearray()
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > limit:
                raise HTTPError(413, "payload_too_large", f"request body is larger than {limit} bytes")
        body = bytes(chunks)
    return body


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
