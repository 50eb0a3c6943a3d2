"""A small stdio MCP server: notes kept in memory for the life of the process."""

import os

from fastmcp import FastMCP

server = FastMCP("notes")
notes: list[str] = []


@server.tool
def add_note(text: str) -> str:
    """Store a note and return its label."""
    notes.append(text)
    return f"{os.environ.get('NOTES_PREFIX', 'note')}-{len(notes)}"


@server.tool
def list_notes() -> list[str]:
    """Every note stored so far."""
    return list(notes)


@server.tool
def whoami() -> str:
    """The owner given by the NOTES_OWNER secret, or 'nobody'."""
    return os.environ.get("NOTES_OWNER", "nobody")


if __name__ == "__main__":
    server.run()
