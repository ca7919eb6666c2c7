"""The systemd units and the launchd agent that run kamid as a service.

One template each, rendered two ways: with systemd specifiers (``%h``, ``%t``) for the
generic files shipped in the repository's ``systemd/`` directory, and with absolute paths
by ``kamictl daemon install-service`` for the current user and interpreter. A test checks
that the shipped files are exactly :func:`generic_files`.
"""

from __future__ import annotations

import plistlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from kamid.protocol import Paths

__all__ = [
    "LAUNCHD_LABEL",
    "ServiceSpec",
    "generic_files",
    "launchd_plist",
    "spec_for",
    "systemd_service",
    "systemd_socket",
]

LAUNCHD_LABEL = "dev.kami.kamid"
SERVICE_NAME = "kamid.service"
SOCKET_NAME = "kamid.socket"
PLIST_NAME = f"{LAUNCHD_LABEL}.plist"


@attrs.frozen(kw_only=True)
class ServiceSpec:
    """What differs between the generic units and one user's."""

    #: The command that runs ``kamid --foreground``.
    argv: tuple[str, ...]
    #: Directories kamid writes (data, cache, logs/state; the run directory unless it is
    #: systemd's RuntimeDirectory).
    writable: tuple[str, ...]
    #: The socket clients connect to.
    socket: str
    #: ``KAMI_HOME``, when the daemon uses one.
    kami_home: str | None = None
    #: For launchd, which has no journal: where kamid's stderr goes ("": nowhere).
    stderr_path: str = ""


#: The files in the repository: kamid from PATH, the XDG default locations.
GENERIC = ServiceSpec(
    argv=("/usr/bin/env", "kamid", "--foreground"),
    writable=("%h/.local/share/kami", "%h/.cache/kami", "%h/.local/state/kami"),
    socket="%t/kami/kamid.sock",
)


def spec_for(paths: Paths, *, kami_home: str | None, python: str | None = None) -> ServiceSpec:
    """The units for this user: this interpreter's kamid, this user's directories."""
    python = python or sys.executable
    if kami_home:
        writable: tuple[str, ...] = (str(Path(kami_home).absolute()),)
    else:
        # The logs directory's parent is the state directory (also the fallback run dir).
        writable = (str(paths.data), str(paths.cache), str(paths.logs.parent))
    return ServiceSpec(
        argv=(python, "-m", "kamid", "--foreground"),
        writable=writable,
        socket=str(paths.socket),
        kami_home=kami_home,
        stderr_path=str(paths.logs / "kamid.stderr"),
    )


def _quote(word: str, *, exec_line: bool = False) -> str:
    """One word of a unit file line: ``%`` (and ``$`` in Exec lines) escaped, quoted if
    it has spaces or quotes."""
    if not word.startswith("%"):  # our own specifiers (%h, %t) stay as they are
        word = word.replace("%", "%%")
    if exec_line:
        word = word.replace("$", "$$")
    if any(c in word for c in " \t\"\\'"):
        word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def systemd_service(spec: ServiceSpec) -> str:
    exec_start = " ".join(_quote(w, exec_line=True) for w in spec.argv)
    writable = " ".join(_quote(p) for p in spec.writable)
    environment = f"Environment={_quote('KAMI_HOME=' + spec.kami_home)}\n" if spec.kami_home else ""
    return f"""\
# kamid as a systemd user service. Install it with `kamictl daemon install-service`,
# which fills in this machine's paths, or copy it to ~/.config/systemd/user/ as is
# (it runs `kamid` from PATH). docs/operators.md explains each setting.
[Unit]
Description=KAMI daemon: sandboxed WebAssembly tools for AI agents
# Socket activation is optional: with kamid.socket enabled, systemd owns the socket,
# starts kamid on the first connection and keeps connections queued across restarts.
After=kamid.socket

[Service]
Type=notify
NotifyAccess=main
{environment}ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM to kamid only: it drains in-flight calls (its worker processes finish theirs)
# within [server].grace_s, then exits 0. Anything left after TimeoutStopSec is killed.
KillMode=mixed
TimeoutStopSec=60
Restart=on-failure
RestartSec=2
# Uncomment to have systemd restart a kamid whose event loop stops answering:
#WatchdogSec=60
UMask=0077

# Hardening. kamid needs its own directories writable, outbound TCP for tools with
# network grants, and W^X exceptions for wasmtime's JIT (no MemoryDenyWriteExecute).
# Note: with PrivateTmp, `kamictl install /tmp/...` cannot see the client's /tmp.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={writable}
RuntimeDirectory=kami
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
AmbientCapabilities=

[Install]
WantedBy=default.target
"""


def systemd_socket(spec: ServiceSpec) -> str:
    return f"""\
# The socket of kamid.service (socket activation): systemd listens, starts kamid on the
# first connection, and hands it the socket as fd 3 (LISTEN_FDS).
[Unit]
Description=KAMI daemon socket

[Socket]
ListenStream={_quote(spec.socket)}
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""


def launchd_plist(spec: ServiceSpec) -> bytes:
    agent: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(spec.argv),
        "RunAtLoad": True,
        # Restarted when it crashes, not after `kamictl daemon stop` (exit 0).
        "KeepAlive": {"SuccessfulExit": False},
        # SIGTERM, then this long to drain before SIGKILL.
        "ExitTimeOut": 60,
        "ThrottleInterval": 5,
        "Umask": 0o077,
        "StandardOutPath": "/dev/null",
    }
    if spec.stderr_path:  # kamid logs to its own file; this catches start-up failures
        agent["StandardErrorPath"] = spec.stderr_path
    if spec.kami_home:
        agent["EnvironmentVariables"] = {"KAMI_HOME": spec.kami_home}
    return plistlib.dumps(agent, sort_keys=False)


def generic_files() -> dict[str, bytes]:
    """The repository's ``systemd/`` directory, file name -> content."""
    launchd = attrs.evolve(GENERIC, argv=("/usr/local/bin/kamid", "--foreground"))
    return {
        SERVICE_NAME: systemd_service(GENERIC).encode(),
        SOCKET_NAME: systemd_socket(GENERIC).encode(),
        PLIST_NAME: launchd_plist(launchd),
    }


if __name__ == "__main__":
    # Regenerates systemd/ in the repository: python -m kamictl._units DIR
    target = Path(sys.argv[1])
    for name, content in generic_files().items():
        (target / name).write_bytes(content)
