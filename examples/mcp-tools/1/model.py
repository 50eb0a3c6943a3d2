"""Text and arithmetic tools served over MCP."""

from typing import Annotated, Literal

from clarifai.runners.models.mcp_class import MCPModelClass
from fastmcp import FastMCP
from pydantic import Field

server = FastMCP("text-tools", instructions="Small text and arithmetic tools.")


@server.tool("add", description="Add two numbers.")
def add(
    a: Annotated[float, Field(description="First number")],
    b: Annotated[float, Field(description="Second number")],
) -> float:
    return a + b


@server.tool
def word_count(text: Annotated[str, Field(description="Text to count the words of")]) -> int:
    """Count the words of a text."""
    return len(text.split())


@server.tool(name="change_case", description="Change the case of a text.")
def change_case(
    text: str,
    case: Annotated[Literal["upper", "lower", "title"], Field(description="Target case")] = "upper",
) -> str:
    return {"upper": text.upper(), "lower": text.lower(), "title": text.title()}[case]


@server.tool(description="Repeat a text a number of times, joined by a separator.")
def repeat(text: str, times: int = 2, separator: str = " ") -> str:
    return separator.join([text] * times)


class TextTools(MCPModelClass):
    def get_server(self) -> FastMCP:
        return server
