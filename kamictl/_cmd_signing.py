"""``kamictl keygen``, ``sign``, ``verify``, ``trust``, ``package`` and ``publish``.

Keys, signing and packaging happen here, in the client (the daemon never holds a
publisher's private key); ``verify`` and ``trust`` ask the daemon, which keeps the trust
store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kamictl._cmd_registry import print_table
from kamictl.cli import EXIT_ERROR, EXIT_OK, UsageError, client_for, print_json

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

__all__ = ["register"]


def cmd_keygen(args: argparse.Namespace) -> int:
    from kamictl import _keys, _render

    pair, path = _keys.generate(args.name)
    if args.json:
        print_json({"name": pair.name, "key_id": pair.key_id, "public_key": pair.public_text})
        return EXIT_OK
    _render.note(f"wrote {path} (private, mode 600) and {path.with_suffix('.pub')}")
    _render.note(f"key id {pair.key_id}")
    _render.out.print(pair.public_text, markup=False)
    _render.note(f"operators trust it with: kamictl trust add {pair.public_text}")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    from kamictl import _keys, _render
    from kamictl.package import sign_path

    target = Path(args.path).expanduser().resolve()
    if not target.exists():
        raise UsageError(f"{target} does not exist; sign a tool directory or a .kami package")
    pair = _keys.load(args.key)
    package, written = sign_path(target, pair)
    if args.json:
        print_json({"file": str(written), **package.signature.to_json()})  # type: ignore[union-attr]
        return EXIT_OK
    m = package.manifest
    _render.note(f"signed {m.id} {m.version} with key {pair.key_id} ({pair.name}): {written}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from kamictl import _render

    target = args.target
    path = Path(target).expanduser()
    if "://" in target:
        params = {"package": target}
    elif path.is_file():
        params = {"package": str(path.resolve())}
    else:
        params = {"tool": target}
    with client_for(args) as client:
        result = client.call("tools.verify", params)
    ok = result["valid"] and result["trusted"]
    if args.json:
        print_json(result)
    elif ok:
        _render.note(result["message"])
    else:
        _render.error(result["message"])
    return EXIT_OK if ok else EXIT_ERROR


def cmd_trust(args: argparse.Namespace) -> int:
    from kamictl import _render

    with client_for(args) as client:
        if args.action == "list":
            result = client.call("trust.list")
        elif not args.key:
            raise UsageError(f"usage: kamictl trust {args.action} KEY")
        elif args.action == "add":
            key = args.key
            if Path(key).expanduser().is_file():  # a .pub file
                key = Path(key).expanduser().read_text(encoding="utf-8").strip()
            result = client.call("trust.add", {"public_key": key, "name": args.name or ""})
        else:
            result = client.call("trust.remove", {"key": args.key})
    if args.json:
        print_json(result)
        return EXIT_OK
    if args.action == "list":
        _trusted(result)
        return EXIT_OK
    key = result["key"]
    tools = f"; it signed {', '.join(result['tools'])}" if result["tools"] else ""
    if args.action == "add":
        verb = "now trusting" if result["changed"] else "already trusted"
        _render.note(f"{verb} key {key['key_id']} {key['name']}{tools}".rstrip())
    else:
        _render.note(f"no longer trusting key {key['key_id']} {key['name']}{tools}".rstrip())
    return EXIT_OK


def _trusted(result: dict[str, Any]) -> None:
    from rich.table import Table

    from kamictl import _render

    policy = "required" if result["require_signatures"] else "not required"
    if not result["keys"]:
        _render.note(f"no trusted keys (signatures {policy}); add one with `kamictl trust add`")
        return
    table = Table("key id", "name", "public key", "added", title=f"signatures {policy}")
    for k in result["keys"]:
        added = time.strftime("%Y-%m-%d %H:%M", time.localtime(k["added_at"]))
        table.add_row(k["key_id"], k["name"], k["public_key"], added)
    print_table(table)


def cmd_package(args: argparse.Namespace) -> int:
    from kamictl import _keys, _render
    from kamictl.package import default_package_name, pack, write_atomic

    tool_dir = Path(args.path).expanduser().resolve()
    key = _keys.load(args.key) if args.key else None
    package, data = pack(tool_dir, key=key)
    out = Path(args.output).expanduser() if args.output else Path(default_package_name(package))
    write_atomic(out, data)
    signed = f"signed by {package.signature.key_id}" if package.signature else "unsigned"
    if args.json:
        print_json(
            {"file": str(out.resolve()), "size": len(data), "signed": bool(package.signature)}
        )
    else:
        _render.note(f"wrote {out} ({len(data)} bytes, {signed})")
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    from kamictl import _keys, _render
    from kamictl.package import publish

    tool_dir = Path(args.path).expanduser().resolve()
    key = _keys.load(args.key)
    if not args.no_build:
        from kamid.protocol import load_manifest

        if load_manifest(tool_dir).build is not None:
            from kamictl.build import build_tool

            with _render.progress(f"Building {tool_dir.name}") as update:
                build_tool(tool_dir, progress=lambda line: update("progress", {"message": line}))
    result = publish(
        tool_dir,
        Path(args.registry_dir).expanduser().resolve(),
        key,
        categories=args.category,
        tags=args.tag,
    )
    if args.json:
        print_json(
            {
                "tool": result.tool,
                "version": result.version,
                "artifact": str(result.artifact),
                "index": str(result.index),
                "sha256": result.sha256,
                "size": result.size,
                "changed": result.changed,
            }
        )
    elif result.changed:
        _render.note(
            f"published {result.tool} {result.version} signed by {key.key_id}: "
            f"{result.artifact} ({result.size} bytes), {result.index}"
        )
    else:
        _render.note(f"{result.tool} {result.version} is already published (same content)")
    return EXIT_OK


def register(add: Callable[..., Any]) -> None:
    p = add("keygen", cmd_keygen, "create an Ed25519 key pair for signing tools")
    p.add_argument("--name", default="default", help="key name (default: default)")
    p = add("sign", cmd_sign, "sign a tool directory (writes tool.sig) or a .kami package")
    p.add_argument("path", help="tool directory or .kami file")
    p.add_argument("--key", default="default", help="key name or path (default: default)")
    p = add("verify", cmd_verify, "check the signature of an installed tool or a package")
    p.add_argument("target", help="tool id, .kami file, or package URL")
    p = add("trust", cmd_trust, "add, list or remove publisher keys the daemon trusts")
    p.add_argument("action", choices=["add", "list", "remove"])
    p.add_argument("key", nargs="?", help="ed25519:… public key (or a .pub file), or a key id")
    p.add_argument("--name", help="with add: a name to remember the key by")
    p = add("package", cmd_package, "package a built tool directory into a .kami file")
    p.add_argument("path", help="tool directory")
    p.add_argument("--output", "-o", help="the .kami file to write (default: ID-VERSION.kami)")
    p.add_argument("--key", help="sign it with this key (name or path)")
    p = add("publish", cmd_publish, "build, package, sign and add a tool to a registry directory")
    p.add_argument("path", help="tool directory")
    p.add_argument("--registry-dir", required=True, help="registry directory (index.json)")
    p.add_argument("--key", default="default", help="key name or path (default: default)")
    p.add_argument("--category", action="append", help="a category (repeatable)")
    p.add_argument("--tag", action="append", help="a tag (repeatable)")
    p.add_argument("--no-build", action="store_true", help="publish the component as built")
