"""MCP models: a FastMCP server served at ``/mcp`` and through ``mcp_transport``.

`MCPModelClass`: the subclass returns a FastMCP server from ``get_server()``.
`StdioMCPModelClass`: the server is a proxy to a stdio MCP server started as a
child process from ``config.yaml``'s ``mcp_server: {command, args, env}``; the
``secrets`` entries reach it as environment variables of the running container.

The protocol itself is the library's: `MCPBridge` runs the server's
streamable-HTTP apps on an event loop of its own thread, so ``/mcp`` speaks
whatever protocol versions the installed ``fastmcp``/``mcp`` speak. ``/mcp`` is the
stateful app with SSE answers, each exchange streamed both ways (`MCPBridge.handle`):
clients of the 2026-07-28 protocol need no session but get a tool's progress and log
notifications; older clients get an ``Mcp-Session-Id`` (initialize → session; GET for
the server's stream; DELETE ends it) and with it elicitation and the session's state.
Sessions are bounded in number and idle time (`SessionLimits`; a GET stream is ended after
``stream_seconds``, so one that a gone client left open holds its session no longer; what the
session sends meanwhile is held by `mcp_events.SessionEvents` for the reopened stream); request
bodies by the model server's ``max_body_bytes`` before they reach the bridge (the library's own
cap is lifted).
``mcp_transport(msg)`` is one POST to a second, stateless app with JSON answers (one JSON-RPC
message in, its answer out). ``fastmcp`` is imported only when a model of these classes loads.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from modelpack.project.method_types import InputSpec, ToolSignature
from modelpack.runtime.mcp_events import SESSION, SessionEvents, SessionTag
from modelpack.runtime.model_class import ModelClass

log = logging.getLogger("modelpack.runtime.mcp")
T = TypeVar("T")

MCP_PATH = "/mcp"
_START_TIMEOUT = 120.0
_CALL_TIMEOUT = 600.0
MAX_SESSIONS_VARIABLE = "MODELPACK_MCP_MAX_SESSIONS"
SESSION_IDLE_VARIABLE = "MODELPACK_MCP_SESSION_IDLE_SECONDS"

ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]


class ASGIEndpoint:
    """A bound ASGI handler as a route's endpoint (a plain method would be taken for a
    request → response function, which cannot stream both ways)."""

    def __init__(self, handler: Callable[[Any, Receive, Send], Awaitable[None]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


@dataclass(frozen=True)
class SessionLimits:
    """How many MCP sessions may be open at once, and how long an idle one is kept: each
    holds a few streams and tasks, so neither may grow without bound."""

    max_sessions: int = 100
    idle_seconds: float = 600.0

    @property
    def stream_seconds(self) -> float:
        """How long a session's GET stream stays open before the bridge ends it (a live client
        reopens it at once): the library counts an open GET stream as a request in flight, so
        a client that is gone without closing it (it stopped reading, or its network did) would
        hold its session for good. Half the idle time: such a session is closed at most
        1.5 × ``idle_seconds`` after its client's last request."""
        return self.idle_seconds / 2

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SessionLimits:
        """``MODELPACK_MCP_MAX_SESSIONS`` / ``MODELPACK_MCP_SESSION_IDLE_SECONDS``; bad values fall back."""
        default = cls()
        count, idle = environ.get(MAX_SESSIONS_VARIABLE, ""), environ.get(SESSION_IDLE_VARIABLE, "")
        max_sessions = int(count) if count.isdigit() and int(count) > 0 else default.max_sessions
        try:
            idle_seconds = float(idle) if idle else default.idle_seconds
        except ValueError:
            idle_seconds = default.idle_seconds
        if not 0 < idle_seconds < float("inf"):
            idle_seconds = default.idle_seconds
        return cls(max_sessions, idle_seconds)


