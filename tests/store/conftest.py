from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from kamid.protocol import Paths
from kamid.store import Store

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.under(tmp_path / "home")


@pytest.fixture
def store(paths: Paths) -> Iterator[Store]:
    with Store(paths) as s:
        yield s
