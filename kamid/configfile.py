"""Editing ``kamid.toml`` from the daemon: with tomlkit, so the operator's comments survive.

Only the ``[limits]`` and ``[ceilings]`` tables are edited (``kamictl limits --set``). The new
text is validated exactly as a start-up would read it before it replaces the file, so an
edit that would make the config invalid changes nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import tomlkit
import tomlkit.exceptions

from kamid.config import load_config
from kamid.protocol import InvalidParams

if TYPE_CHECKING:
    from kamid.config import DaemonConfig

__all__ = ["EDITABLE_SECTIONS", "set_values"]

EDITABLE_SECTIONS = ("limits", "ceilings")


def set_values(path: Path, changes: dict[str, dict[str, int]]) -> DaemonConfig:
    """Sets ``changes[section][key] = value`` in the config file; returns the new config.

    Raises:
        InvalidParams: an unknown section or key, a bad value, a default above its
            ceiling, or a file that is not valid TOML; the file is left as it was.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise InvalidParams(f"{path}: not valid TOML ({exc}); fix it by hand first") from exc
    for section, values in changes.items():
        if section not in EDITABLE_SECTIONS:
            raise InvalidParams(
                f"only {', '.join(EDITABLE_SECTIONS)} can be edited (got {section})"
            )
        table = doc.get(section)
        if table is None:
            table = tomlkit.table()
            doc[section] = table
        for key, value in values.items():
            table[key] = value
    new_text = tomlkit.dumps(doc)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=".kamid.toml.", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
            f.flush()
            os.fsync(f.fileno())
        try:
            config = load_config(tmp)  # exactly what a start-up would read
        except InvalidParams as exc:
            message = exc.message.replace(str(tmp), str(path)).replace(tmp.name, path.name)
            raise InvalidParams(message + "; nothing was changed", data=exc.data) from exc
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return config
