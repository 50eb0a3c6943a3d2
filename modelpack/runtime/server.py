"""The HTTP server (starlette + uvicorn) that serves one model.

Endpoints:

- ``GET /health`` (also ``/healthz/liveness``): the process is alive.
- ``GET /ready`` (also ``/healthz/readiness``, ``/healthz/startup``): 200 once the model is
  loaded, 503 ``{"status": "loading"}`` or ``{"status": "failed", "error": ...}`` before.
- ``GET /v1/methods``: the model signature (`modelpack.project.method_types.ModelSignature.to_dict()`).
- ``GET /openapi.json``: OpenAPI 3.1 generated from the signature.
- ``POST /v1/methods/{name}``: a JSON object of arguments → ``{"result": ...}``; a JSON
  array of argument objects is a batch → ``{"results": [...]}`` (same order).
  Streaming methods answer Server-Sent Events (``data: {"result": item}`` per item,
  ``event: error`` on failure, ``event: done`` at the end), or NDJSON lines
  (``{"result": item}`` / ``{"error": ...}``) with ``Accept: application/x-ndjson``.
  A stream-stream method's iterator argument may be given as a JSON array here.
- ``WS /v1/methods/{name}/stream``: bidirectional. The client sends ``{"args": {...}}``
  (the other arguments), then ``{"item": value}`` per input item and ``{"end": true}``;
  the server sends ``{"result": item}`` per output, then ``{"done": true}``, or
  ``{"error": {...}}`` and closes.
- ``/mcp``: MCP over streamable HTTP, for `MCPModelClass` models (sessions, SSE answers; runtime/mcp.py).
- ``POST /v1/chat/completions``, ``GET /v1/models``: OpenAI-compatible, for
  `OpenAIModelClass` models (``stream: true`` → ``chat.completion.chunk`` events and
  ``data: [DONE]``).

Errors are ``{"error": {"code", "message", ...}}``: 400 bad JSON, 404 unknown method,
413 body over ``max_body_bytes`` (``MODELPACK_MAX_BODY_BYTES``, default 64 MiB; ``/mcp`` too,
counted as it arrives, before the MCP app sees any of it; the connection then closes,
`wire.ClosingResponse`; a WebSocket message over it is
closed with 1009 by uvicorn, unread), 422 bad arguments (``"argument"`` names it), 500 the
model raised (the server keeps serving), 503 not loaded yet, or ``too_many_streams``.

Streams cannot starve unary calls: each streaming method serves at most
``MODELPACK_MAX_STREAMS`` streams at once (default 16; past it a stream is refused with
``too_many_streams``, WebSocket close code 1013), a sync method's streams run on threads of
their own (not the pool unary calls use), and a WebSocket stream that sends nothing for
``MODELPACK_STREAM_IDLE_TIMEOUT`` seconds (default 120) is closed with ``idle_timeout``.
``/ready`` answers 503 ``{"status": "busy"}`` while every worker thread for calls is taken.
Idle keep-alive connections stay open 75 s, longer than clients and load balancers keep them.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from modelpack.errors import RuntimeFailure
from modelpack.runtime.helpers import OpenAIModelClass, completion_chunks, completion_response
from modelpack.runtime.introspect import ArgumentError, MethodPlan, encode, make_decoder
from modelpack.runtime.mcp import ASGIEndpoint, MCPModelClass, quiet_dropped_streams
from modelpack.runtime.openapi import openapi_document
from modelpack.runtime.runner import Runner, iterate
from modelpack.runtime.wire import (
    HTTPError,
    body_limit,
    bounded_receive,
    dumps,
    error_body,
    error_response,
    model_error,
    read_json,
)

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("modelpack.runtime")

DEFAULT_MAX_STREAMS = 16  # per streaming method
DEFAULT_STREAM_IDLE_SECONDS = 120.0
# An idle keep-alive connection is closed by the client (httpx: 5 s) or the load balancer in front
# (often 60 s) before the server closes it: a server that closes first races the next request sent
# on that connection, which is then lost (connection reset). uvicorn's own default is 5 s.
KEEP_ALIVE_SECONDS = 75


def env_positive(name: str, default: float) -> float:
    """A positive number from the environment, else ``default``."""
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


class ModelServer:
    """Request handlers bound to one `Runner`."""

    def __init__(self, runner: Runner, *, max_body_bytes: int | None = None) -> None:
        self.runner = runner
        self.max_body_bytes = body_limit(max_body_bytes)
        self._openapi: dict[str, Any] | None = None
        self._openai_model: str | None = None
        self.max_streams = int(env_positive("MODELPACK_MAX_STREAMS", DEFAULT_MAX_STREAMS))
        self.stream_idle_seconds = env_positive("MODELPACK_STREAM_IDLE_TIMEOUT", DEFAULT_STREAM_IDLE_SECONDS)
        self._streams: dict[str, int] = {}  # method -> open streams (touched on the event loop only)
        self._stream_limiters: dict[str, Any] = {}  # method -> anyio.CapacityLimiter for its threads

    # -- probes --------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        import anyio.to_thread

        runner = self.runner
        if runner.state == "ready":
            if anyio.to_thread.current_default_thread_limiter().available_tokens < 1:
                return JSONResponse(
                    {"status": "busy", "error": "every worker thread is serving a call"}, status_code=503
                )
            return JSONResponse({"status": "ready"})
        body: dict[str, Any] = {"status": runner.state}
        if runner.error:
            body["error"] = runner.error
        return JSONResponse(body, status_code=503)

    def _require_ready(self) -> None:
        if self.runner.state == "loading":
            raise HTTPError(503, "loading", "the model is still loading")
        if self.runner.state == "failed":
            raise HTTPError(503, "load_failed", f"the model failed to load: {self.runner.error}")

    def _plan(self, name: str) -> MethodPlan:
        self._require_ready()
        plan = self.runner.plans.get(name)
        if plan is None:
            raise HTTPError(404, "unknown_method", f"no method {name!r}; see GET /v1/methods", method=name)
        return plan

    # -- signature -----------------------------------------------------------
    async def methods(self, request: Request) -> Response:
        try:
            self._require_ready()
        except HTTPError as error:
            return error.response()
        current = await run_in_threadpool(self.runner.current_signature)  # an MCP server's tools, now
        assert current is not None
        return JSONResponse(current.to_dict())

    async def openapi(self, request: Request) -> Response:
        try:
            self._require_ready()
        except HTTPError as error:
            return error.response()
        if self._openapi is None:
            assert self.runner.signature is not None
            self._openapi = openapi_document(self.runner.signature, self.runner.plans, self._is_openai())
        return JSONResponse(self._openapi)

    # -- methods -------------------------------------------------------------
    async def call(self, request: Request) -> Response:
        try:
            plan = self._plan(request.path_params["name"])
            payload = await read_json(request, self.max_body_bytes)
            if isinstance(payload, list):
                return await self._call_batch(plan, payload)
            kwargs = plan.decode_args(payload)
            if plan.kind != "unary-unary":
                return self._stream_response(request, plan, kwargs)
            try:
                result = await self.runner.call(plan, kwargs)
                return JSONResponse({"result": encode(result)})
            except Exception as error:
                log.exception("method %s failed", plan.name)
                raise model_error(error) from None
        except HTTPError as error:
            return error.response()
        except ArgumentError as error:
            extra = {"argument": error.argument} if error.argument else {}
            return error_response(422, "invalid_argument", error.message, **extra)

    async def _call_batch(self, plan: MethodPlan, payload: list[Any]) -> Response:
        if plan.kind != "unary-unary":
            raise HTTPError(
                422, "batch_not_supported", f"method {plan.name!r} streams; send one argument object"
            )
        items = []
        for index, entry in enumerate(payload):
            try:
                items.append(plan.decode_args(entry))
            except ArgumentError as error:
                extra = {"argument": error.argument} if error.argument else {}
                raise HTTPError(
                    422, "invalid_argument", f"item {index}: {error.message}", index=index, **extra
                ) from None
        try:
            results = await self.runner.call_batch(plan, items)
            return JSONResponse({"results": [encode(r) for r in results]})
        except Exception as error:
            log.exception("method %s failed", plan.name)
            raise model_error(error) from None

    def _open_stream(self, plan: MethodPlan) -> Any:
        """Count a new stream of ``plan`` (refused past the bound); its threads' limiter."""
        import anyio

        open_now = self._streams.get(plan.name, 0)
        if open_now >= self.max_streams:
            raise HTTPError(
                503,
                "too_many_streams",
                f"method {plan.name!r} already serves {open_now} streams (MODELPACK_MAX_STREAMS); try again later",
            )
        self._streams[plan.name] = open_now + 1
        limiter = self._stream_limiters.get(plan.name)
        if limiter is None:
            limiter = self._stream_limiters[plan.name] = anyio.CapacityLimiter(self.max_streams)
        return limiter

    def _close_stream(self, plan: MethodPlan) -> None:
        self._streams[plan.name] = max(0, self._streams.get(plan.name, 1) - 1)

    def _stream_response(self, request: Request, plan: MethodPlan, kwargs: dict[str, Any]) -> Response:
        ndjson = "application/x-ndjson" in request.headers.get("accept", "")
        items = self._async_input(plan, kwargs)
        limiter = self._open_stream(plan)

        async def body() -> AsyncIterator[str]:
            try:
                async for item in self.runner.stream(plan, items, limiter):
                    data = dumps({"result": encode(item)})
                    yield f"{data}\n" if ndjson else f"data: {data}\n\n"
            except Exception as error:
                log.exception("method %s failed", plan.name)
                http = model_error(error)
                data = dumps(http.body())
                yield f"{data}\n" if ndjson else f"event: error\ndata: {data}\n\n"
                return
            finally:
                self._close_stream(plan)
            if not ndjson:
                yield "event: done\ndata: {}\n\n"

        media = "application/x-ndjson" if ndjson else "text/event-stream"
        return StreamingResponse(body(), media_type=media, headers={"Cache-Control": "no-cache"})

    @staticmethod
    def _async_input(plan: MethodPlan, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Async methods get async iterators for their streaming argument."""
        arg = plan.stream_arg
        if arg is None or not plan.is_async:
            return kwargs

        async def aiter_list(values: Iterator[Any]) -> AsyncIterator[Any]:
            for value in values:
                yield value

        return {**kwargs, arg.name: aiter_list(kwargs[arg.name])}

    # -- bidirectional -------------------------------------------------------
    async def websocket(self, websocket: WebSocket) -> None:
        import anyio

        await websocket.accept()
        try:
            plan = self._plan(websocket.path_params["name"])
            arg = plan.stream_arg
            if arg is None:
                raise HTTPError(422, "not_streaming", f"method {plan.name!r} takes no input stream; use POST")
            with anyio.fail_after(self.stream_idle_seconds):
                first = await self._receive_json(websocket)
            if not isinstance(first, dict) or not isinstance(first.get("args", {}), dict):
                raise HTTPError(422, "invalid_argument", 'the first message must be {"args": {...}}')
            args = dict(first.get("args", {}))
            if arg.name in args:
                raise HTTPError(
                    422, "invalid_argument", f"{arg.name!r} is streamed as items", argument=arg.name
                )
            kwargs = plan.decode_args({**args, arg.name: []})
            item_args = typing.get_args(arg.annotation)
            decode_item = make_decoder(item_args[0]) if item_args else (lambda v: v)
        except HTTPError as error:
            await self._ws_close_with_error(websocket, error.code, error.message, 1008, **error.extra)
            return
        except ArgumentError as error:
            extra = {"argument": error.argument} if error.argument else {}
            await self._ws_close_with_error(websocket, "invalid_argument", error.message, 1008, **extra)
            return
        except WebSocketDisconnect:
            return
        except TimeoutError:
            await self._ws_close_with_error(websocket, "idle_timeout", self._idle_message(), 1008)
            return
        try:
            limiter = self._open_stream(plan)
        except HTTPError as error:
            await self._ws_close_with_error(websocket, error.code, error.message, 1013)
            return
        try:
            await self._bidirectional(websocket, plan, kwargs, decode_item, limiter)
        finally:
            self._close_stream(plan)

    def _idle_message(self) -> str:
        return f"no message for {self.stream_idle_seconds:g} s (MODELPACK_STREAM_IDLE_TIMEOUT)"

    async def _bidirectional(
        self,
        websocket: WebSocket,
        plan: MethodPlan,
        kwargs: dict[str, Any],
        decode_item: Callable[[Any], Any],
        limiter: Any,
    ) -> None:
        """Feed the client's items to the method and send its results, until either side ends."""
        import anyio

        arg = plan.stream_arg
        assert arg is not None
        sentinel = object()
        if plan.is_async:
            import asyncio

            aqueue: asyncio.Queue[Any] = asyncio.Queue()

            async def ainput() -> AsyncIterator[Any]:
                while (item := await aqueue.get()) is not sentinel:
                    yield item

            kwargs[arg.name] = ainput()
            put: Callable[[Any], None] = aqueue.put_nowait
        else:
            squeue: queue.Queue[Any] = queue.Queue()
            kwargs[arg.name] = iter(squeue.get, sentinel)
            put = squeue.put

        failure: list[tuple[str, str]] = []

        async def receive_items(scope: anyio.CancelScope) -> None:
            try:
                while True:
                    with anyio.fail_after(self.stream_idle_seconds):
                        message = await self._receive_json(websocket)
                    if isinstance(message, dict) and message.get("end"):
                        break
                    if not isinstance(message, dict) or "item" not in message:
                        failure.append(("invalid_argument", 'expected {"item": value} or {"end": true}'))
                        scope.cancel()
                        break
                    try:
                        put(decode_item(message["item"]))
                    except (TypeError, ValueError) as error:
                        failure.append(("invalid_argument", f"argument {arg.name!r}: item: {error}"))
                        scope.cancel()
                        break
            except WebSocketDisconnect:
                failure.append(("disconnected", "client went away"))
                scope.cancel()
            except TimeoutError:
                failure.append(("idle_timeout", self._idle_message()))
                scope.cancel()
            except HTTPError as error:  # an oversized or malformed message: say so, then close
                failure.append((error.code, error.message))
                scope.cancel()
            finally:
                put(sentinel)

        errors: list[BaseException] = []
        async with anyio.create_task_group() as group:
            group.start_soon(receive_items, group.cancel_scope)
            try:
                async for item in iterate(self.runner.bound[plan.name], kwargs, plan.is_async, limiter):
                    await websocket.send_text(dumps({"result": encode(item)}))
            except (WebSocketDisconnect, OSError):
                failure.append(("disconnected", "client went away"))
            except Exception as error:
                errors.append(error)
            group.cancel_scope.cancel()
        if errors:
            log.error("method %s failed: %s", plan.name, errors[0])
            http = model_error(errors[0])
            await self._ws_close_with_error(websocket, http.code, http.message, 1011)
            return
        if failure:
            code, message = failure[0]
            if code != "disconnected":
                await self._ws_close_with_error(websocket, code, message, 1008, argument=arg.name)
            return
        try:
            await websocket.send_text(dumps({"done": True}))
            await websocket.close(1000)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    async def _receive_json(self, websocket: WebSocket) -> Any:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text, raw = message.get("text"), message.get("bytes") or b""
        # in bytes, as uvicorn's ws_max_size counts (a server without one hands over any size)
        size = len(raw) if text is None else len(text) if text.isascii() else len(text.encode())
        if size > self.max_body_bytes:
            raise HTTPError(413, "payload_too_large", f"message is larger than {self.max_body_bytes} bytes")
        if text is None:
            text = raw.decode("utf-8", errors="replace")
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise HTTPError(400, "invalid_json", "message is not valid JSON") from None

    @staticmethod
    async def _ws_close_with_error(
        websocket: WebSocket, code: str, message: str, close_code: int, **extra: Any
    ) -> None:
        try:
            await websocket.send_text(dumps(error_body(code, message, **extra)))
            await websocket.close(close_code)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    # -- MCP -------------------------------------------------------------------
    async def mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Streamable HTTP (ASGI): each exchange streamed to and from the model's MCP app."""
        try:
            self._require_ready()
            instance = self.runner.instance
            if not isinstance(instance, MCPModelClass):
                raise HTTPError(404, "not_found", "this model is not an MCP server")
            bridge = instance.running_bridge()
            if bridge is None:  # not started yet: starting it blocks
                bridge = await run_in_threadpool(instance.mcp_bridge)
            body = await bounded_receive(scope, receive, self.max_body_bytes)
        except HTTPError as error:
            await error.response()(scope, receive, send)
            return
        except ClientDisconnect:  # gone mid-body: nothing to answer, nothing for the app
            return
        try:
            await bridge.handle(scope, body, send)
        except Exception as error:  # raised only while nothing was sent
            log.exception("MCP request failed")
            await model_error(error).response()(scope, receive, send)

    # -- OpenAI-compatible ---------------------------------------------------
    def _is_openai(self) -> bool:
        return isinstance(self.runner.instance, OpenAIModelClass)

    def _openai_instance(self) -> OpenAIModelClass:
        self._require_ready()
        instance = self.runner.instance
        if not isinstance(instance, OpenAIModelClass):
            raise HTTPError(404, "not_found", "this model is not an OpenAI-compatible chat model")
        return instance

    async def _model_name(self, instance: OpenAIModelClass) -> str:
        if self._openai_model is None:
            self._openai_model = await run_in_threadpool(instance.backend_model)
        return self._openai_model

    async def openai_models(self, request: Request) -> Response:
        try:
            instance = self._openai_instance()
            name = await self._model_name(instance)
        except HTTPError as error:
            return error.response()
        except Exception as error:
            return error_response(502, "backend_error", f"{type(error).__name__}: {error}")
        model = {"id": name, "object": "model", "created": 0, "owned_by": "modelpack"}
        return JSONResponse({"object": "list", "data": [model]})

    async def chat_completions(self, request: Request) -> Response:
        try:
            instance = self._openai_instance()
            payload = await read_json(request, self.max_body_bytes)
            if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
                raise HTTPError(422, "invalid_argument", "'messages' must be a list", argument="messages")
            stream = payload.get("stream", False)
            if stream is None:
                stream = False
            if not isinstance(stream, bool):
                raise HTTPError(422, "invalid_argument", "'stream' must be true or false", argument="stream")
            own = type(instance).chat_completion is not OpenAIModelClass.chat_completion
            if not own and _user_defined(
                instance, "openai_stream_transport" if stream else "openai_transport"
            ):
                return await self._transport_chat(instance, payload, stream)
            if not own and instance.backend_url() is not None:
                return await self._proxy_chat(instance, payload, stream)
            try:
                result = await run_in_threadpool(instance.chat_completion, payload)
            except NotImplementedError as error:
                raise HTTPError(501, "not_implemented", str(error)) from None
            except Exception as error:
                log.exception("chat_completion failed")
                raise model_error(error) from None
            if not stream:
                if not isinstance(result, dict):
                    result = await run_in_threadpool(_collect_chunks, result)
                return JSONResponse(result)
            if isinstance(result, dict):
                text = result["choices"][0]["message"].get("content") or ""
                result = completion_chunks([text], str(result.get("model", "")))
            return self._sse_chunks(result)
        except HTTPError as error:
            return error.response()

    async def _transport_chat(self, instance: Any, payload: dict[str, Any], stream: bool) -> Response:
        """Clarifai-style models: ``openai_transport(msg: str) -> str`` and
        ``openai_stream_transport(msg: str) -> Iterator[str]`` take and give JSON text."""
        message = json.dumps(payload)
        if stream:
            return self._sse_chunks(instance.openai_stream_transport, message)
        try:
            text = await run_in_threadpool(instance.openai_transport, message)
            return JSONResponse(json.loads(text))
        except Exception as error:
            log.exception("openai_transport failed")
            raise model_error(error) from None

    def _sse_chunks(self, chunks: Any, message: str | None = None) -> Response:
        """SSE ``data:`` events for chunk dicts (or JSON texts from a transport), then ``[DONE]``."""
        produce = (lambda: chunks(message)) if message is not None else (lambda: chunks)

        async def body() -> AsyncIterator[str]:
            try:
                async for chunk in iterate(produce, {}, False):
                    yield f"data: {chunk if isinstance(chunk, str) else dumps(chunk)}\n\n"
            except Exception as error:
                log.exception("chat_completion stream failed")
                yield f"data: {dumps({'error': {'code': 'model_error', 'message': str(error)}})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def _proxy_chat(
        self, instance: OpenAIModelClass, payload: dict[str, Any], stream: bool
    ) -> Response:
        """Forward to the backend; only the model's own backend key is sent, never the caller's."""
        import httpx

        url = f"{instance.backend_url()}/chat/completions"
        try:
            body = {**payload, "model": await self._model_name(instance)}
        except Exception as error:
            raise HTTPError(502, "backend_error", f"{type(error).__name__}: {error}") from None
        headers = {"Content-Type": "application/json"}
        key = instance.backend_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0))
        try:
            upstream = await client.send(
                client.build_request("POST", url, json=body, headers=headers), stream=True
            )
        except httpx.HTTPError as error:
            await client.aclose()
            raise HTTPError(502, "backend_error", f"backend unreachable: {type(error).__name__}") from None
        if not stream or upstream.status_code != 200:
            content = await upstream.aread()
            await upstream.aclose()
            await client.aclose()
            media = upstream.headers.get("content-type", "application/json")
            return Response(content, status_code=upstream.status_code, media_type=media)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                await client.aclose()

        return StreamingResponse(
            relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )


