"""Tools registered three ways: a decorator, add_tool at import, add_tool from a tool."""

from clarifai.runners.models.mcp_class import MCPModelClass
from fastmcp import FastMCP

server = FastMCP("dynamic-tools")


@server.tool
def ping() -> str:
    """Answer pong."""
    return "pong"


def reverse(text: str) -> str:
    """Reverse a text."""
    return text[::-1]


server.add_tool(reverse)


def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@server.tool
def enable_shout() -> str:
    """Register the shout tool."""
    server.add_tool(shout)
    return "enabled"


class DynamicTools(MCPModelClass):
    def get_server(self) -> FastMCP:
        return server
