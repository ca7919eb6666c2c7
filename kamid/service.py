"""The daemon's handlers: what each wire method does with the store, engine and executor.

Blocking work (apsw, file reads, wasmtime) never runs on the trio loop: store and file
operations go through :meth:`KamiService._io`, wasm through the executor.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from kamid import __version__
from kamid.audit import call_row
from kamid.capabilities import component_imports
from kamid.hostapi import HostContext, NetSession, Network
from kamid.inbox import TrioInbox
from kamid.mcp import McpHub
from kamid.metrics import DaemonMetrics
from kamid.protocol import (
    DaemonStatusParams,
    DaemonStatusResult,
    DaemonStopParams,
    DaemonStopResult,
    ExecToolParams,
    ExecToolResult,
    Grants,
    InspectToolParams,
    InspectToolResult,
    InstallToolParams,
    InstallToolResult,
    InternalError,
    InvalidParams,
    InvalidTool,
    KamiError,
    ListToolsParams,
    ListToolsResult,
    Manifest,
    RunWasmParams,
    ToolSummary,
    UninstallToolParams,
    UninstallToolResult,
    check_component,
    converter,
    encode_frame,
    load_manifest,
    make_error,
    make_result,
    structure_params,
)
from kamid.registry import SupplyService, directory_provenance
from kamid.sandbox import with_timeout
from kamid.scheduler import Scheduler
from kamid.secrets import Secrets
from kamid.security import Security
from kamid.store import AuditRow, ToolRecord
from kamid.toollog import ToolLogs

if TYPE_CHECKING:
    from collections.abc import Callable

    from kamid.config import DaemonConfig
    from kamid.dispatch import Handler
    from kamid.engine import CallOutcome, Engine, Executor
    from kamid.fsbox import CallPlan
    from kamid.protocol import CallerInfo, Paths, Priority
    from kamid.registry import Progress, Provenance
    from kamid.sandbox import Limits
    from kamid.server import ConnectionLease, Peer, RequestContext
    from kamid.store import Store

__all__ = ["KamiService"]

log = logging.getLogger("kamid.service")
T = TypeVar("T")


class KamiService:
    """Owns the store, engine and executor and implements every wire method."""

    def __init__(
        self,
        *,
        paths: Paths,
        config: DaemonConfig,
        store: Store,
        engine: Engine,
        executor: Executor,
    ) -> None:
        self.paths = paths
        self.config = config
        self.store = store
        self.engine = engine
        self.executor = executor
        self.started_at = time.time()
        self.calls_served = 0
        self.calls_failed = 0
        self.calls_fast = 0
        #: Of those, calls a call thread read from a lent connection (ConnectionLease).
        self.calls_leased = 0
        #: Connections lent to call threads (their calls run without a trio task).
        self._leases: set[ConnectionLease] = set()
        self.calls_in_flight = 0
        self.connections: Callable[[], int] = lambda: 0
        #: Starts a drained stop, with this grace period (None: the configured one).
        self.request_stop: Callable[[float | None], None] = lambda _grace_s: None
        # apsw serialises anyway; one thread keeps install transactions strictly ordered.
        self._io_limiter = trio.CapacityLimiter(1)
        self._resolved: dict[str, _Target] = {}
        self._install_lock = trio.Lock()
        #: Per-tool log files, kept open (kamid/toollog.py).
        self.tool_logs = ToolLogs(paths.tool_logs)
        #: Where fast-lane calls leave what must run on trio after them (see kamid.inbox).
        self.inbox = TrioInbox()
        #: Grants, the audit log and call sandboxes (kamid/security.py).
        self.security = Security(paths=paths, config=config, store=store, io=self._io)
        self.security.config_changed = functools.partial(setattr, self, "config")
        #: MCP sessions, profiles and change events (kamid/mcp).
        self.mcp = McpHub(self)
        self.security.grants_changed = self.mcp.tools_changed
        #: kami:tool/http (kamid/hostapi/_http.py) and the secrets it injects (kamid/secrets.py).
        self.network = Network(config.net)
        self.secrets = Secrets(directory=paths.data / "secrets", store=store, io=self._io)
        #: Admission of calls and the metrics (kamid/scheduler.py, kamid/metrics.py).
        self.metrics = DaemonMetrics(self)
        self.scheduler = Scheduler(
            config.scheduler, workers=executor.concurrency, observer=self.metrics
        )
        # A connection lease keeps a slot and a call thread while it waits for its next
        # call: it gives them up at once when someone else needs one.
        self.scheduler.on_wait = self._interrupt_leases
        executor.threads.on_backlog = self._interrupt_leases
        #: Where --metrics-listen serves, once it does.
        self.metrics_address: str | None = None
        #: Registries, packages, signatures and trust (kamid/registry).
        self.supply = SupplyService(
            paths=paths,
            config=lambda: self.config,
            store=store,
            io=self._io,
            install=self.install_component,
        )

    def handlers(self) -> dict[str, Handler]:
        return {
            "daemon.status": self.daemon_status,
            "daemon.stop": self.daemon_stop,
            "tools.install": self.security.audit_failures("install", self.tools_install),
            "tools.list": self.tools_list,
            "tools.inspect": self.tools_inspect,
            "tools.uninstall": self.security.audit_failures("uninstall", self.tools_uninstall),
            "tools.exec": self.tools_exec,
            "wasm.run": self.wasm_run,
            "metrics.get": self.metrics.handle_get,
            **self.security.handlers(),
            **self.mcp.handlers(),
            **self.secrets.handlers(),
            **self.supply.handlers(),
        }

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._io_limiter)

    # daemon.*
    def _interrupt_leases(self) -> None:
        for lease in tuple(self._leases):
            lease.interrupt()

    @property
    def calls_running(self) -> int:
        """Calls in flight, those running under a connection lease included."""
        return self.calls_in_flight + sum(lease.busy for lease in self._leases)

    async def daemon_status(self, _p: DaemonStatusParams, _ctx: RequestContext) -> Any:
        return DaemonStatusResult(
            version=__version__,
            wasmtime_version=self.engine.wasmtime_version,
            pid=os.getpid(),
            home=str(self.paths.data.parent),
            socket=str(self.paths.socket),
            started_at=self.started_at,
            uptime_s=time.time() - self.started_at,
            tools=await self._io(self.store.count),
            calls_served=self.calls_served,
            calls_failed=self.calls_failed,
            calls_in_flight=self.calls_running,
            calls_fast=self.calls_fast,
            calls_leased=self.calls_leased,
            connections=self.connections(),
            cache=self.executor.statistics(),
            scheduler=self.scheduler.statistics(),
            activity=self.metrics.activity(self.scheduler.tool_load()),
            metrics_address=self.metrics_address,
        )

    async def daemon_stop(self, p: DaemonStopParams, ctx: RequestContext) -> Any:
        if p.grace_s is not None and not 0 <= p.grace_s <= 3600:
            raise InvalidParams(
                f"daemon.stop: grace_s must be 0-3600 seconds (got {p.grace_s:g}); leave it "
                "out for the configured [server].grace_s"
            )
        log.info(
            "stop requested by pid %d%s",
            ctx.peer.pid,
            "" if p.grace_s is None else f" (grace {p.grace_s:g} s)",
        )
        self.request_stop(p.grace_s)
        return DaemonStopResult(stopping=True, in_flight=self.calls_running)

    # tools.*
    async def tools_install(self, p: InstallToolParams, ctx: RequestContext) -> Any:
        progress = ctx.progress(p.progress_token)

        if sum(bool(x) for x in (p.path, p.package, p.ref)) != 1:
            raise InvalidParams("tools.install: give exactly one of path, package and ref")
        if p.package is not None or p.ref is not None:
            # A package file or URL, or a registry reference (kamid/registry).
            return await self.supply.install(p, progress, peer=ctx.peer)
        tool_dir = Path(p.path)
        if not tool_dir.is_absolute():
            raise InvalidParams(f"tools.install: path must be absolute (got {p.path!r})")
        await progress("reading", f"reading {tool_dir / 'tool.toml'}")
        manifest = await self._io(_load_tool_dir, tool_dir)
        wasm_path = (tool_dir / manifest.tool.wasm).resolve()
        build_hint = tool_dir if manifest.build is not None else None
        data = await self._io(_read_component, wasm_path, build_hint)
        provenance = await self._io(directory_provenance, tool_dir)
        return await self.install_component(
            manifest,
            data,
            provenance=provenance,
            approve=p.approve,
            progress=progress,
            tool_dir=tool_dir,
            peer=ctx.peer,
        )

    async def install_component(
        self,
        manifest: Manifest,
        data: bytes,
        *,
        provenance: Provenance,
        approve: bool,
        progress: Progress,
        tool_dir: Path,
        peer: Peer,
        grants: Grants | None = None,
    ) -> InstallToolResult:
        """The one install path, whatever the tool came from (directory, package, registry).

        Args:
            manifest: the parsed manifest; ``data``: the component's bytes.
            provenance: where they came from and what vouches for them (signature).
            approve: the operator approved the manifest's requests.
            tool_dir: the directory whose ``assets/`` the tool gets.
            grants: the grants to install with, decided by the caller (an update within
                what the operator already granted, or one they consented to); None: the
                manifest's requests, which then need ``approve``.

        Raises:
            PolicyDenied: unapproved requests, over the ceilings, or signature policy.
            IntegrityError: a signature that does not match.
            InvalidTool: the component does not compile or is not a KAMI tool.
        """
        # Refuses a manifest asking for more than the ceilings before anything is stored.
        raised, requested = self.security.install_requests(manifest)
        if requested and not approve and grants is None:
            # Refuse before storing or compiling anything when the imports can be read
            # from the binary (the approval table needs them); else after the import scan.
            imports = component_imports(data)
            if imports is not None:
                self.security.refuse_unapproved(manifest, requested, raised, imports)
        sha256 = hashlib.sha256(data).hexdigest()
        signer = await self.supply.vouch(manifest, sha256, provenance)
        async with self._install_lock:
            existing = await self._io(self.store.get, manifest.id)
            await progress("storing", f"storing {len(data) / 1e6:.1f} MB, sha256 {sha256[:12]}")
            blob = await self._io(self.store.put_blob, data)
            del data
            try:
                await progress("compiling", "compiling to native code (once per component)")
                report = await self.executor.precompile(sha256, blob.path)
                info = await self.executor.inspect(sha256, blob.path)
                if requested and not approve and grants is None:
                    self.security.refuse_unapproved(manifest, requested, raised, info.imports)
                assets = await self.security.import_assets(tool_dir)
            except BaseException:
                if existing is None or existing.sha256 != sha256:
                    await self._io(self.store.discard_blob, sha256)
                raise
            record = ToolRecord(
                id=manifest.id,
                name=manifest.tool.name,
                version=manifest.version,
                description=manifest.tool.description,
                sha256=sha256,
                size=blob.size,
                manifest=manifest.to_dict(),
                grants=grants.to_dict()
                if grants is not None
                else self.security.install_grants(
                    manifest, raised, existing.grants if existing else None
                ),
                imports=info.imports,
                source=provenance.source,
                installed_at=time.time(),
            )
            outcome = await self._io(self.store.install, record)
            current = record if outcome.changed else existing or record
            await self.security.installed(current, assets, peer)
            await self.supply.recorded(current, provenance, signer, manifest=record.manifest)
        if outcome.changed and existing is not None and existing.sha256 != sha256:
            await self._forget_if_unused(existing.sha256)
        log.info("installed %s %s (%s)", record.id, record.version, sha256[:12])
        if outcome.changed:
            await self.mcp.tools_changed(record.id, tool_dir)  # list_changed to MCP sessions
        return InstallToolResult(
            tool=_summary(current),
            changed=outcome.changed,
            replaced=outcome.replaced,
            compile_ms=report.ms,
            cache=self.engine.cache_state(sha256),
            capabilities=self.security.granted_capabilities(current.grants, info.imports),
            signer=signer,
        )

    async def tools_list(self, _p: ListToolsParams, _ctx: RequestContext) -> Any:
        records = await self._io(self.store.list)
        return ListToolsResult(tools=[_summary(r) for r in records])

    async def tools_inspect(self, p: InspectToolParams, _ctx: RequestContext) -> Any:
        record = await self._io(self.store.resolve, p.tool)
        manifest = Manifest.from_dict(record.manifest)
        return InspectToolResult(
            tool=_summary(record),
            manifest=record.manifest,
            input_schema=manifest.mcp_input_schema(),
            grants=record.grants,
            imports=record.imports,
            cache=self.engine.cache_state(record.sha256),
            blob_path=str(self.store.blob_path(record.sha256)),
            limits=attrs.asdict(
                self.security.limits_for(manifest, Grants.from_dict(record.grants))
            ),
        )

    async def tools_uninstall(self, p: UninstallToolParams, ctx: RequestContext) -> Any:
        async with self._install_lock:
            record = await self._io(self.store.resolve, p.tool)
            await self._io(self.store.uninstall, record.id)
            purged = await self.security.uninstalled(record, purge=p.purge, peer=ctx.peer)
            await self.secrets.forget(record.id)
        await self._forget_if_unused(record.sha256)
        log.info("uninstalled %s %s", record.id, record.version)
        await self.mcp.tools_changed(record.id)  # list_changed to MCP sessions
        return UninstallToolResult(id=record.id, version=record.version, purged=purged)

    async def _forget_if_unused(self, sha256: str) -> None:
        records = await self._io(self.store.list)
        if all(r.sha256 != sha256 for r in records):
            await self._io(self.executor.forget, sha256)

    def _cached_target(self, name: str) -> _Target | None:
        """The call target of ``name`` if cached and still current (no I/O)."""
        hit = self._resolved.get(name)
        if hit is None or hit.generation != self.store.generation or hit.config is not self.config:
            return None
        return hit

    async def _resolve_for_call(self, name: str) -> _Target:
        """The tool as its calls need it; cached until anything in the store (or the
        config) changes.

        Saves a thread hop and two cattrs conversions on every call. The generation is read
        before the store is, so a change racing the read makes the entry stale, not wrong.
        """
        hit = self._cached_target(name)
        if hit is not None:
            return hit
        generation, config = self.store.generation, self.config
        record = await self._io(self.store.resolve, name)
        manifest, grants = Manifest.from_dict(record.manifest), Grants.from_dict(record.grants)
        target = _Target(
            record=record,
            manifest=manifest,
            grants=grants,
            limits=self.security.limits_for(manifest, grants),
            wasm_path=self.store.blob_path(record.sha256),
            plain=not self.security.needs_plan(grants),
            generation=generation,
            config=config,
        )
        if len(self._resolved) >= 1024:
            self._resolved.clear()
        self._resolved[name] = target
        return target

    def _net(self, target: _Target, limits: Limits) -> NetSession | None:
        return self.network.session(
            tool_id=target.record.id,
            grants=target.grants,
            secrets=target.manifest.security.secrets,
            values=self.secrets.values(target.record.id),
            timeout_ms=limits.timeout_ms,
        )

    async def tools_exec(self, p: ExecToolParams, ctx: RequestContext) -> Any:
        target = await self._resolve_for_call(p.tool)
        record = target.record
        await self.supply.check_exec(record)  # [supply_chain].require_signatures
        limits = with_timeout(target.limits, p.timeout_ms)
        if self.executor.cache_state(record.sha256) == "none":
            # About to compile from the blob: make sure it is what was installed.
            await self._io(self.store.verify_blob, record.sha256)
        plan = None
        if not target.plain:
            plan = await self.security.plan_call(record, target.grants, limits, ctx.peer)
        return await self._call(
            record.id,
            record.version,
            record.sha256,
            target.wasm_path,
            p.input,
            limits,
            plan=plan,
            peer=ctx.peer,
            caller=p.caller,
            priority=p.priority,
            net=self._net(target, limits),
        )

    # The fast lane (kamid.server.FastLane): the common tools.exec without a trio task.
    marker = b'"tools.exec"'

    def collect(self) -> None:
        """Finishes, on the trio thread, the fast-lane calls that answered since."""
        self.inbox.deliver()

    def render_metrics(self) -> str:
        """The metrics text, calls that just answered counted (trio thread)."""
        self.collect()
        return self.metrics.render()

    def offer(self, message: dict[str, Any], ctx: RequestContext) -> bool:
        """Takes a ``tools.exec`` that :meth:`try_fast` can run, the call thread
        answering the client itself (and serving its next calls under a lease when it
        may); anything else stays with the dispatcher."""
        p = _exec_params(message)
        if p is None:
            return False
        request_id = message["id"]

        def answer(result: ExecToolResult | None, error: KamiError | None) -> None:
            ctx.reply_from_thread(_reply(request_id, p.tool, result, error))

        forget: list[Callable[[], None]] = []

        def done() -> None:
            for f in forget:
                f()
            ctx.done()

        cancel = self.try_fast(p, ctx.peer, answer, done, lease=ctx.lease)
        if cancel is None:
            return False
        forget.append(ctx.on_disconnect(cancel))  # a client that goes away stops its call
        return True

    def try_fast(
        self,
        p: ExecToolParams,
        peer: Peer,
        answer: Callable[[ExecToolResult | None, KamiError | None], None],
        done: Callable[[], None],
        *,
        admitted: Callable[[], None] | None = None,
        lease: Callable[[], ConnectionLease | None] | None = None,
    ) -> Callable[[], None] | None:
        """Starts the call on a call thread at once, exactly as :meth:`tools_exec` would
        run it, if it can start without waiting or any I/O; else changes nothing and
        returns None: the caller takes the slow path, which gives the same answer.

        Returns the call's cancel function (any thread; the call then fails with
        ``cancelled`` at its next epoch tick).

        Refused: a tool not resolved yet or changed since, one that needs a sandbox
        plan, a component not in memory or on disk yet, ``require_signatures``, worker
        processes, and a call that would have to wait for a slot or be refused.

        ``answer(result, error)`` runs on the call thread once the call is recorded
        (tool log, audit row); it should send the answer. ``done()`` then runs on the
        trio thread, after the call's slot is released: when :attr:`inbox` delivers it
        (the next read on any connection, or the backstop's grace later).
        ``admitted()``, if given, runs on the trio thread before the call starts (only
        when the call starts). ``lease()``, if given, is asked for the connection's
        :class:`~kamid.server.ConnectionLease` when the tool may be served under one
        (:meth:`_serve_lease`). Called on the trio thread.
        """
        if self.executor.pool is not None:
            return None
        target = self._cached_target(p.tool)
        if (
            target is None
            or not target.plain
            or self.supply.settings.require_signatures
            or self.executor.cache_state(target.record.sha256) == "none"
        ):
            return None
        record = target.record
        ticket = self.scheduler.try_admit(record.id, priority=p.priority)
        if ticket is None:
            return None
        limits = with_timeout(target.limits, p.timeout_ms)
        call = _Call(record, p.input, peer=peer, caller=p.caller, net=self._net(target, limits))
        inbox = self.inbox
        held: ConnectionLease | None = None
        if (
            lease is not None
            and call.host.net is None
            and self.scheduler.leasable(record.id)
            and not self.scheduler.waiting
        ):
            held = lease()
            if held is not None:  # the lease keeps the call's slot until it ends
                self._leases.add(held)
                held.on_return(functools.partial(self.scheduler.release, record.id))
                held.on_return(functools.partial(self._leases.discard, held))

        def run() -> None:  # on a call thread
            try:
                teardown: list[Callable[[], None]] = []
                outcome, error, result = self._run_fast(call, target, limits, teardown)
                try:
                    answer(result, error)
                except Exception:
                    log.exception("unexpected error answering a call of %s", record.id)
                finally:
                    self.engine.dispose(teardown)
                    # The slot is released by the next request the trio thread reads, or
                    # by the inbox's backstop, without a wake-up of its own.
                    inbox.post(functools.partial(finish, outcome, error))
            finally:
                if held is not None:  # always ends, or its connection would wait forever
                    self._serve_lease(held, p, target, peer)

        def finish(outcome: CallOutcome | None, error: KamiError | None) -> None:  # trio
            try:
                self.security.audit.wake()
                ticket.usage = outcome.usage if outcome is not None else None
                kind = "ok" if error is None else error.kind
                self.scheduler.finished(ticket, kind, error, release=held is None)
                self._count(error)
            except Exception:
                log.exception("recording a finished call of %s failed", record.id)
            try:
                done()
            except Exception:
                log.exception("finishing a call of %s failed", record.id)

        if admitted is not None:
            admitted()
        self.calls_in_flight += 1
        self.calls_fast += 1
        inbox.expect()
        self.executor.submit(run)
        return call.host.cancel

    def _run_fast(
        self, call: _Call, target: _Target, limits: Limits, teardown: list[Callable[[], None]]
    ) -> tuple[CallOutcome | None, KamiError | None, ExecToolResult | None]:
        """Runs a fast-lane call and records it (call thread): its outcome, error and
        result. Recorded before the answer leaves: whoever reads the audit or tool log
        after seeing it finds this call there (the audit writer is woken on trio).

        Give ``teardown`` to ``engine.dispose`` once the answer is out: the store is
        then closed when a CPU is idle (the engine bounds the stores alive)."""
        record = target.record
        outcome: CallOutcome | None = None
        error: KamiError | None = None
        result: ExecToolResult | None = None
        try:
            outcome = self.engine.call(
                record.sha256,
                target.wasm_path,
                call.text,
                limits=limits,
                host=call.host,
                teardown=teardown,
            )
        except KamiError as exc:
            error = exc
        except Exception:
            log.exception("unexpected error running %s", record.id)
            error = InternalError("kamid hit an internal error; details are in its log")
        try:
            self.security.audit.record_from_thread(self._settle(call, outcome, error))
            if error is None:
                result = call.result(outcome)
        except Exception:
            log.exception("unexpected error recording a call of %s", record.id)
            error = InternalError("kamid hit an internal error; details are in its log")
            result = None
        return outcome, error, result

    def _serve_lease(
        self, lease: ConnectionLease, first: ExecToolParams, target: _Target, peer: Peer
    ) -> None:
        """Serves the connection's next calls of the same tool on this call thread, as
        long as each comes within the linger and nothing else needs what the lease
        holds (its scheduler slot, this thread); then gives the connection back.

        Each call is run, recorded and answered as :meth:`try_fast` would; its trio-side
        accounting (metrics, counters, the audit writer's wake-up) is left to the
        lease's trio side (:meth:`ConnectionLease.later`), which runs it within 50 ms.
        """
        record = target.record
        scheduler, threads = self.scheduler, self.executor.threads

        def hold() -> bool:
            return (
                not scheduler.waiting
                and not threads.queued
                and self._cached_target(first.tool) is target
            )

        try:
            while (message := lease.next_request(hold)) is not None:
                p = _exec_params(message)
                if p is None or p.tool != first.tool:
                    break  # trio serves it (with the error, if any)
                lease.take()
                started = time.monotonic()
                limits = with_timeout(target.limits, p.timeout_ms)
                call = _Call(record, p.input, peer=peer, caller=p.caller, net=None)
                teardown: list[Callable[[], None]] = []
                lease.running(call.host.cancel)
                outcome, error, result = self._run_fast(call, target, limits, teardown)
                lease.running(None)
                try:
                    lease.reply(encode_frame(_reply(message["id"], p.tool, result, error)))
                finally:
                    self.engine.dispose(teardown)
                duration = time.monotonic() - started
                lease.later(
                    functools.partial(
                        self._leased_call_ran, record.id, p.priority, outcome, error, duration
                    )
                )
        except Exception:
            log.exception("unexpected error serving a connection lease for %s", record.id)
        finally:
            lease.end()

    def _leased_call_ran(
        self,
        tool_id: str,
        priority: Priority,
        outcome: CallOutcome | None,
        error: KamiError | None,
        duration_s: float,
    ) -> None:  # trio
        self.security.audit.wake()
        usage = outcome.usage if outcome is not None else None
        kind = "ok" if error is None else error.kind
        self.scheduler.ran(tool_id, priority, duration_s, usage, kind, error)
        self.calls_fast += 1
        self.calls_leased += 1
        self.calls_in_flight += 1  # _count() takes it off again
        self._count(error)

    async def wasm_run(self, p: RunWasmParams, ctx: RequestContext) -> Any:
        path = Path(p.path)
        if not path.is_absolute():
            raise InvalidParams(f"wasm.run: path must be absolute (got {p.path!r})")
        data = await self._io(_read_component, path, None)
        sha256 = hashlib.sha256(data).hexdigest()
        await self.executor.inspect(sha256, path)
        limits = with_timeout(self.config.limits, p.timeout_ms)
        return await self._call(
            path.name, "", sha256, path, p.input, limits, peer=ctx.peer, action="run"
        )

    async def _call(
        self,
        tool_id: str,
        version: str,
        sha256: str,
        wasm_path: Path,
        value: Any,
        limits: Limits,
        *,
        plan: CallPlan | None = None,
        peer: Peer | None = None,
        caller: CallerInfo | None = None,
        action: str = "exec",
        net: NetSession | None = None,
        priority: Priority = "interactive",
    ) -> ExecToolResult:
        call = _Call(
            _Named(tool_id, version, sha256),
            value,
            peer=peer,
            caller=caller,
            net=net,
            action=action,
            notes=plan.notes if plan else (),
        )
        self.calls_in_flight += 1
        outcome: CallOutcome | None = None
        error: KamiError | None = None
        try:
            async with self.scheduler.admit(tool_id, priority=priority) as ticket:
                outcome = await self.executor.call(
                    sha256,
                    wasm_path,
                    call.text,
                    limits=limits,
                    host=call.host,
                    sandbox=plan.sandbox if plan else None,
                )
                ticket.usage = outcome.usage
            await self.security.check_after(tool_id, plan, outcome.usage)
        except KamiError as exc:
            error = exc
            raise
        finally:
            if outcome is not None or error is not None:
                self.security.audit.record(self._settle(call, outcome, error))
                self._count(error)
            else:
                self.calls_in_flight -= 1  # cancelled or a daemon bug: not a call
        return call.result(outcome)

    def _count(self, error: KamiError | None) -> None:
        self.calls_in_flight -= 1
        if error is None:
            self.calls_served += 1
        else:
            self.calls_failed += 1

    def _settle(
        self, call: _Call, outcome: CallOutcome | None, error: KamiError | None
    ) -> AuditRow:
        """Writes the call's tool-log lines and returns its audit row (any thread)."""
        lines = outcome.logs if outcome is not None else call.host.logs
        if lines or error is not None:
            stamp = _log_stamp()
            text = "".join(f"{stamp} {line.level} {line.message}\n" for line in lines)
            if error is not None:
                text += f"{stamp} failed {error.message}\n"
            self.tool_logs.append(call.tool.id, text)
        return call.row(outcome, error)


def _exec_params(message: dict[str, Any]) -> ExecToolParams | None:
    """The params of a well-formed ``tools.exec`` request; None for anything else,
    which the dispatcher answers (with the error, if any)."""
    if message.get("method") != "tools.exec":
        return None
    try:
        return structure_params(message.get("params"), ExecToolParams, method="tools.exec")
    except KamiError:
        return None


def _reply(
    request_id: int | str, tool: str, result: ExecToolResult | None, error: KamiError | None
) -> dict[str, Any]:
    """The JSON-RPC answer of a fast-lane call."""
    try:
        if error is None:
            return make_result(request_id, converter.unstructure(result))
        return make_error(request_id, error)
    except Exception:
        log.exception("unexpected error encoding the answer of %s", tool)
        error = InternalError("kamid hit an internal error; details are in its log")
        return make_error(request_id, error)


def _log_stamp() -> str:
    """The local time to the second, as tool-log lines start with it."""
    return _second_stamp(int(time.time()))


@functools.lru_cache(maxsize=1)
def _second_stamp(second: int) -> str:
    # Formatted once a second: strftime asks the time zone each time (~10 µs of the
    # answer's path).
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))