def _user_defined(instance: object, name: str) -> bool:
    """Whether the model's own code (not modelpack's SDK) defines ``name``."""
    attr = getattr(type(instance), name, None)
    return attr is not None and not str(getattr(attr, "__module__", "")).startswith("modelpack.runtime")


def _collect_chunks(chunks: Any) -> dict[str, Any]:
    text, model = [], ""
    for chunk in chunks:
        model = chunk.get("model", model)
        for choice in chunk.get("choices", []):
            text.append((choice.get("delta") or {}).get("content") or "")
    return completion_response("".join(text), model)


def create_app(
    runner: Runner,
    *,
    max_body_bytes: int | None = None,
    load_on_startup: bool = True,
    on_loaded: Callable[[Runner], None] | None = None,
) -> Starlette:
    """The ASGI app; with ``load_on_startup`` the model loads in a thread once the server listens."""
    import contextlib

    server = ModelServer(runner, max_body_bytes=max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if load_on_startup and runner.state == "loading" and not runner.loaded.is_set():
            runner.start_loading(on_loaded)
        yield

    routes = [  # the method route first: it is the hot path
        Route("/v1/methods/{name}", server.call, methods=["POST"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/healthz/liveness", server.health, methods=["GET"]),
        Route("/ready", server.ready, methods=["GET"]),
        Route("/healthz/readiness", server.ready, methods=["GET"]),
        Route("/healthz/startup", server.ready, methods=["GET"]),
        Route("/v1/methods", server.methods, methods=["GET"]),
        Route("/openapi.json", server.openapi, methods=["GET"]),
        WebSocketRoute("/v1/methods/{name}/stream", server.websocket),
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/models", server.openai_models, methods=["GET"]),
        Route("/mcp", ASGIEndpoint(server.mcp), methods=["GET", "POST", "DELETE"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "not_found", f"no route {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(
            405, "method_not_allowed", f"{request.method} not allowed on {request.url.path}"
        )

    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_allowed, 500: internal},
    )


def uvicorn_config(
    app: Starlette,
    host: str,
    port: int,
    *,
    access_log: bool = False,
    log_level: str = "info",
    max_body_bytes: int | None = None,
) -> uvicorn.Config:
    """uvicorn's settings; a WebSocket message may be as large as a request body, no larger
    (websockets refuses a longer frame from its header, before reading it)."""
    import uvicorn

    quiet_dropped_streams(logging.getLogger("uvicorn.error"))
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=30,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        ws_max_size=body_limit(max_body_bytes),
        lifespan="on",
    )


def serve(
    model_dir: Path,
    *,
    host: str = "0.0.0.0",
    port: int = 8080,
    access_log: bool = False,
    max_body_bytes: int | None = None,
    exit_on_load_failure: bool = True,
) -> int:
    """Serve until SIGTERM/SIGINT (in-flight requests finish); returns the exit status."""
    import uvicorn

    runner = Runner(Path(model_dir))
    failed = threading.Event()

    def on_loaded(r: Runner) -> None:
        if r.state == "failed" and exit_on_load_failure:
            failed.set()
            server.should_exit = True

    listening = listen_socket(host, port)  # before anything starts: a bad address is one line
    limit = body_limit(max_body_bytes)
    app = create_app(runner, max_body_bytes=limit, on_loaded=on_loaded)
    server = uvicorn.Server(uvicorn_config(app, host, port, access_log=access_log, max_body_bytes=limit))
    if threading.current_thread() is threading.main_thread():
        import signal

        # uvicorn re-raises the signal after its graceful shutdown; a finished
        # SIGTERM shutdown is a clean exit (status 0), not a death by signal
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run(sockets=[listening])
    return 1 if failed.is_set() else 0


def listen_socket(host: str, port: int) -> Any:
    """A socket bound to ``host:port``; a port in use or a host that does not resolve is a
    `RuntimeFailure` with one line (uvicorn would log it and exit with its own status)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (OSError, UnicodeError) as error:
        raise RuntimeFailure(f"cannot listen on {host}:{port}: {_reason(error)}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.set_inheritable(True)
    except OSError as error:
        sock.close()
        raise RuntimeFailure(f"cannot listen on {host}:{port}: {_reason(error)}") from None
    return sock


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)


class BackgroundServer:
    """A server on a free loopback port in a thread (for ``predict DIR`` and tests)."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        runner: Runner | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int | None = None,
    ) -> None:
        import socket

        import uvicorn

        self.runner = runner or Runner(model_dir)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        limit = body_limit(max_body_bytes)
        app = create_app(self.runner, max_body_bytes=limit)
        config = uvicorn_config(app, host, self.port, log_level="warning", max_body_bytes=limit)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="modelpack-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 600.0) -> BackgroundServer:
        """Start, wait until listening and the model has loaded (or failed)."""
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.runner.loaded.wait(max(0.0, deadline - time.monotonic()))
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
