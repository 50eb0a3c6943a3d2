"""The built images run: `examples/hello` and `examples/openai-chat` built by modelpack, started
with `docker run --network host`, called through the modelpack client (unary, server-streaming,
stream-stream over WebSocket, batch) and the official `openai` package (plain and streaming).

Also checks that the served signature equals the static one, that the server runs as the
unprivileged user, and that SIGTERM stops the container cleanly. Containers are always removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

RUNTIME_UID = 10001


@pytest.fixture(scope="module")
def images(build_examples: Callable[..., Any]) -> Iterator[dict[str, tuple[str, Path]]]:
    """Both examples built locally (not pushed): name -> (image reference, model directory)."""
    with build_examples("image-runtime", "hello", "openai-chat") as built:
        yield built


@pytest.fixture(scope="module")
def hello(run_image: Callable[..., Any], images: dict[str, tuple[str, Path]]) -> Iterator[Any]:
    with run_image(images["hello"][0]) as running:
        yield running


@pytest.fixture(scope="module")
def openai_chat(run_image: Callable[..., Any], images: dict[str, tuple[str, Path]]) -> Iterator[Any]:
    with run_image(images["openai-chat"][0]) as running:
        yield running


def _static_signature(model_dir: Path) -> dict[str, Any]:
    from modelpack.project.methods import signature

    return signature(model_dir).signature.to_dict()


def test_hello_image_serves_every_method_kind(hello: Any, images: dict[str, tuple[str, Path]]) -> None:
    from modelpack.runtime.client import Model, ModelCallError

    with Model(hello.url, timeout=60) as model:
        assert model.signature() == _static_signature(images["hello"][1])
        assert model.predict(name="image") == "Hello, image!"  # unary
        assert model.predict() == "Hello, world!"  # default parameter
        assert list(model.generate(text="a b c", repeat=2)) == ["a", "b", "c", "a", "b", "c"]  # server stream
        assert list(model.echo(chunks=iter(["x", "yz", "q"]))) == ["X", "YZ", "Q"]  # stream-stream (ws)
        assert model.predict([{"name": "a"}, {"name": "b"}, {}]) == [  # batch
            "Hello, a!",
            "Hello, b!",
            "Hello, world!",
        ]
        with pytest.raises(ModelCallError) as bad:
            model.generate(text="a", repeat=99).__next__()
        assert bad.value.exit_code == 2
    assert httpx.get(hello.url + "/health", timeout=5).status_code == 200


def test_openai_chat_image_speaks_the_openai_api(
    openai_chat: Any, images: dict[str, tuple[str, Path]]
) -> None:
    from openai import OpenAI

    from modelpack.runtime.client import Model

    with Model(openai_chat.url, timeout=60) as model:
        assert model.signature() == _static_signature(images["openai-chat"][1])
        assert model.predict(prompt="one two three") == "three two one"
        assert "".join(model.generate(prompt="red green blue")) == "blue green red"
        assert model.predict([{"prompt": "a b"}, {"prompt": "c d", "max_tokens": 1}]) == ["b a", "d"]

    client = OpenAI(base_url=openai_chat.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    models = [m.id for m in client.models.list()]
    assert models, "GET /v1/models lists no model"
    reply = client.chat.completions.create(
        model=models[0],
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there world"},
        ],
    )
    assert reply.choices[0].message.content == "world there hello"
    assert reply.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "one two three four"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([p for p in pieces if p]) == 4
    assert "".join(pieces) == "four three two one"


def test_server_runs_as_the_unprivileged_user(hello: Any) -> None:
    code, output = hello.container.exec_run(
        ["/opt/venv/bin/python", "-c", "import os; print(os.getuid(), os.geteuid(), os.getgid())"]
    )
    assert code == 0, output
    assert output.decode().split() == [str(RUNTIME_UID)] * 3
    # the server process itself (PID 1), not only an exec'd command
    code, status = hello.container.exec_run(["cat", "/proc/1/status"])
    assert code == 0
    uid_line = next(line for line in status.decode().splitlines() if line.startswith("Uid:"))
    assert set(uid_line.split()[1:]) == {str(RUNTIME_UID)}


def test_the_image_carries_only_the_runtime_library(hello: Any) -> None:
    """The library folder holds the runtime's import closure: no build, registry or signing code."""
    from modelpack.pipeline.runtime_library import runtime_library_files

    code, output = hello.container.exec_run(["find", "/opt/modelpack/lib/modelpack", "-type", "f"])
    assert code == 0, output
    shipped = {line.removeprefix("/opt/modelpack/lib/modelpack/") for line in output.decode().split()}
    assert shipped == {rel for rel, _ in runtime_library_files()}
    assert "runtime/client.py" not in shipped
    assert not any(rel.startswith(("image/", "oci/", "supply/", "cli/")) for rel in shipped)


def test_sigterm_stops_the_container_cleanly(
    run_image: Callable[..., Any], images: dict[str, tuple[str, Path]]
) -> None:
    with run_image(images["hello"][0]) as running:
        running.container.kill(signal="SIGTERM")
        outcome = running.container.wait(timeout=60)
        assert outcome["StatusCode"] == 0, running.logs()
        with pytest.raises(httpx.HTTPError):
            httpx.get(running.url + "/health", timeout=2)