@dataclass(frozen=True)
class HTTPAnswer:
    """What the MCP app answered to one forwarded request."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class MCPBridge:
    """A FastMCP server's HTTP app on a private event loop, reachable from any thread or loop."""

    def __init__(self, server: Any, limits: SessionLimits | None = None) -> None:
        self.server = server
        self.limits = limits if limits is not None else SessionLimits.from_env(os.environ)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._client: Any = None
        self._app: Any = None  # the stateful app of /mcp
        self.events = SessionEvents()  # its sessions' GET-stream messages, for a reopened stream

    def start(self, timeout: float = _START_TIMEOUT) -> MCPBridge:
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="modelpack-mcp", daemon=True)
        self._thread.start()
        ready.result(timeout=timeout)  # re-raises a start-up failure (e.g. the stdio server died)
        return self

    def _run(self, ready: Future[None]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as error:  # reported to start(); nothing else waits for this thread
            if not ready.done():
                ready.set_exception(error)
        finally:
            loop.close()

    async def _serve(self, ready: Future[None]) -> None:
        import httpx

        make = self.server.http_app
        options = {
            **_SESSION_APP,
            "session_idle_timeout": self.limits.idle_seconds,
            "event_store": self.events,
        }
        sessions = make(**_supported(make, options))
        single = make(**_supported(make, _TRANSPORT_APP))
        self._stop = asyncio.Event()
        async with sessions.router.lifespan_context(sessions), single.router.lifespan_context(single):
            _limit_sessions(sessions, self.limits.max_sessions)
            for app in (sessions, single):
                _lift_body_cap(app)
            transport = httpx.ASGITransport(app=single)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                self._client, self._app = client, sessions
                ready.set_result(None)
                await self._stop.wait()

    def _submit(self, coroutine: Any) -> Future[Any]:
        if self._loop is None or self._client is None:
            coroutine.close()
            raise RuntimeError("the MCP server is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _request(self, method: str, headers: Sequence[tuple[str, str]], body: bytes) -> HTTPAnswer:
        response = await self._client.request(method, MCP_PATH, headers=list(headers), content=body)
        return HTTPAnswer(response.status_code, tuple(response.headers.multi_items()), response.content)

    async def handle(self, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        """One HTTP exchange at ``/mcp`` (ASGI, on the model server's loop), run by the session
        app on the bridge's loop and streamed both ways: an SSE answer's progress notifications,
        a session's GET stream and a server request to the client flow as they happen."""
        caller = asyncio.get_running_loop()
        started = False
        headers = list(scope.get("headers") or ())
        tag = SessionTag(_header(headers, b"mcp-session-id"))
        resend = asyncio.Event()  # a GET stream sent an event after one that never went out

        async def bridged_receive() -> ASGIMessage:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_awaited(receive()), caller))

        async def bridged_send(message: ASGIMessage) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
                tag.session_id = tag.session_id or _header(message.get("headers") or (), b"mcp-session-id")
            elif scope.get("method") == "GET" and self.events.forwarded(_event_ids(message.get("body", b""))):
                resend.set()
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_awaited(send(message)), caller))

        inner = {k: v for k, v in scope.items() if k not in _ROUTING_KEYS}
        inner.update(path=MCP_PATH, raw_path=MCP_PATH.encode(), root_path="")

        async def run() -> bool:  # on the bridge's loop, where the event store lives
            SESSION.set(tag)  # for the store; the tasks this starts (an opening request's session) keep it
            if scope.get("method") != "GET":
                await self._app(inner, bridged_receive, bridged_send)
                return True
            inner.update(headers=self._resumed(headers, tag))
            # a session's stream: ended after stream_seconds
            return await _within(
                self._app(inner, bridged_receive, bridged_send), self.limits.stream_seconds, resend
            )

        try:
            finished = await asyncio.wrap_future(self._submit(run()))
        except Exception:
            if not started:
                raise  # nothing was sent: the model server answers it, as any route's error
            log.exception("MCP request failed")
            return
        if finished is False and started:
            await _end_stream(send)

    def _resumed(self, headers: list[tuple[bytes, bytes]], tag: SessionTag) -> list[tuple[bytes, bytes]]:
        """A GET stream reopened without ``Last-Event-ID`` (the client had no event with an id yet)
        while messages are held for its session: resumed from before them, so they are sent."""
        if tag.session_id is None or _header(headers, b"last-event-id") is not None:
            return headers
        cursor = self.events.first_cursor(tag.session_id)
        return headers if cursor is None else [*headers, (b"last-event-id", cursor.encode())]

    def transport(self, message: str) -> str:
        """One JSON-RPC message in, its JSON-RPC answer out (``{}`` for a notification)."""
        headers = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")]
        protocol = _protocol_version(message)
        if protocol:
            headers.append(("mcp-protocol-version", protocol))
        answer = self._submit(self._request("POST", headers, message.encode("utf-8"))).result(_CALL_TIMEOUT)
        text = answer.body.decode("utf-8")
        content_type = dict(answer.headers).get("content-type", "")
        if "text/event-stream" in content_type:  # the last data event carries the answer
            events = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
            text = events[-1] if events else ""
        return text if text.strip() else "{}"

    def tools(self) -> tuple[ToolSignature, ...]:
        """The server's tools, as the signature reports them."""

        async def listed() -> Any:
            return await self.server.list_tools()

        found = self._submit(listed()).result(_CALL_TIMEOUT)
        return tuple(tool_signature(t.name, t.description or "", _parameters(t)) for t in found)

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._client = None


