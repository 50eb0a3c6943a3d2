"""`modelpack.runtime.client.Model` failure paths: every failure is a `ModelCallError`, never a raw
transport exception, and a stream cut short is never mistaken for a complete one."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from loopback import free_port

from modelpack.runtime.client import Model, ModelCallError

SIGNATURE = {
    "methods": [
        {
            "name": "chat",
            "kind": "stream-stream",
            "inputs": [{"name": "messages", "type": "Iterator[str]", "required": True, "default": None}],
            "output": "Iterator[str]",
        }
    ]
}


@pytest.fixture
def ws_server() -> Iterator[tuple[str, list[str]]]:
    """A WebSocket server that answers one result and then closes without ``{"done": true}``."""
    from websockets.sync.server import ServerConnection, serve

    received: list[str] = []

    def handler(connection: ServerConnection) -> None:
        received.append(str(connection.recv()))
        connection.send(json.dumps({"result": "first"}))
        connection.close()

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}", received
        server.shutdown()
        thread.join(5)


def _model(url: str) -> Model:
    model = Model(url, timeout=5)
    model._signature = SIGNATURE
    return model


def test_bidirectional_stream_closed_before_done_is_an_error(ws_server: tuple[str, list[str]]) -> None:
    url, received = ws_server
    with _model(url) as model:
        results: list[Any] = []
        with pytest.raises(ModelCallError, match="ended early"):
            for item in model.chat(messages=iter(["a", "b"])):
                results.append(item)
    assert results == ["first"]
    assert json.loads(received[0]) == {"args": {}}


def test_bidirectional_stream_to_unreachable_server_is_a_model_call_error() -> None:
    with _model(f"http://127.0.0.1:{free_port()}") as model:
        with pytest.raises(ModelCallError) as caught:
            list(model.chat(messages=iter(["a"])))
    assert caught.value.exit_code == 1


def test_non_json_answer_is_a_model_call_error() -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>not a model server</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with Model(f"http://127.0.0.1:{server.server_address[1]}", timeout=5) as model:
            with pytest.raises(ModelCallError, match="did not answer JSON") as caught:
                model.available_methods()
        assert caught.value.exit_code == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_credentials_in_the_url_never_reach_messages() -> None:
    url = f"http://alice:s3cr3t-pw@127.0.0.1:{free_port()}"
    with Model(url, timeout=5) as model:
        with pytest.raises(ModelCallError) as caught:
            model.available_methods()
    assert "cannot reach http://127.0.0.1:" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value)
    assert caught.value.exit_code == 1


def test_predict_command_does_not_print_url_credentials() -> None:
    from click.testing import CliRunner

    from modelpack.cli import cli

    url = f"http://alice:s3cr3t-pw@127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["predict", url, "predict"])
    assert result.exit_code == 1
    assert "cannot reach" in result.output
    assert "s3cr3t-pw" not in result.output


def test_a_string_for_a_streamed_argument_is_not_split_into_characters() -> None:
    from pathlib import Path

    from modelpack.runtime.server import BackgroundServer

    kitchen = Path(__file__).parent / "test_runtime_models" / "kitchen"
    with BackgroundServer(kitchen) as server, Model(server.url, timeout=30) as model:
        assert list(model.upper(chunks=iter(["ab", "c"]))) == ["AB", "C"]
        assert list(model.upper(chunks=["ab", "c"])) == ["AB", "C"]
        with pytest.raises(ModelCallError, match="expected an array") as caught:
            list(model.upper(chunks="ab"))
        assert caught.value.exit_code == 2


def test_malformed_stream_events_are_a_model_call_error() -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'data: {"result": 1}\n\ndata: {oops\n\n'
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    signature = {
        "methods": [
            {
                "name": "count",
                "kind": "unary-stream",
                "inputs": [{"name": "n", "type": "int", "required": True, "default": None}],
                "output": "Iterator[int]",
            }
        ]
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with Model(f"http://127.0.0.1:{server.server_address[1]}", timeout=5) as model:
            model._signature = signature
            received: list[Any] = []
            with pytest.raises(ModelCallError, match="malformed events") as caught:
                for item in model.count(n=2):
                    received.append(item)
        assert received == [1]
        assert caught.value.exit_code == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
