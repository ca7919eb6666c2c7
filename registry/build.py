"""Builds a registry of the example tools into a directory any static file server can serve.

    python registry/build.py [--out registry/build] [--key NAME] [--no-build]

For every ``examples/*/tool.toml``: build the component (``kamictl build``; skipped when up
to date), package it, sign it with the publisher key NAME (``kamictl keygen`` creates one;
this script creates ``registry`` on first use), and add it to ``OUT/index.json`` with the
categories and tags of ``registry/examples.toml``. The output is ``index.json``,
``artifacts/<id>/<id>-<version>.kami`` and ``publisher.pub`` (the key operators trust).
Versions already in the index with the same content are left alone; a changed example
must bump its version. See registry/README.md for serving it.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing

from kamictl import _keys  # noqa: E402
from kamictl.package import PublishResult, publish  # noqa: E402
from kamid.protocol import InvalidParams, KamiError, load_manifest  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["build_registry", "main"]


def publisher_key(name: str) -> _keys.KeyPair:
    """The key ``name``, created on first use."""
    try:
        return _keys.load(name)
    except InvalidParams:
        if (_keys.keys_dir() / f"{name}.key").exists():
            raise
        pair, path = _keys.generate(name)
        sys.stderr.write(f"created publisher key {path} ({pair.key_id})\n")
        return pair


def build_registry(
    tool_dirs: Iterable[Path],
    out: Path,
    key: _keys.KeyPair,
    *,
    metadata: Path = HERE / "examples.toml",
    build: bool = True,
) -> list[PublishResult]:
    """Publishes each tool directory into ``out``; returns what was published."""
    listing = tomllib.loads(metadata.read_text(encoding="utf-8")) if metadata.exists() else {}
    results = []
    for tool_dir in tool_dirs:
        manifest = load_manifest(tool_dir)
        if build and manifest.build is not None:
            from kamictl.build import build_tool

            build_tool(tool_dir, progress=lambda line: None)
        meta = listing.get(manifest.id, {})
        results.append(
            publish(
                tool_dir,
                out,
                key,
                categories=list(meta.get("categories", [])),
                tags=list(meta.get("tags", [])),
            )
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "publisher.pub").write_text(key.public_text + "\n", encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(HERE / "build"), help="output directory")
    parser.add_argument("--key", default="registry", help="publisher key name (kamictl keygen)")
    parser.add_argument("--examples", default=str(REPO / "examples"), help="examples directory")
    parser.add_argument("--no-build", action="store_true", help="use the components as built")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    dirs = sorted(p.parent for p in Path(args.examples).glob("*/tool.toml"))
    try:
        key = publisher_key(args.key)
        results = build_registry(dirs, out, key, build=not args.no_build)
    except KamiError as exc:
        sys.stderr.write(f"registry/build.py: {exc.message}\n")
        return 1
    for r in results:
        state = "published" if r.changed else "unchanged"
        sys.stderr.write(f"{state}: {r.tool} {r.version} ({r.size} bytes)\n")
    index = out / "index.json"
    sys.stderr.write(
        f"\nregistry: {index}\n"
        f"trust its key:   kamictl trust add {key.public_text}\n"
        f"use it locally:  kamictl registry add examples {index.as_uri()}\n"
        f"or serve it:     python -m http.server -d {out} 8000  (then http://HOST:8000/index.json)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
