"""The HTTP API of the model server, in-process (starlette TestClient, no sockets)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from modelpack.runtime.runner import Runner
from modelpack.runtime.server import create_app

MODELS = Path(__file__).parent / "test_runtime_models"


def _client(name: str, **kwargs: Any) -> Iterator[TestClient]:
    runner = Runner(MODELS / name)
    with TestClient(create_app(runner, **kwargs), raise_server_exceptions=False) as client:
        assert runner.loaded.wait(30)
        yield client


@pytest.fixture(scope="module")
def kitchen() -> Iterator[TestClient]:
    yield from _client("kitchen", max_body_bytes=4096)


def _sse(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        event, data = "message", None
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
        events.append((event, data))
    return events


def test_probes(kitchen: TestClient) -> None:
    for path in ("/health", "/healthz/liveness"):
        assert kitchen.get(path).json() == {"status": "ok"}
    for path in ("/ready", "/healthz/readiness", "/healthz/startup"):
        response = kitchen.get(path)
        assert (response.status_code, response.json()) == (200, {"status": "ready"})


def test_unary_and_defaults(kitchen: TestClient) -> None:
    response = kitchen.post("/v1/methods/predict", json={"prompt": "ab", "n": 2, "mode": "upper"})
    assert response.json() == {"result": "ABAB"}
    assert kitchen.post("/v1/methods/predict", json={"prompt": "x"}).json() == {"result": "x"}
    assert kitchen.post("/v1/methods/add", json={"a": 1}).json() == {"result": 1.5}
    assert kitchen.post("/v1/methods/ping", json={}).json() == {"result": "pong"}
    assert kitchen.post("/v1/methods/async_echo", json={}).json() == {"result": "hello"}
    assert kitchen.post("/v1/methods/untyped", json={"value": [1, {"a": None}]}).json() == {
        "result": [1, {"a": None}]
    }


def test_types_and_media(kitchen: TestClient) -> None:
    payload = {
        "words": ["a", "b"],
        "table": {"x": 1, "y": 2},
        "pair": [1, "one"],
        "either": "s",
        "blob": {"base64": "aGk="},
        "maybe": 4,
    }
    assert kitchen.post("/v1/methods/types", json=payload).json() == {
        "result": {
            "words": ["b", "a"],
            "total": 3,
            "pair": ["one", 1],
            "either": "str",
            "blob": {"base64": "aGk="},
            "anything": None,
            "maybe": 4,
        }
    }
    media = {"image": {"base64": "AAEC"}, "text": "hi", "audio": {"base64": "AA=="}}
    assert kitchen.post("/v1/methods/media", json=media).json() == {
        "result": {"image_bytes": 3, "text": "hi", "audio": 1, "video": None}
    }
    detect = kitchen.post("/v1/methods/detect", json={"image": {"base64": "AA=="}}).json()
    assert detect == {
        "result": [{"box": [0.1, 0.2, 0.3, 0.4], "concepts": [{"id": "cat", "name": "cat", "value": 0.9}]}]
    }
    best = kitchen.post(
        "/v1/methods/label", json={"concepts": [{"name": "a", "value": 0.1}, {"name": "b", "value": 0.7}]}
    )
    assert best.json() == {"result": {"id": "b", "name": "b", "value": 0.7}}


@pytest.mark.parametrize(
    ("body", "status", "code", "argument"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b'{"n": 1}', 422, "invalid_argument", "prompt"),
        (b'{"prompt": 1}', 422, "invalid_argument", "prompt"),
        (b'{"prompt": "x", "bogus": 1}', 422, "invalid_argument", "bogus"),
        (b'{"prompt": "x", "n": 11}', 422, "invalid_argument", "n"),
        (b'{"prompt": "x", "mode": "loud"}', 422, "invalid_argument", "mode"),
        (b'"just a string"', 422, "invalid_argument", None),
    ],
)
def test_bad_requests(kitchen: TestClient, body: bytes, status: int, code: str, argument: str | None) -> None:
    response = kitchen.post("/v1/methods/predict", content=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert error.get("argument") == argument
    if argument:
        assert repr(argument) in error["message"]


def test_media_url_must_be_http(kitchen: TestClient) -> None:
    response = kitchen.post("/v1/methods/media", json={"image": {"url": "file:///etc/passwd"}, "text": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["argument"] == "image"


def test_client_mistakes_are_4xx_not_model_errors(kitchen: TestClient) -> None:
    """A lone surrogate in a string and a URL with an impossible port are the client's fault."""
    lone = kitchen.post(
        "/v1/methods/predict", content=b'{"prompt": "\\ud800"}', headers={"Content-Type": "application/json"}
    )
    assert lone.status_code == 400 and "surrogate" in lone.json()["error"]["message"]
    pair = kitchen.post(
        "/v1/methods/predict",
        content=b'{"prompt": "\\ud83d\\ude00"}',
        headers={"Content-Type": "application/json"},
    )
    assert pair.json() == {"result": "\U0001f600"}
    for url in ("http://example.com:99999/x.png", "http://example.com:port/x.png"):
        response = kitchen.post("/v1/methods/media", json={"image": {"url": url}, "text": "x"})
        assert 400 <= response.status_code < 500, response.text


