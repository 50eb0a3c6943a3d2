"""An HTTP server on 127.0.0.1 for the loopback stand-ins of the tests (indexes, registries, hubs,
model backends): an ephemeral port unless one is given, served in a daemon thread, and shut down
and closed after, so no test leaves a listening socket or a thread behind.

`tests/` is on sys.path under pytest (`pythonpath` in pyproject.toml): `from loopback import ...`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` (a loopback address) that nothing listens on right now, for a server
    another process starts (it cannot be handed a bound socket)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output free of one access-log line per request."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(
        self,
        body: bytes,
        content_type: str = "application/json",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """One whole answer: status, headers with the body's length, then the body."""
        self.send_response(status)
        for name, value in {"Content-Type": content_type, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class LoopbackServer:
    """`handler` served on 127.0.0.1 while the `with` block runs (or between start and stop)."""

    def __init__(self, handler: Callable[..., BaseHTTPRequestHandler], port: int = 0) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        # a short poll: shutdown() returns within 50 ms instead of the default half second
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
