"""Tools that use the MCP session: progress, logging, sampling, elicitation."""

import asyncio

from clarifai.runners.models.mcp_class import MCPModelClass
from fastmcp import Context, FastMCP

server = FastMCP("session-tools")
_ticking: set[asyncio.Task[None]] = set()


@server.tool
async def count(n: int, ctx: Context) -> int:
    """Count to n, reporting progress and logging each step."""
    for i in range(n):
        await ctx.report_progress(i + 1, n)
        await ctx.info(f"step {i + 1}")
    return n


@server.tool
async def remember(value: str, ctx: Context) -> str:
    """Keep a value in the session's state."""
    await ctx.set_state("value", value)
    return "kept"


@server.tool
async def recall(ctx: Context) -> str:
    """The value kept in this session."""
    return str(await ctx.get_state("value"))


@server.tool
async def ask_user(question: str, ctx: Context) -> str:
    """Ask the user (elicitation)."""
    result = await ctx.elicit(question, response_type=str)
    return f"elicited: {getattr(result, 'data', result)}"


@server.tool
async def tick(n: int, interval: float, ctx: Context, padding: int = 0) -> str:
    """Send n notifications of the session (not of this request: they ride its GET stream), one
    each interval seconds, after this call has answered: resource updates tick://0, tick://1, ...
    (each ``padding`` bytes longer)."""
    session = ctx.session
    pad = f"?{'x' * padding}" if padding else ""

    async def send() -> None:
        for i in range(n):
            await asyncio.sleep(interval)
            await session.send_resource_updated(f"tick://{i}{pad}")

    task = asyncio.get_running_loop().create_task(send())
    _ticking.add(task)
    task.add_done_callback(_ticking.discard)
    return "ticking"


class SessionTools(MCPModelClass):
    def get_server(self) -> FastMCP:
        return server
