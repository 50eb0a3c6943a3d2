"""Model server overhead: modelpack's runtime vs a minimal hand-written Starlette app.

Both serve the same trivial model code (a unary ``predict(x) -> x + 1`` run in the
thread pool, and a streaming method yielding 5 items) with the same uvicorn
settings, on loopback, in the same run. Reported: requests per second and
p50/p99 latency for the unary method under concurrency, and first-token latency
of the streaming method (sequential). Target: modelpack >= 90% of the baseline's
throughput. Bounded in count (``--requests``) and time (``--time-limit``).

    .venv/bin/python benchmarks/bench_server.py [--requests 3000] [--concurrency 32] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

MODEL_PY = """
from typing import Iterator
from modelpack.runtime import ModelClass


class Bench(ModelClass):
    @ModelClass.method
    def predict(self, x: int) -> int:
        return x + 1

    @ModelClass.method
    def stream(self, n: int = 5) -> Iterator[int]:
        for i in range(n):
            yield i
"""

BASELINE_PY = """
import json, sys
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


def predict(x):
    return x + 1


def stream(n=5):
    for i in range(n):
        yield i


async def predict_endpoint(request):
    body = await request.json()
    return JSONResponse({"result": await run_in_threadpool(predict, **body)})


async def stream_endpoint(request):
    body = await request.json()

    async def events():
        async for item in iterate_in_threadpool(stream(**body)):
            yield "data: " + json.dumps({"result": item}) + "\\n\\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def ready(request):
    return JSONResponse({"status": "ready"})


app = Starlette(routes=[
    Route("/v1/methods/predict", predict_endpoint, methods=["POST"]),
    Route("/v1/methods/stream", stream_endpoint, methods=["POST"]),
    Route("/ready", ready),
])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
            timeout_graceful_shutdown=30, lifespan="on")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not become ready")


def request_bytes(path: str, body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return head.encode() + f"Content-Length: {len(data)}\r\n\r\n".encode() + data


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, await reader.readexactly(length)


async def unary_load(port: int, total: int, concurrency: int) -> tuple[float, list[float]]:
    """Closed-loop load over keep-alive connections; checks every answer."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for index in counter:
                start = time.perf_counter()
                writer.write(request_bytes("/v1/methods/predict", {"x": index}))
                status, body = await read_response(reader)
                latencies.append(time.perf_counter() - start)
                if status != 200 or json.loads(body) != {"result": index + 1}:
                    raise SystemExit(f"wrong answer: {status} {body!r}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    if len(latencies) != total:
        raise SystemExit(f"lost requests: {total - len(latencies)}")
    return total / elapsed, latencies


async def first_token(port: int, count: int) -> list[float]:
    """Sequential streaming calls: time to the first ``data:`` event."""
    times = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.perf_counter()
        writer.write(request_bytes("/v1/methods/stream", {"n": 5}))
        buffer = b""
        while b"data:" not in buffer:
            chunk = await reader.read(4096)
            if not chunk:
                raise SystemExit("stream ended before the first item")
            buffer += chunk
        times.append(time.perf_counter() - start)
        while not buffer.endswith(b"0\r\n\r\n"):
            chunk = await reader.read(4096)
            if not chunk:
                break
            buffer += chunk
        writer.close()
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream-requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per server; best is kept")
    parser.add_argument("--time-limit", type=float, default=300.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    (work / "model" / "1").mkdir(parents=True)
    (work / "model" / "1" / "model.py").write_text(MODEL_PY)
    (work / "baseline.py").write_text(BASELINE_PY)
    ports = {"baseline": free_port(), "modelpack": free_port()}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    commands = {
        "baseline": [sys.executable, str(work / "baseline.py"), str(ports["baseline"])],
        "modelpack": [
            sys.executable,
            "-m",
            "modelpack.runtime",
            str(work / "model"),
            "--host",
            "127.0.0.1",
            "--port",
            str(ports["modelpack"]),
        ],
    }
    processes = {
        name: subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, command in commands.items()
    }
    deadline = time.monotonic() + args.time_limit
    results: dict[str, dict[str, float]] = {name: {} for name in processes}
    try:
        for name, port in ports.items():
            wait_ready(port, processes[name])
            asyncio.run(unary_load(port, min(300, args.requests), args.concurrency))  # warm-up
        for _ in range(args.rounds):
            for name, port in ports.items():
                if time.monotonic() > deadline:
                    break
                rps, latencies = asyncio.run(unary_load(port, args.requests, args.concurrency))
                tokens = asyncio.run(first_token(port, args.stream_requests))
                best = results[name]
                if rps > best.get("rps", 0):
                    best.update(rps=rps, p50=percentile(latencies, 0.5), p99=percentile(latencies, 0.99))
                ttft = statistics.median(tokens)
                best["ttft"] = min(best.get("ttft", ttft), ttft)
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(30)

    print(
        f"unary: {args.requests} requests x {args.rounds} rounds, {args.concurrency} concurrent; "
        f"stream: {args.stream_requests} sequential calls (median first-token latency)"
    )
    print(f"{'server':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'first-token ms':>15}")
    for name in ("baseline", "modelpack"):
        r = results[name]
        print(
            f"{name:<10} {r['rps']:>9.0f} {r['p50'] * 1e3:>8.2f} {r['p99'] * 1e3:>8.2f} {r['ttft'] * 1e3:>15.2f}"
        )
    ratio = results["modelpack"]["rps"] / results["baseline"]["rps"]
    ttft_ratio = results["modelpack"]["ttft"] / results["baseline"]["ttft"]
    print(
        f"throughput ratio modelpack/baseline: {ratio:.2f} (target >= 0.90: {'met' if ratio >= 0.9 else 'NOT met'})"
    )
    print(f"first-token latency ratio modelpack/baseline: {ttft_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
