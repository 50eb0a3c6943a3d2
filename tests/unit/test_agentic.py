"""AgenticModelClass: the chat loop calls tools on a local MCP server (the mcp-tools example,
served by modelpack) for a local OpenAI-compatible backend (a scripted HTTP server that asks
for one tool call, then answers with the tool's result); loopback only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from loopback import LoopbackServer, QuietHandler

from modelpack.resources import data_dir
from modelpack.runtime.server import BackgroundServer

AGENT = Path(__file__).parent / "test_runtime_models" / "agentic"


class ScriptedBackend(QuietHandler):
    """Round 1: call `add` with the numbers in the prompt. Round 2: answer with the tool result."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ScriptedBackend.requests.append(body)
        last = body["messages"][-1]
        if last["role"] == "tool":
            message: dict[str, Any] = {"role": "assistant", "content": f"The sum is {last['content']}."}
        elif any(t["function"]["name"] == "add" for t in body.get("tools", [])):
            arguments = json.dumps({"a": 2, "b": 40})
            call = {"id": "call-1", "type": "function", "function": {"name": "add", "arguments": arguments}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        else:
            message = {"role": "assistant", "content": "no tools offered"}
        reply = {
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
        self.reply(json.dumps(reply).encode())


@pytest.fixture()
def backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    ScriptedBackend.requests = []
    with LoopbackServer(ScriptedBackend) as server:
        monkeypatch.setenv("AGENT_BACKEND_URL", server.url + "/v1")
        yield server.url + "/v1"


def test_chat_loop_calls_mcp_tools(backend: str) -> None:
    from openai import OpenAI

    tools_dir = Path(str(data_dir("examples").joinpath("mcp-tools")))
    with BackgroundServer(tools_dir) as tools, BackgroundServer(AGENT) as agent:
        assert agent.runner.state == "ready", agent.runner.error
        client = OpenAI(base_url=agent.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        reply = client.chat.completions.create(
            model="agent",
            messages=[{"role": "user", "content": "what is 2 + 40?"}],
            extra_body={"mcp_servers": [tools.url + "/mcp"]},
        )
        assert reply.choices[0].message.content == "The sum is 42.0."
        offered = {t["function"]["name"] for t in ScriptedBackend.requests[0]["tools"]}
        assert offered == {"add", "word_count", "change_case", "repeat"}
        assert ScriptedBackend.requests[1]["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "call-1",
            "content": "42.0",
        }
        stream = client.chat.completions.create(
            model="agent",
            messages=[{"role": "user", "content": "again"}],
            extra_body={"mcp_servers": [tools.url + "/mcp"]},
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "The sum is 42.0."
        # without servers it is a plain chat model over the backend
        plain = client.chat.completions.create(model="agent", messages=[{"role": "user", "content": "hi"}])
        assert plain.choices[0].message.content == "no tools offered"
