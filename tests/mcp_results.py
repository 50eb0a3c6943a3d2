"""What a model's MCP tool answered, for the tests that call `/mcp` (unit and e2e).

`tests/` is on sys.path under pytest (`pythonpath` in pyproject.toml): `from mcp_results import ...`.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_text(content: Sequence[object]) -> str:
    """The text of a tool result's first block, which must be text (an image or a resource there
    fails the test, with the block)."""
    from mcp.types import TextContent  # lazily, as the tests import the MCP clients

    block = content[0]
    assert isinstance(block, TextContent), block
    return block.text
