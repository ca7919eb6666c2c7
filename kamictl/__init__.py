"""kamictl: the thin KAMI client, MCP shim and authoring tools."""
