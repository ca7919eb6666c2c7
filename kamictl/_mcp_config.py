"""``kamictl mcp-config``: the entry an MCP client needs to launch ``kamictl mcp``.

Claude Desktop and Cursor both read ``{"mcpServers": {NAME: {"command", "args", "env"}}}``
from a JSON file. The entry uses absolute paths and carries the environment variables that
decide where kamid's socket is, because these clients start servers with a minimal
environment of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["CLIENTS", "config_path", "server_entry", "write_config"]

CLIENTS = ("claude", "cursor")
#: Variables that move kamid's socket (kamid/protocol/_paths.py); passed on when set.
_PATH_VARS = (
    "KAMI_HOME",
    "XDG_RUNTIME_DIR",
    "XDG_STATE_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
)


def config_path(client: str) -> Path:
    """Where ``client`` reads its MCP servers on this platform."""
    home = Path.home()
    if client == "cursor":
        return home / ".cursor" / "mcp.json"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA") or str(home / "AppData" / "Roaming")
        return Path(appdata) / "Claude" / "claude_desktop_config.json"
    config = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config) if config and os.path.isabs(config) else home / ".config"
    return base / "Claude" / "claude_desktop_config.json"


def _kamictl_command() -> list[str]:
    """An absolute command that runs this kamictl, whatever PATH the client has."""
    beside = Path(sys.executable).with_name("kamictl")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside.absolute())]
    found = shutil.which("kamictl")
    if found:
        return [str(Path(found).resolve())]
    return [str(Path(sys.executable).absolute()), "-m", "kamictl"]


def server_entry(*, profile: str | None, tools: list[str] | None) -> dict[str, Any]:
    """The ``mcpServers`` value that launches ``kamictl mcp`` for one agent."""
    command, *prefix = _kamictl_command()
    args = [*prefix, "mcp"]
    if profile:
        args += ["--profile", profile]
    if tools:
        args += ["--tools", ",".join(tools)]
    entry: dict[str, Any] = {"command": command, "args": args}
    env = {}
    for name in _PATH_VARS:
        value = os.environ.get(name)
        if value:
            env[name] = str(Path(value).expanduser().absolute())
    if env:
        entry["env"] = env
    return entry


def write_config(path: Path, name: str, entry: dict[str, Any]) -> tuple[str, Path | None]:
    """Merges ``{"mcpServers": {name: entry}}`` into the JSON file at ``path``.

    Other servers and keys stay as they are; the old file is copied to a timestamped
    ``.bak`` next to it first.

    Returns:
        ``"created"``, ``"updated"`` or ``"unchanged"``, and the backup's path (if any).

    Raises:
        ValueError: the file exists but is not a JSON object; nothing is written.
        OSError: it cannot be read or written.
    """
    data: dict[str, Any] = {}
    existed = path.exists()
    if existed:
        text = path.read_text(encoding="utf-8")
        try:
            loaded = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); fix or move it, "
                "then run this again (nothing was changed)"
            ) from exc
        if not isinstance(loaded, dict) or not isinstance(loaded.get("mcpServers", {}), dict):
            raise ValueError(
                f'{path} is not a JSON object with an "mcpServers" object; fix or move it, '
                "then run this again (nothing was changed)"
            )
        data = loaded
    servers = data.setdefault("mcpServers", {})
    if servers.get(name) == entry:
        return "unchanged", None
    action = "updated" if existed else "created"
    servers[name] = entry
    backup = None
    path.parent.mkdir(parents=True, exist_ok=True)
    if existed:
        backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, backup)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if existed:
        shutil.copymode(path, tmp)
    os.replace(tmp, path)
    return action, backup
