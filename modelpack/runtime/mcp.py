"""MCP models: a FastMCP server served at ``/mcp`` and through ``mcp_transport``.

`MCPModelClass`: the subclass returns a FastMCP server from ``get_server()``.
`StdioMCPModelClass`: the server is a proxy to a stdio MCP server started as a
child process from ``config.yaml``'s ``mcp_server: {command, args, env}``; the
``secrets`` entries reach it as environment variables of the running container.

The protocol itself is the library's: `MCPBridge` runs the server's
streamable-HTTP app (stateless, JSON answers) on an event loop of its own thread
and forwards HTTP requests to it, so ``/mcp`` speaks whatever protocol versions
the installed ``fastmcp``/``mcp`` speak, and ``mcp_transport(msg)`` is one such
POST (one JSON-RPC message in, its answer out). ``fastmcp`` is imported only
when a model of these classes loads.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpack.project.method_types import InputSpec, ToolSignature
from modelpack.runtime.model_class import ModelClass

log = logging.getLogger("modelpack.runtime.mcp")

MCP_PATH = "/mcp"
_START_TIMEOUT = 120.0
_CALL_TIMEOUT = 600.0


@dataclass(frozen=True)
class HTTPAnswer:
    """What the MCP app answered to one forwarded request."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class MCPBridge:
    """A FastMCP server's HTTP app on a private event loop, reachable from any thread or loop."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._client: Any = None

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

        app = self.server.http_app(**_supported(self.server.http_app, _APP_OPTIONS))
        self._stop = asyncio.Event()
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                self._client = client
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

    async def forward(self, method: str, headers: Sequence[tuple[str, str]], body: bytes) -> HTTPAnswer:
        """Answer one HTTP request to ``/mcp`` (called from the model server's loop)."""
        return await asyncio.wrap_future(self._submit(self._request(method, headers, body)))

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


_APP_OPTIONS: dict[str, Any] = {
    "path": MCP_PATH,
    "stateless_http": True,  # one request, one answer: what mcp_transport and replicas need
    "json_response": True,
    "host_origin_protection": False,  # the model server is a network service, not a desktop tool
}


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
    import sys

    return sys.executable if command in ("python", "python3") else command
