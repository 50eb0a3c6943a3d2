"""MCP over HTTP: modelpack's /mcp (the model server bridging to the model's FastMCP app on its
own event loop) vs the same FastMCP server's own streamable-HTTP app under uvicorn.

Both serve the `add` tool of examples/mcp-tools, stateless with JSON answers, on loopback, in
the same run, each in its own process. The client (the `mcp` package) opens one session and
calls the tool ``--calls`` times, sequentially; reported: calls per second (median of
``--rounds``) and modelpack's ratio to the baseline.

    .venv/bin/python benchmarks/bench_mcp.py [--calls 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BASELINE_PY = """
import sys
from typing import Annotated

import uvicorn
from fastmcp import FastMCP
from pydantic import Field

server = FastMCP("text-tools")


@server.tool("add", description="Add two numbers.")
def add(a: Annotated[float, Field(description="First number")], b: Annotated[float, Field(description="Second number")]) -> float:
    return a + b


app = server.http_app(path="/mcp", stateless_http=True, json_response=True)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


async def calls_per_second(url: str, calls: int) -> float:
    from mcp import Client

    async with Client(url) as client:
        await client.call_tool("add", {"a": 1, "b": 2})  # warm-up
        start = time.perf_counter()
        for i in range(calls):
            await client.call_tool("add", {"a": i, "b": 1})
        return calls / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = []
    script_path: str | None = None
    try:
        port_mp, port_base = free_port(), free_port()
        example = REPO / "examples" / "mcp-tools"
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelpack.runtime",
                    str(example),
                    "--port",
                    str(port_mp),
                    "--host",
                    "127.0.0.1",
                ],
                env=env,
                stderr=subprocess.DEVNULL,
            )
        )
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
            script.write(BASELINE_PY)
            script_path = script.name
        processes.append(
            subprocess.Popen([sys.executable, script.name, str(port_base)], stderr=subprocess.DEVNULL)
        )
        wait(f"http://127.0.0.1:{port_mp}/ready", processes[0])
        wait(f"http://127.0.0.1:{port_base}/mcp", processes[1])
        ours, base = [], []
        for _ in range(args.rounds):  # interleaved, so both see the same machine load
            ours.append(asyncio.run(calls_per_second(f"http://127.0.0.1:{port_mp}/mcp", args.calls)))
            base.append(asyncio.run(calls_per_second(f"http://127.0.0.1:{port_base}/mcp", args.calls)))
        mp, bl = statistics.median(ours), statistics.median(base)
        print(f"modelpack /mcp : {mp:8.1f} calls/s (median of {args.rounds} x {args.calls})")
        print(f"fastmcp http   : {bl:8.1f} calls/s")
        print(f"ratio          : {mp / bl:8.2f}x of the baseline")
        return 0
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        if script_path is not None:
            os.unlink(script_path)


if __name__ == "__main__":
    sys.exit(main())
