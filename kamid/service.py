"""The daemon's handlers: what each wire method does with the store, engine and executor.

Blocking work (apsw, file reads, wasmtime) never runs on the trio loop: store and file
operations go through :meth:`KamiService._io`, wasm through the executor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from kamid import __version__
from kamid.hostapi import HostContext
from kamid.protocol import (
    DaemonStatusParams,
    DaemonStatusResult,
    DaemonStopParams,
    DaemonStopResult,
    ExecToolParams,
    ExecToolResult,
    InspectToolParams,
    InspectToolResult,
    InstallToolParams,
    InstallToolResult,
    InvalidParams,
    InvalidTool,
    KamiError,
    ListToolsParams,
    ListToolsResult,
    LogLine,
    Manifest,
    PolicyDenied,
    RunWasmParams,
    ToolSummary,
    UninstallToolParams,
    UninstallToolResult,
    grants_from_requests,
    load_manifest,
)
from kamid.sandbox import limits_for, with_timeout
from kamid.store import ToolRecord

if TYPE_CHECKING:
    from collections.abc import Callable

    from kamid.config import DaemonConfig
    from kamid.dispatch import Handler
    from kamid.engine import CallOutcome, Engine, Executor
    from kamid.protocol import Paths
    from kamid.sandbox import Limits
    from kamid.server import RequestContext
    from kamid.store import Store

__all__ = ["KamiService"]

log = logging.getLogger("kamid.service")
T = TypeVar("T")

#: A component's preamble: magic, version 0x0d, layer 1 (a core module has layer 0).
_COMPONENT_PREAMBLE = b"\0asm\x0d\x00\x01\x00"


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
        self.calls_in_flight = 0
        self.connections: Callable[[], int] = lambda: 0
        self.request_stop: Callable[[], None] = lambda: None
        # apsw serialises anyway; one thread keeps install transactions strictly ordered.
        self._io_limiter = trio.CapacityLimiter(1)
        self._install_lock = trio.Lock()

    def handlers(self) -> dict[str, Handler]:
        return {
            "daemon.status": self.daemon_status,
            "daemon.stop": self.daemon_stop,
            "tools.install": self.tools_install,
            "tools.list": self.tools_list,
            "tools.inspect": self.tools_inspect,
            "tools.uninstall": self.tools_uninstall,
            "tools.exec": self.tools_exec,
            "wasm.run": self.wasm_run,
        }

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._io_limiter)

    # daemon.*
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
            calls_in_flight=self.calls_in_flight,
            connections=self.connections(),
            cache=self.engine.statistics(),
        )

    async def daemon_stop(self, _p: DaemonStopParams, ctx: RequestContext) -> Any:
        log.info("stop requested by pid %d", ctx.peer.pid)
        self.request_stop()
        return DaemonStopResult(stopping=True, in_flight=self.calls_in_flight)

    # tools.*
    async def tools_install(self, p: InstallToolParams, ctx: RequestContext) -> Any:
        async def progress(stage: str, message: str) -> None:
            if p.progress_token is not None:
                await ctx.notify(
                    "progress", {"token": p.progress_token, "stage": stage, "message": message}
                )

        tool_dir = Path(p.path)
        if not tool_dir.is_absolute():
            raise InvalidParams(f"tools.install: path must be absolute (got {p.path!r})")
        await progress("reading", f"reading {tool_dir / 'tool.toml'}")
        manifest = await self._io(_load_tool_dir, tool_dir)
        requested = manifest.security.summary()
        if requested and not p.approve:
            raise PolicyDenied(
                f"{manifest.id} requests: {'; '.join(requested)}. Nothing was installed; "
                "review these and approve with `kamictl install --yes`",
                data={"requested": requested},
            )
        wasm_path = (tool_dir / manifest.tool.wasm).resolve()
        build_hint = tool_dir if manifest.build is not None else None
        data = await self._io(_read_component, wasm_path, build_hint)
        sha256 = hashlib.sha256(data).hexdigest()
        async with self._install_lock:
            existing = await self._io(self.store.get, manifest.id)
            await progress("storing", f"storing {len(data) / 1e6:.1f} MB, sha256 {sha256[:12]}")
            blob = await self._io(self.store.put_blob, data)
            del data
            try:
                await progress("compiling", "compiling to native code (once per component)")
                report = await self.executor.precompile(sha256, blob.path)
                info = await self.executor.inspect(sha256, blob.path)
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
                grants=grants_from_requests(manifest.security).to_dict(),
                imports=info.imports,
                source=str(tool_dir),
                installed_at=time.time(),
            )
            outcome = await self._io(self.store.install, record)
        if outcome.changed and existing is not None and existing.sha256 != sha256:
            await self._forget_if_unused(existing.sha256)
        log.info("installed %s %s (%s)", record.id, record.version, sha256[:12])
        return InstallToolResult(
            tool=_summary(record if outcome.changed else existing or record),
            changed=outcome.changed,
            replaced=outcome.replaced,
            compile_ms=report.ms,
            cache=self.engine.cache_state(sha256),
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
        )

    async def tools_uninstall(self, p: UninstallToolParams, _ctx: RequestContext) -> Any:
        async with self._install_lock:
            record = await self._io(self.store.resolve, p.tool)
            await self._io(self.store.uninstall, record.id)
        await self._forget_if_unused(record.sha256)
        log.info("uninstalled %s %s", record.id, record.version)
        return UninstallToolResult(id=record.id, version=record.version)

    async def _forget_if_unused(self, sha256: str) -> None:
        records = await self._io(self.store.list)
        if all(r.sha256 != sha256 for r in records):
            await self._io(self.engine.forget, sha256)

    async def tools_exec(self, p: ExecToolParams, _ctx: RequestContext) -> Any:
        record = await self._io(self.store.resolve, p.tool)
        manifest = Manifest.from_dict(record.manifest)
        limits = with_timeout(limits_for(manifest.security, self.config.limits), p.timeout_ms)
        if self.engine.cache_state(record.sha256) == "none":
            # About to compile from the blob: make sure it is what was installed.
            await self._io(self.store.verify_blob, record.sha256)
        wasm_path = self.store.blob_path(record.sha256)
        return await self._call(
            record.id, record.version, record.sha256, wasm_path, p.input, limits
        )

    async def wasm_run(self, p: RunWasmParams, _ctx: RequestContext) -> Any:
        path = Path(p.path)
        if not path.is_absolute():
            raise InvalidParams(f"wasm.run: path must be absolute (got {p.path!r})")
        data = await self._io(_read_component, path, None)
        sha256 = hashlib.sha256(data).hexdigest()
        await self.executor.inspect(sha256, path)
        limits = with_timeout(self.config.limits, p.timeout_ms)
        return await self._call(path.name, "", sha256, path, p.input, limits)

    async def _call(
        self, tool_id: str, version: str, sha256: str, wasm_path: Path, value: Any, limits: Limits
    ) -> ExecToolResult:
        host = HostContext(tool_id=tool_id)
        self.calls_in_flight += 1
        try:
            outcome: CallOutcome = await self.executor.call(
                sha256, wasm_path, json.dumps(value), limits=limits, host=host
            )
        except KamiError as exc:
            self.calls_failed += 1
            await self._write_tool_log(tool_id, host.logs, error=exc.message)
            raise
        finally:
            self.calls_in_flight -= 1
        self.calls_served += 1
        if outcome.logs:
            await self._write_tool_log(tool_id, outcome.logs)
        return ExecToolResult(
            output=outcome.value,
            usage=outcome.usage,
            logs=outcome.logs,
            tool=tool_id,
            version=version,
        )

    async def _write_tool_log(
        self, tool_id: str, lines: list[LogLine], *, error: str | None = None
    ) -> None:
        if not lines and error is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        text = "".join(f"{stamp} {line.level} {line.message}\n" for line in lines)
        if error is not None:
            text += f"{stamp} failed {error}\n"
        path = self.paths.tool_logs / f"{tool_id}.log"
        await self._io(_append, path, text)


def _load_tool_dir(tool_dir: Path) -> Manifest:
    if tool_dir.is_file():
        raise InvalidTool(
            f"{tool_dir} is a file; install takes a tool directory with a tool.toml "
            "(to run a bare component once, use `kamictl run FILE.wasm`)"
        )
    return load_manifest(tool_dir)


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


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
    if not data.startswith(b"\0asm"):
        raise InvalidTool(
            f"{path} is not WebAssembly (no \\0asm header); point [tool].wasm at a built component",
            data={"file": str(path)},
        )
    if not data.startswith(_COMPONENT_PREAMBLE):
        raise InvalidTool(
            f"{path} is a core WebAssembly module, not a component; build it with "
            "componentize-py or componentize-js (`kamictl build`), or wrap it with "
            "`wasm-tools component new`",
            data={"file": str(path)},
        )
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
