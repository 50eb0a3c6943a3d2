"""End to end: `modelpack serve` / `python -m modelpack.runtime` on loopback, called over
real sockets with the modelpack client, raw HTTP, WebSockets and the official `openai` package."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback import LoopbackServer, QuietHandler, free_port

from modelpack.runtime.client import Model, ModelCallError

MODELS = Path(__file__).resolve().parent.parent / "unit" / "test_runtime_models"


class Served:
    """A server process for a model directory on a free loopback port."""

    def __init__(self, model_dir: Path, *extra: str, env: dict[str, str] | None = None, module: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, **(env or {})}
        if module:  # the image's entry point: port from $PORT
            environment["PORT"] = str(self.port)
            command = [
                sys.executable,
                "-m",
                "modelpack.runtime",
                str(model_dir),
                "--host",
                "127.0.0.1",
                *extra,
            ]
        else:
            command = [
                sys.executable,
                "-m",
                "modelpack",
                "serve",
                str(model_dir),
                "--port",
                str(self.port),
                *extra,
            ]
        self.process = subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def wait_ready(self, timeout: float = 60.0) -> Served:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not become ready")

    def output(self) -> str:
        return self.process.stdout.read() if self.process.stdout and self.process.poll() is not None else ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def kitchen() -> Iterator[Served]:
    served = Served(MODELS / "kitchen", "--max-body-bytes", "65536").wait_ready()
    yield served
    assert served.stop() == 0


def test_every_method_kind_with_the_client(kitchen: Served) -> None:
    with Model(kitchen.url) as model:
        assert {"predict", "count", "upper", "double", "async_count"} <= set(model.available_methods())
        assert model.method_signature("predict").startswith(
            "predict(prompt: str, n: int = 1, mode: str = 'plain', suffix: Optional[str] = None) -> str"
        )
        assert model.predict(prompt="ab", n=2) == "abab"
        assert model.predict([{"prompt": "a"}, {"prompt": "b", "mode": "upper"}]) == ["a", "B"]
        assert list(model.count(prompt="w", count=3)) == ["w0", "w1", "w2"]
        assert list(model.async_count(count=3)) == [0, 1, 2]
        assert list(model.upper(chunks=iter(["a", "b", "c"]), suffix="!")) == ["A!", "B!", "C!"]
        assert list(model.upper(chunks=["x"])) == ["X"]  # a list goes over POST
        assert model.double(x=1.5) == 3.0
        assert model.double([{"x": 1}, {"x": 2}]) == [2.0, 4.0]
        assert model.async_echo(text="hey") == "hey"
        from modelpack.runtime import Image

        assert model.media(image=Image(bytes=b"123"), text="t")["image_bytes"] == 3
        with pytest.raises(ModelCallError) as info:
            model.predict(prompt=3)
        assert info.value.status == 422 and info.value.exit_code == 2
        with pytest.raises(ModelCallError) as info:
            model.fail(message="x")
        assert info.value.status == 500 and info.value.exit_code == 1
        with pytest.raises(ModelCallError, match="stream broke"):
            list(model.fail_stream(after=1))
        with pytest.raises(ModelCallError, match="'chunks'"):
            list(model.upper(chunks=iter([1])))
        script = model.generate_client_script()
        compile(script, "client.py", "exec")
        assert "model.upper(chunks=iter([" in script


def test_generated_client_script_runs(tmp_path: Path) -> None:
    from modelpack.resources import data_dir

    example = data_dir("examples").joinpath("hello")
    target = tmp_path / "hello"
    (target / "1").mkdir(parents=True)
    (target / "1" / "model.py").write_text(example.joinpath("1", "model.py").read_text())
    served = Served(target).wait_ready()
    try:
        with Model(served.url) as model:
            script = model.generate_client_script()
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "HELLO" in result.stdout
    finally:
        assert served.stop() == 0


def test_predict_command_against_url_and_directory(kitchen: Served) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "modelpack", "predict", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    result = run(kitchen.url, "predict", "--input", "prompt=42", "--input", "n=2")
    assert (result.returncode, result.stdout) == (0, "4242\n")
    result = run(str(MODELS / "kitchen"), "count", "-i", "prompt=z", "-i", "count=2", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"method": "count", "results": ["z0", "z1"]}
    result = run(kitchen.url, "predict", "-i", "n=2")
    assert result.returncode == 2 and "missing required argument 'prompt'" in result.stderr
    assert "Traceback" not in result.stderr
    result = run(kitchen.url, "nosuch")
    assert result.returncode == 2 and "no method 'nosuch'" in result.stderr
    result = run("http://127.0.0.1:9", "predict")
    assert result.returncode == 1 and "cannot reach" in result.stderr


def test_disconnect_mid_stream_closes_the_generator(kitchen: Served) -> None:
    before = httpx.post(kitchen.url + "/v1/methods/closed_streams", json={}).json()["result"]
    with socket.create_connection(("127.0.0.1", kitchen.port)) as sock:
        body = json.dumps({"prompt": "s", "count": 100000, "delay": 0.01}).encode()
        sock.sendall(
            b"POST /v1/methods/count HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while received.count(b"data:") < 3:
            received += sock.recv(4096)
    deadline = time.monotonic() + 30
    after = before
    while time.monotonic() < deadline:
        after = httpx.post(kitchen.url + "/v1/methods/closed_streams", json={}).json()["result"]
        if after["count"] > before["count"]:
            break
        time.sleep(0.05)
    assert after["count"] == before["count"] + 1, "the generator was not closed after the client left"
    assert after["produced"] - before["produced"] < 100000
    assert httpx.get(kitchen.url + "/health").status_code == 200


def test_bad_input_leaves_the_server_healthy(kitchen: Served) -> None:
    url = kitchen.url + "/v1/methods/predict"
    assert httpx.post(url, content=b"{oops").status_code == 400
    assert httpx.post(url, json={"prompt": ["x"]}).status_code == 422
    assert httpx.post(url, content=b"[" * 10000).status_code in (400, 422)
    huge = httpx.post(url, content=b'{"prompt": "' + b"x" * 200_000 + b'"}')
    assert huge.status_code == 413
    with socket.create_connection(("127.0.0.1", kitchen.port)) as sock:  # not HTTP at all
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        sock.recv(1024)
    with socket.create_connection(("127.0.0.1", kitchen.port)) as sock:  # a body that never arrives
        sock.sendall(b"POST /v1/methods/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    assert httpx.post(url, json={"prompt": "still"}).json() == {"result": "still"}
    assert httpx.get(kitchen.url + "/ready").status_code == 200


def test_bounded_load_loses_no_request(kitchen: Served) -> None:
    total, concurrency = 2000, 32

    async def run() -> list[tuple[int, Any]]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=kitchen.url, limits=limits, timeout=60) as client:
            semaphore = asyncio.Semaphore(concurrency)

            async def one(index: int) -> tuple[int, Any]:
                async with semaphore:
                    method = "double" if index % 4 == 0 else "square"
                    response = await client.post(f"/v1/methods/{method}", json={"x": index})
                    return response.status_code, response.json()

            return await asyncio.gather(*(one(i) for i in range(total)))

    results = asyncio.run(run())
    assert len(results) == total
    for index, (status, body) in enumerate(results):
        assert status == 200
        assert body == {"result": index * 2.0 if index % 4 == 0 else index * index}
    assert httpx.get(kitchen.url + "/health").status_code == 200


def test_a_request_on_a_connection_idle_past_common_client_keepalive_is_served(kitchen: Served) -> None:
    """The server keeps an idle connection open longer than clients do (httpx drops one after 5 s):
    with uvicorn's 5 s, a request sent as the server closed the connection was lost (the ReadError
    `test_bounded_load_loses_no_request` saw once when a loaded machine stalled the client)."""
    body = b'{"x": 3}'
    request = (
        b"POST /v1/methods/square HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    def answer(sock: socket.socket) -> bytes:
        data = b""
        while not data.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    with socket.create_connection(("127.0.0.1", kitchen.port), timeout=30) as sock:
        sock.sendall(request)
        assert answer(sock).startswith(b"HTTP/1.1 200")
        time.sleep(6.0)  # idle past httpx's keepalive_expiry and uvicorn's default keep-alive
        sock.sendall(request)
        second = answer(sock)
    assert second.startswith(b"HTTP/1.1 200") and second.endswith(b'{"result":9}'), second


class MediaHost:
    """Serves `/bytes/N` (N bytes) and `/slow` (its body 3 s late) on loopback, for URL inputs."""

    def __init__(self) -> None:
        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if self.path == "/slow":
                    time.sleep(3.0)
                    body = b"x" * 10
                else:
                    body = b"x" * int(self.path.rsplit("/", 1)[1])
                self.reply(body, "application/octet-stream")

        self.server = LoopbackServer(Handler).start()
        self.url = self.server.url

    def close(self) -> None:
        self.server.stop()


def test_runtime_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MODELPACK_MAX_BODY_BYTES, MODELPACK_MAX_URL_BYTES and MODELPACK_URL_TIMEOUT, as documented
    in docs/environment.md, each change what a served model accepts; the defaults accept it all."""
    host = MediaHost()
    limits = {
        "MODELPACK_MAX_BODY_BYTES": "4000",
        "MODELPACK_MAX_URL_BYTES": "1000",
        "MODELPACK_URL_TIMEOUT": "1",
    }
    base = {"MODELPACK_ALLOW_PRIVATE_URLS": "1"}  # the media host is on loopback
    for name in limits:  # the second server runs with the defaults
        monkeypatch.delenv(name, raising=False)
    limited = Served(MODELS / "kitchen", env={**limits, **base})
    unlimited = Served(MODELS / "kitchen", env=base)
    try:
        for served in (limited.wait_ready(), unlimited.wait_ready()):
            assert served.process.poll() is None

        def media(served: Served, url: str, padding: int = 0) -> httpx.Response:
            body = {"image": {"url": url}, "text": "p" * padding}
            return httpx.post(served.url + "/v1/methods/media", json=body, timeout=60)

        small = media(limited, host.url + "/bytes/500")
        assert small.status_code == 200 and small.json()["result"]["image_bytes"] == 500
        # MODELPACK_MAX_URL_BYTES
        big = media(limited, host.url + "/bytes/2000")
        assert big.status_code >= 400 and "larger than the limit of 1000 bytes" in big.text, big.text
        assert media(unlimited, host.url + "/bytes/2000").json()["result"]["image_bytes"] == 2000
        # MODELPACK_URL_TIMEOUT
        slow = media(limited, host.url + "/slow")
        assert slow.status_code >= 400 and "timed out after 1s" in slow.text, slow.text
        assert media(unlimited, host.url + "/slow").json()["result"]["image_bytes"] == 10
        # MODELPACK_MAX_BODY_BYTES
        assert media(limited, host.url + "/bytes/1", padding=3000).status_code == 200
        too_big = media(limited, host.url + "/bytes/1", padding=5000)
        assert too_big.status_code == 413, too_big.text
        assert media(unlimited, host.url + "/bytes/1", padding=5000).status_code == 200
    finally:
        assert limited.stop() == 0 and unlimited.stop() == 0
        host.close()


