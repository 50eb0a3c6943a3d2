"""MCP over HTTP: modelpack's /mcp (the model server bridging to the model's FastMCP app on its
own event loop) vs the same FastMCP server's own streamable-HTTP app under uvicorn.

Both serve the `add` tool of examples/mcp-tools on loopback, in the same run, each in its own
process; the baseline runs in /mcp's own mode (sessions, SSE answers), and, for reference, in
the stateless JSON mode /mcp had before. The client (the `mcp` package) connects once and
calls the tool ``--calls`` times, sequentially; reported: calls per second (median of
``--rounds``, the servers interleaved) and modelpack's ratio to the baseline, with the spread.

    .venv/bin/python benchmarks/bench_mcp.py [--calls 300] [--rounds 5] [--before TREE]

``--before TREE``: also serve /mcp from another source tree of modelpack (e.g. ``git archive
main | tar -x -C /tmp/before``), interleaved in the same run, for a before/after ratio.
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


stateless = sys.argv[2] == "stateless"
app = server.http_app(path="/mcp", stateless_http=stateless, json_response=stateless)
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


def _model_server(example: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "modelpack.runtime",
        str(example),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    return subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=Path, default=None, help="another modelpack source tree")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = []
    script_path: str | None = None
    try:
        port_mp, port_base, port_json = free_port(), free_port(), free_port()
        example = REPO / "examples" / "mcp-tools"
        processes.append(_model_server(example, port_mp, env))
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
            script.write(BASELINE_PY)
            script_path = script.name
        for port, mode in ((port_base, "sessions"), (port_json, "stateless")):
            processes.append(
                subprocess.Popen([sys.executable, script.name, str(port), mode], stderr=subprocess.DEVNULL)
            )
        wait(f"http://127.0.0.1:{port_mp}/ready", processes[0])
        wait(f"http://127.0.0.1:{port_base}/mcp", processes[1])
        wait(f"http://127.0.0.1:{port_json}/mcp", processes[2])
        port_before = free_port()
        if args.before is not None:
            before_env = {**os.environ, "PYTHONPATH": str(args.before.resolve())}
            processes.append(_model_server(args.before / "examples" / "mcp-tools", port_before, before_env))
            wait(f"http://127.0.0.1:{port_before}/ready", processes[-1])
        ours, base, plain, earlier = [], [], [], []
        for _ in range(args.rounds):  # interleaved, so all see the same machine load
            ours.append(asyncio.run(calls_per_second(f"http://127.0.0.1:{port_mp}/mcp", args.calls)))
            if args.before is not None:
                url = f"http://127.0.0.1:{port_before}/mcp"
                earlier.append(asyncio.run(calls_per_second(url, args.calls)))
            base.append(asyncio.run(calls_per_second(f"http://127.0.0.1:{port_base}/mcp", args.calls)))
            plain.append(asyncio.run(calls_per_second(f"http://127.0.0.1:{port_json}/mcp", args.calls)))
        mp, bl, js = statistics.median(ours), statistics.median(base), statistics.median(plain)
        ratios = sorted(o / b for o, b in zip(ours, base, strict=True))
        print(f"modelpack /mcp          : {mp:8.1f} calls/s (median of {args.rounds} x {args.calls})")
        print(f"fastmcp, sessions + SSE : {bl:8.1f} calls/s (the baseline: /mcp's mode)")
        print(f"fastmcp, stateless JSON : {js:8.1f} calls/s (reference)")
        print(
            f"ratio                   : {mp / bl:8.2f}x of the baseline (per round {ratios[0]:.2f}-{ratios[-1]:.2f})"
        )
        if earlier:
            old = statistics.median(earlier)
            print(
                f"before ({args.before}) : {old:8.1f} calls/s = {old / bl:.2f}x the baseline, {old / js:.2f}x stateless"
            )
            print(f"after / before          : {mp / old:8.2f}x")
        return 0
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        if script_path is not None:
            os.unlink(script_path)


if __name__ == "__main__":
    sys.exit(main())