@attrs.frozen
class _Target:
    """A tool as its calls need it (:meth:`KamiService._resolve_for_call`)."""

    record: ToolRecord
    manifest: Manifest
    grants: Grants
    #: Before the call's own ``timeout_ms``.
    limits: Limits
    wasm_path: Path
    #: Its calls need no sandbox plan (no filesystem, path or environment grant).
    plain: bool
    #: The store generation and the config this was computed under.
    generation: int
    config: DaemonConfig


@attrs.frozen
class _Named:
    """What a call's records name: a tool, or an ad-hoc component (``wasm.run``)."""

    id: str
    version: str
    sha256: str


class _Call:
    """One call's host context and input, and what is recorded about it, whichever path
    (dispatcher or fast lane) runs it."""

    def __init__(
        self,
        tool: ToolRecord | _Named,
        value: Any,
        *,
        peer: Peer | None,
        caller: CallerInfo | None,
        net: NetSession | None,
        action: str = "exec",
        notes: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.tool = tool
        self.peer = peer
        self.caller = caller
        self.action = action
        self.host = HostContext(tool_id=tool.id, net=net)
        for note in notes:
            self.host.log("warn", note)
        self.text = json.dumps(value)

    def row(self, outcome: CallOutcome | None, error: KamiError | None) -> AuditRow:
        return call_row(
            action=self.action,
            tool=self.tool.id,
            version=self.tool.version,
            sha256=self.tool.sha256,
            peer=self.peer,
            caller=self.caller,
            input_text=self.text,
            usage=outcome.usage if outcome is not None else None,
            host=self.host,
            error=error,
        )

    def result(self, outcome: CallOutcome | None) -> ExecToolResult:
        assert outcome is not None
        return ExecToolResult(
            output=outcome.value,
            usage=outcome.usage,
            logs=outcome.logs,
            tool=self.tool.id,
            version=self.tool.version,
        )


def _load_tool_dir(tool_dir: Path) -> Manifest:
    if tool_dir.is_file():
        raise InvalidTool(
            f"{tool_dir} is a file; install takes a tool directory with a tool.toml "
            "(to run a bare component once, use `kamictl run FILE.wasm`)"
        )
    return load_manifest(tool_dir)


def _read_component(path: Path, build_dir: Path | None) -> bytes:
    """Reads a component file, refusing early what is plainly not one.

    Args:
        path: the component file.
        build_dir: the tool directory to suggest ``kamictl build`` for when it is missing.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        hint = f"; build it first with `kamictl build {build_dir}`" if build_dir else ""
        raise InvalidTool(f"{path} does not exist{hint}", data={"file": str(path)}) from exc
    except OSError as exc:
        raise InvalidTool(f"{path}: cannot read: {exc}", data={"file": str(path)}) from exc
    check_component(data, str(path))
    return data


def _summary(record: ToolRecord) -> ToolSummary:
    return ToolSummary(
        id=record.id,
        name=record.name,
        version=record.version,
        description=record.description,
        sha256=record.sha256,
        size=record.size,
        installed_at=record.installed_at,
        requested=Manifest.from_dict(record.manifest).security.summary(),
    )
