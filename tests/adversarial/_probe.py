"""The Python probe guest (tests/adversarial/probe), built once and cached like the examples.

It is copied into ``<toolchain>/adversarial/<key>/probe`` (``key`` hashes its sources, the
WIT and the toolchain version) and built there, so a session whose inputs did not change
builds nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import tempfile
from pathlib import Path

from kamictl import build
from tests._examples import REPO, _env, _locked, toolchain

SOURCE = Path(__file__).resolve().parent / "probe"


def _key() -> str:
    digest = hashlib.sha256(importlib.metadata.version("componentize-py").encode())
    files = [SOURCE / "app.py", SOURCE / "tool.toml", *sorted(REPO.joinpath("wit").rglob("*.wit"))]
    files.append(Path(build.__file__))
    for path in files:
        digest.update(f"\0{path.name}\0".encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def build_probe() -> Path:
    """The probe's tool directory, with its component built (treat it as read-only)."""
    root = toolchain() / "adversarial" / _key()
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root.parent))
        shutil.copytree(SOURCE, staging / "probe", ignore=shutil.ignore_patterns("build"))
        try:
            staging.rename(root)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not root.exists():
                raise
    with _env("KAMI_TOOLCHAIN", str(toolchain())), _locked(root / ".build.lock"):
        build.build_tool(root / "probe", progress=lambda line: None)
    return root / "probe"
