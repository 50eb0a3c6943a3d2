"""The built images run: `examples/hello` and `examples/openai-chat` built by modelpack, started
with `docker run --network host`, called through the modelpack client (unary, server-streaming,
stream-stream over WebSocket, batch) and the official `openai` package (plain and streaming).

Also checks that the served signature equals the static one, that the server runs as the
unprivileged user, and that SIGTERM stops the container cleanly. Containers are always removed.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

RUNTIME_UID = 10001


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    container: Any
    url: str
    model_dir: Path

    def logs(self) -> str:
        try:
            return str(self.container.logs(tail=40).decode("utf-8", errors="replace"))
        except Exception as error:  # the container is gone already
            return f"(no logs: {type(error).__name__})"


@pytest.fixture(scope="module")
def images(
    docker_client: Any,
    registry: str,
    local_base_image: str,
    tmp_path_factory: pytest.TempPathFactory,
    copy_example: Callable[..., Path],
) -> Iterator[dict[str, tuple[str, Path]]]:
    """Both examples built locally (not pushed): name -> (image reference, model directory)."""
    from modelpack.image.builder import build
    from modelpack.pipeline.rendering import BuildSettings
    from modelpack.pipeline.settings import env_ca_bundle

    # like the CLI: the host's CA bundle and index reach the (discarded) builder stage
    ca_bundle = env_ca_bundle()
    settings = BuildSettings(
        ca_bundle=Path(ca_bundle) if ca_bundle else None, index_url=os.environ.get("PIP_INDEX_URL") or None
    )
    root = tmp_path_factory.mktemp("examples")
    repo_base = f"{registry}/modelpack-test/image-runtime-{uuid.uuid4().hex[:8]}"
    built: dict[str, tuple[str, Path]] = {}
    try:
        for name in ("hello", "openai-chat"):
            model_dir = root / name
            copy_example(name, model_dir)
            result = build(model_dir, repository=f"{repo_base}/{name}", push=False, settings=settings)
            built[name] = (result.image, model_dir)
        yield built
    finally:
        for image in docker_client.images.list():
            for tag in image.tags:
                if tag.startswith(repo_base + "/"):
                    try:
                        docker_client.images.remove(tag)
                    except Exception:
                        pass


def _start(docker_client: Any, image: str, model_dir: Path) -> Iterator[Running]:
    port = _free_port()
    container = docker_client.containers.run(
        image, detach=True, network_mode="host", environment={"PORT": str(port)}, auto_remove=False
    )
    running = Running(container, f"http://127.0.0.1:{port}", model_dir)
    try:
        deadline = time.monotonic() + 120
        while True:
            container.reload()
            assert container.status in ("created", "running"), running.logs()
            try:
                if httpx.get(running.url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"not ready after 120 s:\n{running.logs()}"
            time.sleep(0.2)
        yield running
    finally:
        try:
            container.remove(force=True)
        except Exception:
            pass


@pytest.fixture(scope="module")
def hello(docker_client: Any, images: dict[str, tuple[str, Path]]) -> Iterator[Running]:
    yield from _start(docker_client, *images["hello"])


@pytest.fixture(scope="module")
def openai_chat(docker_client: Any, images: dict[str, tuple[str, Path]]) -> Iterator[Running]:
    yield from _start(docker_client, *images["openai-chat"])


def _static_signature(model_dir: Path) -> dict[str, Any]:
    from modelpack.project.methods import signature

    return signature(model_dir).signature.to_dict()


def test_hello_image_serves_every_method_kind(hello: Running) -> None:
    from modelpack.runtime.client import Model, ModelCallError

    with Model(hello.url, timeout=60) as model:
        assert model.signature() == _static_signature(hello.model_dir)
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


def test_openai_chat_image_speaks_the_openai_api(openai_chat: Running) -> None:
    from openai import OpenAI

    from modelpack.runtime.client import Model

    with Model(openai_chat.url, timeout=60) as model:
        assert model.signature() == _static_signature(openai_chat.model_dir)
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


def test_server_runs_as_the_unprivileged_user(hello: Running) -> None:
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


def test_the_image_carries_only_the_runtime_library(hello: Running) -> None:
    """The library folder holds the runtime's import closure: no build, registry or signing code."""
    from modelpack.pipeline.runtime_library import runtime_library_files

    code, output = hello.container.exec_run(["find", "/opt/modelpack/lib/modelpack", "-type", "f"])
    assert code == 0, output
    shipped = {line.removeprefix("/opt/modelpack/lib/modelpack/") for line in output.decode().split()}
    assert shipped == {rel for rel, _ in runtime_library_files()}
    assert "runtime/client.py" not in shipped
    assert not any(rel.startswith(("image/", "oci/", "supply/", "cli/")) for rel in shipped)


def test_sigterm_stops_the_container_cleanly(docker_client: Any, images: dict[str, tuple[str, Path]]) -> None:
    for running in _start(docker_client, *images["hello"]):
        running.container.kill(signal="SIGTERM")
        outcome = running.container.wait(timeout=60)
        assert outcome["StatusCode"] == 0, running.logs()
        with pytest.raises(httpx.HTTPError):
            httpx.get(running.url + "/health", timeout=2)