def test_sigterm_finishes_in_flight_requests(tmp_path: Path) -> None:
    served = Served(MODELS / "kitchen").wait_ready()
    marker = tmp_path / "started"
    outcome: dict[str, Any] = {}

    def call() -> None:
        response = httpx.post(
            served.url + "/v1/methods/sleep", json={"seconds": 1.0, "marker": str(marker)}, timeout=60
        )
        outcome["response"] = (response.status_code, response.json())

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists()
    served.process.send_signal(signal.SIGTERM)
    thread.join(60)
    assert outcome["response"] == (200, {"result": "slept"})
    assert served.process.wait(30) == 0


def test_module_entry_point_uses_port_env() -> None:
    served = Served(MODELS / "clarifai_style", module=True).wait_ready()
    try:
        with Model(served.url) as model:
            assert model.predict(prompt="x") == "x@0.7"
            assert [t.text for t in model.generate(prompt="a b")] == ["a", "b"]  # typed: Text results
        with Model(served.url, typed=False) as model:
            assert list(model.generate(prompt="a b")) == [{"text": "a"}, {"text": "b"}]
    finally:
        assert served.stop() == 0


def test_failed_load_exits_1() -> None:
    served = Served(MODELS / "broken_load")
    assert served.process.wait(60) == 1
    output = served.output()
    assert "weights are missing" in output and "failed to load" in output


