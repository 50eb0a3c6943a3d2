"""`AgenticModelClass`: an OpenAI-compatible chat model whose replies may call MCP tools.

A chat request may name MCP servers by URL (``"mcp_servers": ["http://.../mcp", ...]``,
as the Clarifai SDK's agentic models take them; the class attribute ``mcp_servers`` is
the default). Their tools are offered to the backend as OpenAI ``tools``; each tool
call the backend answers with is run on the server that has the tool (``fastmcp``
client) and its result goes back as a ``tool`` message, until the backend answers
without tool calls or ``max_tool_rounds`` is reached. Without servers it is a plain
`OpenAIModelClass`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

from modelpack.runtime.helpers import OpenAIModelClass, completion_chunks

log = logging.getLogger("modelpack.runtime.agentic")


def _servers(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [str(v.get("url") if isinstance(v, dict) else v) for v in value if v]
    return []


def _openai_tool(tool: Any) -> dict[str, Any]:
    schema = getattr(tool, "input_schema", None) or getattr(tool, "inputSchema", None) or {}
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description or "", "parameters": schema},
    }


def _tool_text(result: Any) -> str:
    parts = [getattr(c, "text", None) or json.dumps(getattr(c, "model_dump", dict)()) for c in result.content]
    return "\n".join(parts)


class AgenticModelClass(OpenAIModelClass):
    """See the module docstring."""

    mcp_servers: Sequence[str] = ()
    max_tool_rounds = 10

    def chat_completion(self, request: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        request = dict(request)
        servers = _servers(request.pop("mcp_servers", None)) or list(self.mcp_servers)
        stream = bool(request.pop("stream", False))
        if not servers:
            result = super().chat_completion(request)
        else:
            result = asyncio.run(self._agent_loop(request, servers))
        if not stream:
            return result
        assert isinstance(result, dict)
        text = result["choices"][0]["message"].get("content") or ""
        return completion_chunks([text], str(result.get("model", "")))

    async def _agent_loop(self, request: dict[str, Any], servers: list[str]) -> dict[str, Any]:
        from fastmcp import Client

        async with AsyncExitStack() as stack:
            owners: dict[str, Any] = {}
            tools: list[dict[str, Any]] = []
            for url in servers:
                client = await stack.enter_async_context(Client(url))
                for tool in await client.list_tools():
                    if tool.name not in owners:
                        owners[tool.name] = client
                        tools.append(_openai_tool(tool))
            messages = [dict(m) for m in request.get("messages", [])]
            body = {**request, "model": self.backend_model(), "stream": False}
            body["tools"] = [*(request.get("tools") or []), *tools]
            for _ in range(self.max_tool_rounds):
                body["messages"] = messages
                reply = await asyncio.to_thread(self._backend_json, "POST", "/chat/completions", body)
                message = reply["choices"][0]["message"]
                calls = [c for c in message.get("tool_calls") or [] if c["function"]["name"] in owners]
                if not calls:
                    return reply
                messages.append(message)
                for call in calls:
                    name = call["function"]["name"]
                    arguments = json.loads(call["function"].get("arguments") or "{}")
                    log.info("tool call %s", name)
                    try:
                        content = _tool_text(await owners[name].call_tool(name, arguments))
                    except Exception as error:  # the backend sees the failure and may recover
                        content = f"error: {type(error).__name__}: {error}"
                    messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
            raise RuntimeError(f"no answer after {self.max_tool_rounds} rounds of tool calls")
