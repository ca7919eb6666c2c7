"""Tool log files: kept open, and reopened when rotated behind the daemon's back."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from kamid import toollog
from kamid.toollog import ToolLogs

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_a_rotated_file_is_reopened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toollog, "RECHECK_S", 0.0)  # check the path on every append
    logs = ToolLogs(tmp_path / "tools")
    logs.append("dev.t", "one\n")
    path = logs.path("dev.t")
    os.rename(path, f"{path}.1")  # what logrotate does (without copytruncate)
    logs.append("dev.t", "two\n")
    assert (tmp_path / "tools" / "dev.t.log.1").read_text() == "one\n"
    assert path.read_text() == "two\n"
    path.unlink()  # deleted: recreated
    logs.append("dev.t", "three\n")
    assert path.read_text() == "three\n"
    logs.close()


def test_the_path_is_checked_at_most_every_recheck_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(toollog, "RECHECK_S", 3600.0)
    logs = ToolLogs(tmp_path / "tools")
    logs.append("dev.t", "one\n")
    path = logs.path("dev.t")
    os.rename(path, f"{path}.1")
    logs.append("dev.t", "two\n")  # within the interval: still the open (rotated) file
    assert (tmp_path / "tools" / "dev.t.log.1").read_text() == "one\ntwo\n"
    assert not path.exists()
    logs.close()
