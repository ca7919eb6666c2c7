"""kamid and its supervisor: signals, live config reloads, and what systemd is told.

* SIGTERM, SIGINT and ``daemon.stop``: ``STOPPING=1``, stop accepting, drain in-flight
  calls under ``[server].grace_s``, exit 0.
* SIGHUP: read ``kamid.toml`` again. An invalid file is refused with a logged error and
  the running configuration stays, untouched. A valid one applies the sections in
  :data:`LIVE` at once; changes anywhere else (``[engine]``, ``[metrics]``, ``[net]``, ...)
  are logged as waiting for a restart, and the running values stay until then.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

import attrs
import trio

from kamid.config import load_config
from kamid.protocol import KamiError

if TYPE_CHECKING:
    from collections.abc import Callable

    from kamid.config import DaemonConfig
    from kamid.protocol import Paths
    from kamid.systemd import Notifier

__all__ = ["LIVE", "Supervisor", "needs_restart"]

log = logging.getLogger("kamid")

#: Sections a SIGHUP applies while kamid runs. ``[server]`` settings apply to new
#: connections (and ``grace_s`` to the next stop); the rest to the next call. Every other
#: section is read once at start (the engine's threads, processes and caches, the
#: metrics listener, the HTTP client's limits).
LIVE = ("limits", "ceilings", "scheduler", "server")
#: How often the ``STATUS=`` line shown by ``systemctl status`` is refreshed.
STATUS_INTERVAL_S = 10.0


def _restart_sections(config: DaemonConfig) -> list[str]:
    return [f.name for f in attrs.fields(type(config)) if f.name not in LIVE]


def needs_restart(old: DaemonConfig, new: DaemonConfig) -> list[str]:
    """The settings that differ between ``old`` and ``new`` and only apply on restart."""
    changed = []
    for section in _restart_sections(old):
        before, after = getattr(old, section), getattr(new, section)
        if before == after:
            continue
        if not attrs.has(type(before)):
            changed.append(f"[{section}]")
            continue
        for field in attrs.fields(type(before)):
            if getattr(before, field.name) != getattr(after, field.name):
                changed.append(f"[{section}].{field.name}")
    return changed


class Supervisor:
    """Handles signals for a running daemon and keeps the service manager informed.

    Args:
        paths: where ``kamid.toml`` is.
        service: the :class:`kamid.service.KamiService` (its ``config``, ``scheduler``,
            ``metrics`` and ``security`` are updated by a reload).
        server: the :class:`kamid.server.Server`.
        notifier: sd_notify (does nothing outside systemd).
        overrides: applied to every config read (command-line options win over the file).
    """

    def __init__(
        self,
        *,
        paths: Paths,
        service: Any,
        server: Any,
        notifier: Notifier,
        overrides: Callable[[DaemonConfig], DaemonConfig] = lambda c: c,
    ) -> None:
        self.paths = paths
        self.service = service
        self.server = server
        self.notifier = notifier
        self.overrides = overrides

    def stop(self, grace_s: float | None = None) -> None:
        """Starts a drained stop (what SIGTERM and ``daemon.stop`` do); ``grace_s``
        overrides ``[server].grace_s`` for it."""
        if not self.server.draining:
            self.notifier.stopping()
        self.server.stop(grace_s)

    def status_line(self) -> str:
        scheduler = self.service.scheduler.statistics()
        queued = scheduler.queued_interactive + scheduler.queued_batch
        return (
            f"serving {self.paths.socket}: {scheduler.running} calls running, {queued} queued, "
            f"{self.service.calls_served} served, {self.server.connections} connections"
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Handles SIGTERM, SIGINT and SIGHUP until cancelled.

        Started once the handlers are installed (a signal before that has its default
        effect).
        """
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                if self.notifier.enabled:
                    nursery.start_soon(self._report_status)
                task_status.started()
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        await self.reload()
                    else:
                        log.info("%s: stopping", signal.Signals(signum).name)
                        self.stop()

    async def _report_status(self) -> None:
        while True:
            await trio.sleep(STATUS_INTERVAL_S)
            if not self.server.draining:
                self.notifier.status(self.status_line())

    async def reload(self) -> bool:
        """Re-reads ``kamid.toml`` and applies it; False (and nothing changed) if invalid."""
        self.notifier.reloading()
        metrics = self.service.metrics
        path = self.paths.config_file
        try:
            new = self.overrides(await trio.to_thread.run_sync(load_config, path))
        except KamiError as exc:
            log.error("SIGHUP: %s; kept the running configuration", exc.message)
            metrics.config_reloads.inc(result="error")
            self.notifier.notify("READY=1", f"STATUS=reload refused: {exc.message[:200]}")
            return False
        old: DaemonConfig = self.service.config
        waiting = needs_restart(old, new)
        self.apply(new)
        metrics.config_reloads.inc(result="ok")
        log.info("SIGHUP: reloaded %s (%s apply now)", path, ", ".join(f"[{s}]" for s in LIVE))
        if waiting:
            log.warning(
                "SIGHUP: %s changed but only take effect when kamid restarts",
                ", ".join(waiting),
            )
        self.notifier.notify("READY=1", f"STATUS={self.status_line()}")
        return True

    def apply(self, new: DaemonConfig) -> None:
        """Puts the live sections of ``new`` in force; the others keep their old values."""
        old: DaemonConfig = self.service.config
        live = attrs.evolve(new, **{s: getattr(old, s) for s in _restart_sections(old)})
        self.service.config = live
        security = getattr(self.service, "security", None)
        if security is not None and hasattr(security, "config"):
            security.config = live
        self.service.scheduler.reconfigure(live.scheduler)
        self.server.reconfigure(live.server)
