"""Tools that use the MCP session: progress, logging, sampling, elicitation."""

from clarifai.runners.models.mcp_class import MCPModelClass
from fastmcp import Context, FastMCP

server = FastMCP("session-tools")


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


class SessionTools(MCPModelClass):
    def get_server(self) -> FastMCP:
        return server
