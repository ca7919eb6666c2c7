"""A process-wide setting kamid needs before anything runs: how glibc copies large blocks.

With the pooling allocator, closing a call's store copies the component's memory image
back over its slot: 9 MiB for the JS example, 12 MiB for the Python one, after every call
(on the reaper thread, once the answer is out). glibc's ``memcpy`` uses ordinary stores
below ``glibc.cpu.x86_non_temporal_threshold`` (by default three quarters of the shared
cache per thread: tens of MiB on a server CPU), so each reset floods the caches the next
call, the client and the request path run from. Above the threshold it uses
non-temporal stores, which bypass the caches. kamid sets the threshold to 256 KiB for
itself: on a 2-vCPU VM the JS example's ``tools.exec`` round trip went from 1.31-1.40 ms
to 1.10-1.18 ms and kamid's CPU time per call from 2.2 to 1.6-1.75 ms (same run,
alternating); the in-process ``Engine.call`` floor did not change (0.83-0.88 ms).
Measured again once the reset ran on a ``SCHED_IDLE`` reaper, the gain is smaller: the
round trip with the threshold was 0.96x of the one without for the Python example and
0.97-1.01x for the JS one (``side_by_side``, twice). It has a cost too: after a reset
the guest's memory is not in the cache, so the JS example's ``run`` itself takes
410-450 µs instead of 315 µs in-process; the reset it speeds up just outweighs that.

glibc reads tunables once, when a process starts, so ``kamid`` (``kamid.__main__``)
starts itself again with it in ``GLIBC_TUNABLES`` before importing anything else (same
command line, file descriptors and pid; it costs one Python start-up, ~20 ms), and
passes it to the daemon it spawns. A ``GLIBC_TUNABLES`` that already names the
threshold is left as it is.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["NON_TEMPORAL_THRESHOLD", "reexec_tuned", "tuned_environ"]

_TUNABLE = "glibc.cpu.x86_non_temporal_threshold"
#: Copies above this many bytes bypass the caches.
NON_TEMPORAL_THRESHOLD = 256 * 1024


def _glibc_x86_64() -> bool:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None  # "glibc 2.36"; musl: error
    except (OSError, ValueError):
        return False


def tuned_environ(environ: Mapping[str, str]) -> dict[str, str] | None:
    """``environ`` with kamid's glibc tunable added, or None when nothing is to add (not
    glibc on x86-64, or ``GLIBC_TUNABLES`` already names the threshold)."""
    current = environ.get("GLIBC_TUNABLES", "")
    if _TUNABLE in current or not _glibc_x86_64():
        return None
    setting = f"{_TUNABLE}={NON_TEMPORAL_THRESHOLD}"
    return {**environ, "GLIBC_TUNABLES": f"{current}:{setting}" if current else setting}


def reexec_tuned() -> None:
    """Replaces this process by the same command under :func:`tuned_environ`, when that
    adds anything (so once at most: the new process finds it set). Call it before
    opening any file or thread. If the exec fails, this process carries on untuned."""
    env = tuned_environ(os.environ)
    if env is None:
        return
    try:
        os.execve(sys.executable, sys.orig_argv, env)  # noqa: S606 (the same command again)
    except OSError as exc:
        sys.stderr.write(f"kamid: could not restart with {_TUNABLE} set ({exc}); going on\n")
