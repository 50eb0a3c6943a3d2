"""A real `mcp` client in a process of its own, holding one session (with its GET stream) open
at ``/mcp``: a test stops it (SIGSTOP: it reads nothing more, its connections stay) or kills it
(SIGKILL: its connections close) as a client that went away would, or asks it for a call.

Run as ``python mcp_session_client.py URL TOOL JSON_ARGUMENTS``: it prints its session id, then
for each line read from stdin calls TOOL and prints the first text of the result (or the error).
`SessionClient` runs it from a test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LEGACY_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def room_within(url: str, seconds: float) -> bool:
    """Whether a session can be opened at ``url`` (a server that allows one: that one is free)
    within ``seconds``; polled by opening sessions, which touches no other. Deleted again."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = httpx.post(url, json=LEGACY_INIT, headers=ACCEPT, timeout=30)
        if answer.status_code == 200:
            httpx.delete(url, headers={"mcp-session-id": answer.headers["mcp-session-id"]}, timeout=30)
            return True
        assert answer.status_code == 503, answer.text
        time.sleep(0.3)
    return False


class SessionClient:
    """The script below in a child process; ``session`` is its MCP session id."""

    def __init__(self, url: str, tool: str, arguments: dict[str, object]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__)), url, tool, json.dumps(arguments)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.session = self._line()

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        assert line, f"the mcp client ended: {self.process.wait()}"
        return line

    def call(self) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write("call\n")
        self.process.stdin.flush()
        return self._line()

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


async def _serve(url: str, tool: str, arguments: dict[str, object]) -> None:
    import asyncio

    import httpx2
    import jsonschema  # noqa: F401  the client checks results with it: its import (seconds) now, not mid-session
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp_results import first_text  # beside this file: first on the path when run as a script

    sessions: list[str] = []

    async def keep_session(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            sessions.append(response.headers["mcp-session-id"])

    async with httpx2.AsyncClient(event_hooks={"response": [keep_session]}, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            await client.call_tool(tool, arguments)
            print(sessions[-1], flush=True)
            while await asyncio.to_thread(sys.stdin.readline):
                try:
                    result = await client.call_tool(tool, arguments)
                    print(first_text(result.content), flush=True)
                except Exception as error:
                    print(f"error: {error}", flush=True)


if __name__ == "__main__":
    import asyncio

    asyncio.run(_serve(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
