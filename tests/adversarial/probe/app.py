"""probe: a hostile KAMI tool in Python (componentize-py) for tests/adversarial.

Its input is one step or a list of steps, ``{"op": ..., ...}``; it runs each and reports
``{"ok": result}`` or ``{"error": "...", "errno": n}`` for each, never trapping, so one
call can try many escapes and the test sees exactly which failed and how.
"""

import json
import os

from wit_world import exports


def _read(a):
    with open(a["path"], "rb") as f:
        return f.read(int(a.get("n", 200))).decode("utf-8", "replace")


def _write(a):
    with open(a["path"], "wb") as f:
        f.write(a.get("data", "pwned").encode() * int(a.get("repeat", 1)))
    return "written"


def _fill(a):
    written = 0
    chunk = b"x" * 65536
    with open(a["path"], "ab") as f:
        for _ in range(int(a["chunks"])):
            f.write(chunk)
            written += len(chunk)
    return written


def _chdir_read(a):
    os.chdir(a["dir"])
    return _read(a)


OPS = {
    "read": _read,
    "write": _write,
    "fill": _fill,
    "listdir": lambda a: sorted(os.listdir(a["path"])),
    "symlink": lambda a: os.symlink(a["target"], a["path"]) or "linked",
    "readlink": lambda a: os.readlink(a["path"]),
    "link": lambda a: os.link(a["src"], a["path"]) or "linked",
    "mkdir": lambda a: os.mkdir(a["path"]) or "made",
    "unlink": lambda a: os.unlink(a["path"]) or "removed",
    "rename": lambda a: os.rename(a["src"], a["path"]) or "renamed",
    "chdir_read": _chdir_read,
    "stat": lambda a: os.stat(a["path"]).st_size,
    "environ": lambda a: dict(os.environ),
    "getenv": lambda a: os.environ.get(a["name"]),
}


class Tool(exports.Tool):
    def run(self, input: str) -> str:
        args = json.loads(input)
        results = []
        for step in args if isinstance(args, list) else [args]:
            try:
                results.append({"ok": OPS[step["op"]](step)})
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                results.append({"error": error, "errno": getattr(exc, "errno", None)})
        return json.dumps(results)