def test_private_media_url_is_refused_when_fetched(
    kitchen: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELPACK_ALLOW_PRIVATE_URLS", raising=False)
    response = kitchen.post(
        "/v1/methods/media", json={"image": {"url": "http://127.0.0.1:9/x.png"}, "text": "x"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "url_fetch_failed"


def test_unknown_method_and_routes(kitchen: TestClient) -> None:
    response = kitchen.post("/v1/methods/nope", json={})
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_method"
    assert kitchen.get("/nowhere").json()["error"]["code"] == "not_found"
    assert kitchen.get("/v1/methods/predict").status_code == 405


def test_model_exception_is_500_and_server_keeps_serving(kitchen: TestClient) -> None:
    response = kitchen.post("/v1/methods/fail", json={"message": "bad thing"})
    assert response.status_code == 500
    assert response.json()["error"] == {"code": "model_error", "message": "RuntimeError: bad thing"}
    assert kitchen.post("/v1/methods/ping", json={}).json() == {"result": "pong"}


def test_oversized_body_is_413(kitchen: TestClient) -> None:
    big = json.dumps({"prompt": "x" * 5000})
    response = kitchen.post("/v1/methods/predict", content=big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    response = kitchen.post("/v1/methods/predict", content=chunks())
    assert response.status_code == 413
    assert kitchen.get("/health").status_code == 200


def test_batches(kitchen: TestClient) -> None:
    response = kitchen.post("/v1/methods/square", json=[{"x": 1}, {"x": 2}, {"x": 3}])
    assert response.json() == {"results": [1, 4, 9]}
    response = kitchen.post("/v1/methods/double", json=[{"x": i} for i in range(10)])
    assert response.json() == {"results": [2.0 * i for i in range(10)]}
    sizes = kitchen.post("/v1/methods/batch_sizes", json={}).json()["result"]
    assert sizes[-2:] == [8, 2]  # max_batch_size=8: one full chunk, then the rest
    response = kitchen.post("/v1/methods/square", json=[{"x": 1}, {"x": "two"}])
    assert response.status_code == 422
    assert response.json()["error"]["index"] == 1 and response.json()["error"]["argument"] == "x"
    response = kitchen.post("/v1/methods/count", json=[{"prompt": "a"}])
    assert response.status_code == 422 and response.json()["error"]["code"] == "batch_not_supported"


def test_server_streaming_sse_and_ndjson(kitchen: TestClient) -> None:
    response = kitchen.post("/v1/methods/count", json={"prompt": "w", "count": 3})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert _sse(response.text) == [
        ("message", {"result": "w0"}),
        ("message", {"result": "w1"}),
        ("message", {"result": "w2"}),
        ("done", {}),
    ]
    response = kitchen.post(
        "/v1/methods/count", json={"prompt": "w", "count": 2}, headers={"Accept": "application/x-ndjson"}
    )
    assert [json.loads(line) for line in response.text.splitlines()] == [{"result": "w0"}, {"result": "w1"}]
    frames = _sse(kitchen.post("/v1/methods/frames", json={"video": {"base64": "AA=="}}).text)
    assert frames[1] == ("message", {"result": {"image": {"base64": "iVBORw=="}, "regions": [], "time": 1.0}})
    assert _sse(kitchen.post("/v1/methods/async_count", json={"count": 2}).text) == [
        ("message", {"result": 0}),
        ("message", {"result": 1}),
        ("done", {}),
    ]


def test_stream_error_is_an_event(kitchen: TestClient) -> None:
    events = _sse(kitchen.post("/v1/methods/fail_stream", json={"after": 2}).text)
    assert events[:2] == [("message", {"result": 0}), ("message", {"result": 1})]
    assert events[2] == ("error", {"error": {"code": "model_error", "message": "RuntimeError: stream broke"}})


def test_stream_stream_over_post_and_websocket(kitchen: TestClient) -> None:
    events = _sse(kitchen.post("/v1/methods/upper", json={"chunks": ["a", "b"], "suffix": "!"}).text)
    assert events == [("message", {"result": "A!"}), ("message", {"result": "B!"}), ("done", {})]
    with kitchen.websocket_connect("/v1/methods/upper/stream") as ws:
        ws.send_json({"args": {"suffix": "?"}})
        ws.send_json({"item": "x"})
        assert ws.receive_json() == {"result": "X?"}  # answered before the input ends
        ws.send_json({"item": "y"})
        assert ws.receive_json() == {"result": "Y?"}
        ws.send_json({"end": True})
        assert ws.receive_json() == {"done": True}


def test_async_stream_stream(kitchen: TestClient) -> None:
    events = _sse(kitchen.post("/v1/methods/async_upper", json={"chunks": ["a", "b"]}).text)
    assert events == [("message", {"result": "A"}), ("message", {"result": "B"}), ("done", {})]
    with kitchen.websocket_connect("/v1/methods/async_upper/stream") as ws:
        ws.send_json({"args": {}})
        ws.send_json({"item": "q"})
        assert ws.receive_json() == {"result": "Q"}
        ws.send_json({"end": True})
        assert ws.receive_json() == {"done": True}


def test_websocket_errors(kitchen: TestClient) -> None:
    with kitchen.websocket_connect("/v1/methods/upper/stream") as ws:
        ws.send_json({"args": {}})
        ws.send_json({"item": 5})
        error = ws.receive_json()["error"]
        assert error["code"] == "invalid_argument" and "'chunks'" in error["message"]
        assert error["argument"] == "chunks"
    with kitchen.websocket_connect("/v1/methods/predict/stream") as ws:
        assert ws.receive_json()["error"]["code"] == "not_streaming"
    with kitchen.websocket_connect("/v1/methods/upper/stream") as ws:
        ws.send_json({"args": {"bogus": 1}})
        assert ws.receive_json()["error"]["argument"] == "bogus"
    # a bad item message is answered with its error, not a silent close
    with kitchen.websocket_connect("/v1/methods/upper/stream") as ws:
        ws.send_json({"args": {}})
        ws.send_text("{oops")
        assert ws.receive_json()["error"]["code"] == "invalid_json"
    with kitchen.websocket_connect("/v1/methods/upper/stream") as ws:
        ws.send_json({"args": {}})
        ws.send_json({"item": "x" * 5000})  # the fixture's limit is 4096 bytes
        assert ws.receive_json()["error"]["code"] == "payload_too_large"
    with kitchen.websocket_connect("/v1/methods/upper/stream") as ws:
        ws.send_json({"args": {}})
        ws.send_text(json.dumps({"item": "é" * 3000}, ensure_ascii=False))  # 3000 characters, 6000+ bytes
        assert ws.receive_json()["error"]["code"] == "payload_too_large"
    assert kitchen.get("/health").status_code == 200


def test_openapi_document_validates(kitchen: TestClient) -> None:
    from openapi_spec_validator import validate

    document = kitchen.get("/openapi.json").json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    schema = document["paths"]["/v1/methods/predict"]["post"]["requestBody"]["content"]["application/json"]
    args = schema["schema"]["oneOf"][0]
    assert args["required"] == ["prompt"]
    assert args["properties"]["n"] == {
        "type": "integer",
        "description": "How many times",
        "default": 1,
        "minimum": 1,
        "maximum": 10,
    }


def test_methods_listing(kitchen: TestClient) -> None:
    data = kitchen.get("/v1/methods").json()
    assert data["class_name"] == "Kitchen"
    kinds = {m["name"]: m["kind"] for m in data["methods"]}
    assert kinds["count"] == "unary-stream" and kinds["upper"] == "stream-stream"
    assert kitchen.get("/v1/models").status_code == 404  # not an OpenAI model


def test_loading_is_503_until_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = tmp_path / "gate"
    monkeypatch.setenv("MODELPACK_TEST_GATE", str(gate))
    runner = Runner(MODELS / "gated_load")
    with TestClient(create_app(runner)) as client:
        response = client.get("/ready")
        assert (response.status_code, response.json()) == (503, {"status": "loading"})
        assert client.get("/health").status_code == 200
        assert client.post("/v1/methods/predict", json={"x": 1}).json()["error"]["code"] == "loading"
        gate.write_text("open")
        assert runner.loaded.wait(30)
        assert client.get("/ready").status_code == 200
        assert client.post("/v1/methods/predict", json={"x": 1}).json() == {"result": 2}


def test_failed_load_is_reported() -> None:
    for client in _client("broken_load"):
        response = client.get("/ready")
        assert response.status_code == 503
        assert response.json() == {"status": "failed", "error": "RuntimeError: weights are missing"}
        assert client.post("/v1/methods/predict", json={"x": 1}).json()["error"]["code"] == "load_failed"


def test_openai_model_implementing_chat_itself() -> None:
    for client in _client("openai_own"):
        assert client.get("/v1/models").json()["data"][0]["id"] == "echo-chat"
        body = {"model": "echo-chat", "messages": [{"role": "user", "content": "hi there"}]}
        answer = client.post("/v1/chat/completions", json=body).json()
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"] == {"role": "assistant", "content": "hi there"}
        stream = client.post("/v1/chat/completions", json={**body, "stream": True}).text
        datas = [line[6:] for line in stream.splitlines() if line.startswith("data: ")]
        assert datas[-1] == "[DONE]"
        pieces = [json.loads(d)["choices"][0]["delta"].get("content", "") for d in datas[:-1]]
        assert "".join(pieces) == "hithere" and json.loads(datas[0])["object"] == "chat.completion.chunk"
        assert client.post("/v1/methods/predict", json={"prompt": "a b"}).json() == {"result": "a b"}
        bad = client.post("/v1/chat/completions", json={"messages": "nope"})
        assert bad.status_code == 422
        as_string = client.post("/v1/chat/completions", json={**body, "stream": "false"})  # not a stream
        assert as_string.status_code == 422 and as_string.json()["error"]["argument"] == "stream"
        assert client.post("/v1/chat/completions", json={**body, "stream": None}).json()["object"] == (
            "chat.completion"
        )


def test_clarifai_model_serves() -> None:
    for client in _client("clarifai_style"):
        assert client.post("/v1/methods/predict", json={"prompt": "p"}).json() == {"result": "p@0.7"}
        events = _sse(client.post("/v1/methods/generate", json={"prompt": "a b"}).text)
        assert events[:2] == [("message", {"result": {"text": "a"}}), ("message", {"result": {"text": "b"}})]
        concepts = client.post("/v1/methods/classify", json={"image": {"base64": "AAA="}}).json()["result"]
        assert [c["name"] for c in concepts] == ["cat", "dog"]


def test_visual_models_serve() -> None:
    for client in _client("visual"):
        bright = client.post("/v1/methods/predict", json={"image": {"base64": "////"}, "threshold": 0.5})
        assert [c["name"] for c in bright.json()["result"]] == ["bright"]
    for client in _client("detector"):
        regions = client.post("/v1/methods/predict", json={"image": {"base64": "AA=="}}).json()["result"]
        assert regions == [
            {"box": [0.1, 0.2, 0.5, 0.8], "concepts": [{"id": "box", "name": "box", "value": 0.9}]}
        ]


def test_env_is_untouched_by_tests() -> None:
    assert "MODELPACK_TEST_GATE" not in os.environ


def test_openai_scaffold_chat_through_its_transports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `init --type openai` scaffold defines Clarifai-style openai_transport methods."""
    from modelpack.project.scaffold import init_model_dir

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    init_model_dir(tmp_path / "chat", "openai", model_id="chat")
    runner = Runner(tmp_path / "chat")
    with TestClient(create_app(runner)) as client:
        assert runner.loaded.wait(30) and runner.state == "ready"
        body = {"model": "chat", "messages": [{"role": "user", "content": "one two three"}]}
        answer = client.post("/v1/chat/completions", json=body).json()
        assert answer["choices"][0]["message"]["content"] == "one two three"
        stream = client.post("/v1/chat/completions", json={**body, "stream": True}).text
        datas = [line[6:] for line in stream.splitlines() if line.startswith("data: ")]
        assert datas[-1] == "[DONE]"
        text = "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for d in datas[:-1])
        assert text == "one two three"


def _answered(call: Any) -> Any:
    """The result of `call()` run in a thread; None when it never returns (a starved server)."""
    import threading

    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(call()), daemon=True)
    worker.start()
    worker.join(60)  # a guard against hanging the suite, not a speed check
    return box[0] if box else None


def test_idle_streams_never_starve_unary_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """More idle WebSocket streams to a sync stream-stream method than the server has worker
    threads for calls (anyio's 40): unary calls are still answered, /ready still says ready."""
    from contextlib import ExitStack

    monkeypatch.setenv("MODELPACK_MAX_STREAMS", "45")
    with ExitStack() as stack:
        client = stack.enter_context(contextlib_closing_client("kitchen"))
        for _ in range(45):
            ws = stack.enter_context(client.websocket_connect("/v1/methods/upper/stream"))
            ws.send_json({"args": {}})
            ws.send_json({"item": "x"})
            assert ws.receive_json() == {"result": "X"}  # its thread now waits for the next item
        answer = _answered(lambda: client.post("/v1/methods/ping", json={}).json())
        assert answer == {"result": "pong"}
        assert client.get("/ready").json() == {"status": "ready"}
        # one more stream than the bound is refused, in words
        with client.websocket_connect("/v1/methods/upper/stream") as extra:
            extra.send_json({"args": {}})
            error = extra.receive_json()["error"]
            assert error["code"] == "too_many_streams" and "MODELPACK_MAX_STREAMS" in error["message"]
        refused = client.post("/v1/methods/upper", json={"chunks": ["a"]})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "too_many_streams"


def test_an_idle_stream_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPACK_STREAM_IDLE_TIMEOUT", "0.2")
    with contextlib_closing_client("kitchen") as client:
        with client.websocket_connect("/v1/methods/upper/stream") as ws:
            ws.send_json({"args": {}})
            error = ws.receive_json()["error"]  # nothing sent after the arguments
            assert error["code"] == "idle_timeout" and "MODELPACK_STREAM_IDLE_TIMEOUT" in error["message"]
        with client.websocket_connect("/v1/methods/upper/stream") as ws:
            assert ws.receive_json()["error"]["code"] == "idle_timeout"  # not even the arguments
        assert client.post("/v1/methods/upper", json={"chunks": ["a"]}).status_code == 200


def test_ready_says_busy_when_no_worker_thread_is_free() -> None:
    import anyio.to_thread

    with contextlib_closing_client("kitchen") as client:
        limiter = client.portal.call(anyio.to_thread.current_default_thread_limiter)
        saved = limiter.total_tokens
        client.portal.call(setattr, limiter, "total_tokens", 1)
        gate = client.portal.call(anyio.Event)
        try:
            client.portal.start_task_soon(_hold_a_thread, limiter, gate)
            while client.portal.call(lambda: limiter.borrowed_tokens) < 1:
                pass
            response = client.get("/ready")
            assert response.status_code == 503 and response.json()["status"] == "busy"
        finally:
            client.portal.call(gate.set)
        while client.portal.call(lambda: limiter.borrowed_tokens) > 0:
            pass
        client.portal.call(setattr, limiter, "total_tokens", saved)
        assert client.get("/ready").json() == {"status": "ready"}


async def _hold_a_thread(limiter: Any, gate: Any) -> None:
    async with limiter:
        await gate.wait()


def contextlib_closing_client(name: str) -> Any:
    from contextlib import contextmanager

    return contextmanager(_client)(name)
