"""MCP models served in-process: the real `mcp` and `fastmcp` clients against ``/mcp``,
and the SDK's ``mcp_transport`` method; tools read statically from the source."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_results import first_text

from modelpack.project.methods import signature
from modelpack.resources import data_dir
from modelpack.runtime.server import BackgroundServer

EXAMPLE = Path(str(data_dir("examples").joinpath("mcp-tools")))
# tool -> (arguments, the text it answers)
CALLS: dict[str, tuple[dict[str, Any], str]] = {
    "add": ({"a": 2, "b": 3.5}, "5.5"),
    "word_count": ({"text": "one two three"}, "3"),
    "change_case": ({"text": "Hello There", "case": "lower"}, "hello there"),
    "repeat": ({"text": "ab", "times": 3, "separator": "-"}, "ab-ab-ab"),
}


@pytest.fixture(scope="module")
def server() -> object:
    with BackgroundServer(EXAMPLE) as running:
        assert running.runner.state == "ready", running.runner.error
        yield running


def test_mcp_client_lists_and_calls_every_tool(server: BackgroundServer) -> None:
    from mcp import Client

    async def run() -> tuple[list[str], dict[str, str]]:
        async with Client(server.url + "/mcp") as client:
            names = [t.name for t in (await client.list_tools()).tools]
            results = {}
            for name, (arguments, _) in CALLS.items():
                result = await client.call_tool(name, arguments)
                assert not result.is_error
                results[name] = first_text(result.content)
            return names, results

    names, results = asyncio.run(run())
    assert names == list(CALLS)
    assert results == {name: expected for name, (_, expected) in CALLS.items()}


def test_fastmcp_client_calls_a_tool(server: BackgroundServer) -> None:
    from fastmcp import Client

    async def run() -> tuple[set[str], object]:
        async with Client(server.url + "/mcp") as client:
            tools = {t.name for t in await client.list_tools()}
            result = await client.call_tool("word_count", {"text": "a b c d"})
            return tools, result.data

    tools, data = asyncio.run(run())
    assert tools == set(CALLS)
    assert data == 4


def test_mcp_transport_answers_one_message(server: BackgroundServer) -> None:
    message = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 1, "b": 2}},
    }
    response = httpx.post(f"{server.url}/v1/methods/mcp_transport", json={"msg": json.dumps(message)})
    assert response.status_code == 200
    answer = json.loads(response.json()["result"])
    assert answer["id"] == 7
    assert answer["result"]["content"][0]["text"] == "3.0"
    listed = httpx.post(
        f"{server.url}/v1/methods/mcp_transport",
        json={"msg": json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/list", "params": {}})},
    )
    assert [t["name"] for t in json.loads(listed.json()["result"])["result"]["tools"]] == list(CALLS)
    unknown = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "nope", "arguments": {}}}
    error = json.loads(
        httpx.post(f"{server.url}/v1/methods/mcp_transport", json={"msg": json.dumps(unknown)}).json()[
            "result"
        ]
    )
    assert error["id"] == 9 and ("error" in error or error["result"].get("isError"))


def test_signature_lists_tools_without_importing() -> None:
    result = signature(EXAMPLE)
    sig = result.signature
    assert sig.base == "MCPModelClass"
    assert [m.name for m in sig.methods] == ["mcp_transport"]
    tools = {t.name: t for t in sig.tools or ()}
    assert list(tools) == list(CALLS)
    add = tools["add"]
    assert add.description == "Add two numbers."
    assert [(i.name, i.type, i.required, i.description) for i in add.inputs] == [
        ("a", "float", True, "First number"),
        ("b", "float", True, "Second number"),
    ]
    case = tools["change_case"].inputs[1]
    assert (case.type, case.default, case.choices) == ("str", "upper", ["upper", "lower", "title"])
    assert tools["word_count"].description == "Count the words of a text."


def test_a_plain_model_has_no_mcp_route(tmp_path: Path) -> None:
    hello = Path(str(data_dir("examples").joinpath("hello")))
    with BackgroundServer(hello) as running:
        response = httpx.post(running.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 404


def test_stdio_server_bridged_with_its_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp import Client

    monkeypatch.setenv("NOTES_OWNER", "alice")
    monkeypatch.setenv("UNLISTED_VARIABLE", "not for the child")
    example = Path(str(data_dir("examples").joinpath("mcp-stdio")))

    async def run(url: str) -> list[str]:
        async with Client(url + "/mcp") as client:
            out = [first_text((await client.call_tool("add_note", {"text": "one"})).content)]
            out.append(first_text((await client.call_tool("add_note", {"text": "two"})).content))
            out.append(first_text((await client.call_tool("whoami", {})).content))
            return out

    with BackgroundServer(example) as running:
        assert running.runner.state == "ready", running.runner.error
        assert running.runner.signature is not None
        tools = [t["name"] for t in running.runner.signature.to_dict()["tools"]]
        assert asyncio.run(run(running.url)) == ["note-1", "note-2", "alice"]
    assert tools == ["add_note", "list_notes", "whoami"]
    assert signature(example).signature.tools == ()  # known only once the child runs


def test_child_environment_has_only_listed_variables() -> None:
    from modelpack.runtime.mcp import _child_environment, read_stdio_spec

    example = Path(str(data_dir("examples").joinpath("mcp-stdio")))
    environ = {"PATH": "/usr/bin", "NOTES_OWNER": "bob", "AWS_SECRET_ACCESS_KEY": "x"}
    env = _child_environment(read_stdio_spec(example, environ), environ)
    assert env == {"PATH": "/usr/bin", "NOTES_OWNER": "bob", "NOTES_PREFIX": "note"}


def test_a_stdio_server_that_dies_fails_the_load(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "config.yaml").write_text(
        "model: {id: broken}\nmcp_server: {command: python, args: ['-c', 'raise SystemExit(3)']}\n"
    )
    (tmp_path / "1" / "model.py").write_text(
        "from modelpack.runtime import StdioMCPModelClass\n\n\nclass Broken(StdioMCPModelClass):\n    pass\n"
    )
    with BackgroundServer(tmp_path) as running:
        assert running.runner.state == "failed"
        assert "no tools" in (running.runner.error or "")
        assert httpx.get(running.url + "/ready").status_code == 503


DYNAMIC = Path(__file__).parent / "test_runtime_models" / "mcp_dynamic"


def test_tools_registered_by_a_call_are_a_located_warning_of_the_signature() -> None:
    result = signature(DYNAMIC)
    assert [t.name for t in result.signature.tools or ()] == ["ping", "enable_shout"]
    located = [(w.line, w.path, w.severity) for w in result.warnings if "not read statically" in w.message]
    assert located == [(20, "tools", "warning"), (31, "tools", "warning")]  # the two add_tool calls
    assert not [w for w in signature(EXAMPLE).warnings if "not read statically" in w.message]


def test_the_running_model_lists_tools_added_at_run_time() -> None:
    """GET /v1/methods asks the running server: add_tool at import, and a tool added by a call."""
    from mcp import Client

    with BackgroundServer(DYNAMIC) as running:
        assert running.runner.state == "ready", running.runner.error

        def listed() -> list[str]:
            answer = httpx.get(running.url + "/v1/methods", timeout=30)
            assert answer.status_code == 200
            return [t["name"] for t in answer.json()["tools"]]

        assert listed() == ["ping", "reverse", "enable_shout"]

        async def enable() -> str:
            async with Client(running.url + "/mcp") as client:
                result = await client.call_tool("enable_shout", {})
                return first_text(result.content)

        assert asyncio.run(enable()) == "enabled"
        assert listed() == ["ping", "reverse", "enable_shout", "shout"]