def test_serve_refuses_a_directory_without_model_py(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelpack", "serve", str(tmp_path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "model.py does not exist" in result.stderr


# ------------------------------------------------------------------ OpenAI-compatible


class _Backend(QuietHandler):
    """A tiny OpenAI-compatible server: replies with the last user message reversed."""

    authorizations: list[str | None] = []  # noqa: RUF012
    models: list[str] = []  # noqa: RUF012

    def _json(self, data: Any, status: int = 200) -> None:
        self.reply(json.dumps(data).encode(), status=status)

    def do_GET(self) -> None:
        _Backend.authorizations.append(self.headers.get("Authorization"))
        if self.path == "/v1/models":
            self._json(
                {
                    "object": "list",
                    "data": [{"id": "tiny-backend", "object": "model", "created": 0, "owned_by": "test"}],
                }
            )
        else:
            self._json({"error": {"message": "not found"}}, 404)

    def do_POST(self) -> None:
        _Backend.authorizations.append(self.headers.get("Authorization"))
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Backend.models.append(request.get("model"))
        text = request["messages"][-1]["content"][::-1]
        base = {"id": "chatcmpl-1", "created": 1, "model": request["model"]}
        if not request.get("stream"):
            self._json(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in [text[: len(text) // 2], text[len(text) // 2 :]]:
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def openai_served() -> Iterator[Served]:
    with LoopbackServer(_Backend) as backend:
        env = {"MODELPACK_TEST_BACKEND": backend.url + "/v1", "MODELPACK_TEST_BACKEND_KEY": "backend-key"}
        served = Served(MODELS / "openai_proxy", env=env).wait_ready()
        yield served
        assert served.stop() == 0


def test_openai_package_against_the_server(openai_served: Served) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=openai_served.url + "/v1", api_key="caller-secret", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny-backend"]
    completion = client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": "hello"}]
    )
    assert completion.choices[0].message.content == "olleh"
    stream = client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": "stream me"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert "".join(pieces) == "em maerts" and len(pieces) == 2
    assert set(_Backend.models) == {"tiny-backend"}
    assert "Bearer caller-secret" not in _Backend.authorizations  # the caller's key stays here
    assert "Bearer backend-key" in _Backend.authorizations


def test_openai_model_methods_use_the_backend(openai_served: Served) -> None:
    with Model(openai_served.url) as model:
        assert model.predict(prompt="abc") == "cba"
        assert "".join(model.generate(prompt="abcd")) == "dcba"
