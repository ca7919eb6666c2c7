"""The daemon's MCP server side: one session per agent, on connections ``kamictl mcp``
attaches with ``mcp.attach``, and the profiles and change events they share."""

from ._events import Change, EventBus
from ._hub import McpHub

__all__ = ["Change", "EventBus", "McpHub"]