_SESSION_APP: dict[str, Any] = {
    "path": MCP_PATH,
    "stateless_http": False,  # sessions for the clients that open one (pre-2026-07-28)
    "json_response": False,  # SSE answers: notifications and server requests ride them
    "host_origin_protection": False,  # the model server is a network service, not a desktop tool
}
_TRANSPORT_APP: dict[str, Any] = {
    "path": MCP_PATH,
    "stateless_http": True,  # one request, one answer: what mcp_transport needs
    "json_response": True,
    "host_origin_protection": False,
}
# what the model server's router put in the scope: the MCP app routes on its own
_ROUTING_KEYS = frozenset(
    {"app", "router", "endpoint", "path_params", "route", "state", "starlette.exception_handlers"}
)


def _session_manager(app: Any) -> Any:
    for route in getattr(app, "routes", ()):
        manager = getattr(getattr(route, "endpoint", None), "session_manager", None)
        if manager is not None:
            return manager
    return None


def _limit_sessions(app: Any, max_sessions: int) -> None:
    """The session cap of the app's session manager (``http_app`` takes only the idle time)."""
    manager = _session_manager(app)
    if manager is not None and hasattr(manager, "max_sessions"):
        manager.max_sessions = max_sessions
        return
    log.warning("the MCP library has no session cap; sessions are bounded by idle time only")


def _lift_body_cap(app: Any) -> None:
    """The library refuses bodies over its own size (4 MiB in mcp 2.x) with a text 413 that
    ``http_app`` cannot change: every body that reaches the bridge was bounded by the model
    server already (``/mcp`` and ``mcp_transport``'s POST), so ``max_body_bytes`` alone decides,
    with the server's error."""
    guard: Any = getattr(_session_manager(app), "asgi_app", None)
    if hasattr(guard, "max_body_size"):
        guard.max_body_size = sys.maxsize


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    return next((value.decode("latin-1") for key, value in headers if key.lower() == name), None)


async def _within(call: Awaitable[None], seconds: float, cut: asyncio.Event) -> bool:
    """Run ``call`` for at most ``seconds``, or until ``cut`` is set (then cancelled: the
    library's handler of the stream ends, and its session's idle clock starts); False when it
    was cut."""
    running = asyncio.ensure_future(call)
    cutting = asyncio.ensure_future(cut.wait())
    try:
        await asyncio.wait((running, cutting), timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        cutting.cancel()
        if not running.done():
            running.cancel()
    try:
        await running
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # type: ignore[union-attr]  # we are cancelled ourselves
            raise
        return False
    return True


_EVENT_ID = re.compile(rb"^id: ?(\S+)", re.MULTILINE)


def _event_ids(body: bytes) -> list[str]:
    """The ids of the SSE events in a chunk of a GET stream."""
    return [found.decode("latin-1") for found in _EVENT_ID.findall(body)] if b"id:" in body else []


_RECONNECT = b"retry: 100\n\n"  # an SSE event without data: the client reopens the stream in 0.1 s
_END_GRACE = 5.0


_DROPPED = ContextVar("modelpack_mcp_stream_dropped", default=False)


async def _end_stream(send: Send) -> None:
    """The end of a GET stream the bridge cut, with a reconnection delay for a live client. A
    client that stopped reading takes none of it once its buffers are full: after `_END_GRACE`
    the response is left unfinished, and the server drops the connection (ASGI has no other
    way to drop one; `DroppedStreamNote` keeps the server from reporting it as an error)."""
    try:
        await asyncio.wait_for(
            send({"type": "http.response.body", "body": _RECONNECT, "more_body": True}), _END_GRACE
        )
        await asyncio.wait_for(send({"type": "http.response.body", "body": b""}), _END_GRACE)
    except asyncio.TimeoutError:
        _DROPPED.set(True)  # in the server's task of this request, which logs after the app returns
        log.warning("an MCP client stopped reading its GET stream: its connection is dropped")


class DroppedStreamNote(logging.Filter):
    """uvicorn logs an error ("ASGI callable returned without completing response") for each
    answer an app leaves unfinished, then drops the connection. For a GET stream whose client
    stopped reading that drop is the bridge's intent and the bridge logged it (a warning), so
    that one line goes; any other unfinished answer, and any exception, is still an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        expected = _DROPPED.get() and record.exc_info is None
        return not (expected and "without completing response" in record.getMessage())


def quiet_dropped_streams(server_log: logging.Logger) -> None:
    """Install `DroppedStreamNote` on uvicorn's error log (once)."""
    if not any(isinstance(f, DroppedStreamNote) for f in server_log.filters):
        server_log.addFilter(DroppedStreamNote())


def _supported(func: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options ``func`` accepts (fastmcp 3 and 4 differ)."""
    accepted = inspect.signature(func).parameters
    return {name: value for name, value in options.items() if name in accepted}


def _protocol_version(message: str) -> str | None:
    try:
        payload = json.loads(message)
    except ValueError:
        return None
    params = payload.get("params") if isinstance(payload, dict) else None
    version = params.get("protocolVersion") if isinstance(params, dict) else None
    return version if isinstance(version, str) else None


def _parameters(tool: Any) -> dict[str, Any]:
    for name in ("parameters", "input_schema", "inputSchema"):
        value = getattr(tool, name, None)
        if isinstance(value, dict):
            return value
    return {}


_JSON_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}


def schema_type(schema: Mapping[str, Any]) -> str:
    """The canonical type string of a JSON schema (as pydantic writes a tool's parameters)."""
    members = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(members, list):
        names = list(dict.fromkeys(schema_type(m) for m in members if isinstance(m, Mapping)))
        rest = [n for n in names if n != "None"]
        core = rest[0] if len(rest) == 1 else f"Union[{', '.join(rest)}]" if rest else "None"
        return f"Optional[{core}]" if "None" in names and rest else core
    kind = schema.get("type")
    if isinstance(kind, list):
        return schema_type({"anyOf": [{**schema, "type": k} for k in kind]})
    if kind == "array":
        items = schema.get("items")
        return f"List[{schema_type(items) if isinstance(items, Mapping) else 'Any'}]"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"Dict[str, {schema_type(extra) if isinstance(extra, Mapping) and extra else 'Any'}]"
    if isinstance(kind, str) and kind in _JSON_TYPES:
        return _JSON_TYPES[kind]
    if "enum" in schema:
        values = schema["enum"]
        kinds = {type(v) for v in values} if isinstance(values, list) else set()
        if kinds == {str}:
            return "str"
    return "Any"


def tool_signature(name: str, description: str, parameters: Mapping[str, Any]) -> ToolSignature:
    properties = parameters.get("properties") or {}
    required = set(parameters.get("required") or ())
    inputs = []
    for pname, schema in properties.items():
        schema = schema if isinstance(schema, Mapping) else {}
        choices = schema.get("enum")
        inputs.append(
            InputSpec(
                name=str(pname),
                type=schema_type(schema),
                required=pname in required,
                default=schema.get("default") if pname not in required else None,
                description=str(schema.get("description") or ""),
                min_value=schema.get("minimum"),
                max_value=schema.get("maximum"),
                choices=list(choices) if isinstance(choices, list) else None,
            )
        )
    return ToolSignature(name=name, description=description.strip(), inputs=tuple(inputs))


class MCPModelClass(ModelClass):
    """A model that is an MCP server: return a FastMCP server from `get_server`."""

    SDK_METHODS = ("mcp_transport",)
    _mcp_bridge: MCPBridge | None = None

    def get_server(self) -> Any:
        """The ``fastmcp.FastMCP`` server whose tools this model serves."""
        raise NotImplementedError("an MCPModelClass must implement get_server()")

    def load_model(self) -> None:
        self.mcp_bridge()

    def mcp_bridge(self) -> MCPBridge:
        """The running bridge (started on first use, so an overridden load_model needs no super())."""
        if self._mcp_bridge is None:
            self._mcp_bridge = MCPBridge(self.get_server()).start()
        return self._mcp_bridge

    def running_bridge(self) -> MCPBridge | None:
        """The bridge if it is started (no thread hop needed to get it), else None."""
        return self._mcp_bridge

    def mcp_tools(self) -> tuple[ToolSignature, ...]:
        return self.mcp_bridge().tools()

    @ModelClass.method
    def mcp_transport(self, msg: str) -> str:
        """One MCP JSON-RPC message in, its JSON-RPC answer out."""
        return self.mcp_bridge().transport(msg)

    def shutdown(self) -> None:
        if self._mcp_bridge is not None:
            self._mcp_bridge.stop()
            self._mcp_bridge = None


@dataclass(frozen=True)
class StdioServerSpec:
    """``mcp_server`` of config.yaml, with the secrets it receives from the environment."""

    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]


def read_stdio_spec(model_dir: Path, environ: Mapping[str, str]) -> StdioServerSpec:
    """The stdio server to start: ``mcp_server`` plus the ``secrets`` present in ``environ``."""
    import yaml

    path = model_dir / "config.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    section = data.get("mcp_server") if isinstance(data, dict) else None
    if not isinstance(section, dict) or not isinstance(section.get("command"), str):
        raise ValueError(f"{path}: a StdioMCPModelClass needs mcp_server.command")
    args = section.get("args") or []
    args = [args] if isinstance(args, str) else args
    env = {str(k): str(v) for k, v in (section.get("env") or {}).items()}
    assert isinstance(data, dict)  # a dict holds the mcp_server section read above
    for secret in data.get("secrets") or []:
        name = secret.get("env_var") if isinstance(secret, dict) else None
        if isinstance(name, str) and name in environ:
            env[name] = environ[name]
    return StdioServerSpec(section["command"], tuple(str(a) for a in args), tuple(sorted(env.items())))


def _child_environment(spec: StdioServerSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """PATH/HOME and friends from the container, then the configured variables and secrets."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "NODE_PATH", "NPM_CONFIG_CACHE", "SSL_CERT_FILE")
    base = {k: environ[k] for k in keep if k in environ}
    return {**base, **dict(spec.env)}


class StdioMCPModelClass(MCPModelClass):
    """A stdio MCP server (``mcp_server`` in config.yaml) bridged to ``/mcp`` and ``mcp_transport``."""

    _stdio_server: Any = None

    def model_dir(self) -> Path:
        """The model directory: the parent of the folder holding the class's file (``1/``)."""
        return Path(inspect.getfile(type(self))).resolve().parent.parent

    def get_server(self) -> Any:
        if self._stdio_server is None:
            from fastmcp.client.transports import StdioTransport
            from fastmcp.server import create_proxy

            spec = read_stdio_spec(self.model_dir(), os.environ)
            log.info("starting the stdio MCP server: %s %s", spec.command, " ".join(spec.args))
            command, args = _installed_npx(spec, os.environ.get("MODELPACK_NODE_DIR"))
            transport = StdioTransport(
                command=_interpreter(command),
                args=list(args),
                env=_child_environment(spec, os.environ),
                cwd=str(self.model_dir()),
            )
            # the child negotiates its own protocol version ("auto"), whatever era a client speaks
            options = _supported(create_proxy, {"mode": "auto"})
            self._stdio_server = create_proxy(transport, name=type(self).__name__, **options)
        return self._stdio_server

    def load_model(self) -> None:
        super().load_model()
        if not self.mcp_tools():  # the proxy only logs a child that failed: fail the load instead
            raise RuntimeError("the stdio MCP server listed no tools (see its output above)")


def _installed_npx(spec: StdioServerSpec, node_dir: str | None) -> tuple[str, tuple[str, ...]]:
    """``npx [-y] PACKAGE ARGS`` → ``node BIN ARGS`` when the image installed PACKAGE (no network)."""
    if node_dir is None or Path(spec.command).name != "npx":
        return spec.command, spec.args
    position = next((i for i, a in enumerate(spec.args) if not a.startswith("-")), None)
    if position is None or any(a not in ("-y", "--yes") for a in spec.args[:position]):
        return spec.command, spec.args  # npx options we do not model: let npx run
    package = spec.args[position]
    name = package if not package[1:].count("@") else package[: package.rindex("@")]  # drop @version
    manifest = Path(node_dir) / "lib" / "node_modules" / name / "package.json"
    if not manifest.is_file():
        return spec.command, spec.args
    bins = json.loads(manifest.read_text(encoding="utf-8")).get("bin")
    if isinstance(bins, dict):
        bins = bins.get(name.rsplit("/", 1)[-1]) or next(iter(bins.values()), None)
    if not isinstance(bins, str):
        return spec.command, spec.args
    after = spec.args[position + 1 :]
    return str(Path(node_dir) / "bin" / "node"), (str(manifest.parent / bins), *after)


def _interpreter(command: str) -> str:
    """``python``/``python3`` is the model's own Python (the image's venv), not whatever PATH finds first."""
    return sys.executable if command in ("python", "python3") else command
