"""Limits: daemon defaults and ceilings, operator raises per tool, manifest lowers only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest

from kamid.capabilities import capabilities, check_ceilings, requested_limits
from kamid.config import load_config
from kamid.protocol import (
    Grants,
    InvalidParams,
    PolicyDenied,
    SecretRequest,
    SecurityRequests,
)
from kamid.sandbox import CEILINGS, DEFAULTS, LIMIT_NAMES, MiB, limits_for, raise_limits

if TYPE_CHECKING:
    from pathlib import Path


def test_every_default_is_under_its_ceiling() -> None:
    for name in LIMIT_NAMES:
        assert getattr(DEFAULTS, name) <= getattr(CEILINGS, name), name


def test_operator_raises_are_capped_by_the_ceilings() -> None:
    raised = raise_limits(DEFAULTS, {"fuel": 10**15, "timeout_ms": 50, "bogus": 1}, CEILINGS)
    assert raised.fuel == CEILINGS.fuel
    assert raised.timeout_ms == 50  # an operator may lower too
    assert raise_limits(DEFAULTS, {}, CEILINGS) is DEFAULTS


def test_a_manifest_still_lowers_a_raised_limit() -> None:
    base = raise_limits(DEFAULTS, {"memory_bytes": 1024 * MiB}, CEILINGS)
    assert limits_for(SecurityRequests(max_memory_mb=512), base).memory_bytes == 512 * MiB
    assert limits_for(SecurityRequests(max_memory_mb=4096), base).memory_bytes == 1024 * MiB


def test_requests_above_defaults_and_ceilings() -> None:
    requests = SecurityRequests(max_memory_mb=512, timeout_ms=100, max_fuel=10**11)
    assert requested_limits(requests, DEFAULTS) == {"memory_bytes": 512 * MiB, "fuel": 10**11}
    check_ceilings("dev.x.y", requests, CEILINGS)
    with pytest.raises(PolicyDenied) as info:
        check_ceilings("dev.x.y", requests, attrs.evolve(CEILINGS, fuel=10**10))
    assert "max_fuel = 100000000000 asks for" in info.value.message
    assert info.value.data == {"ceilings": {"fuel": 10**10}}


def test_config_reads_limits_and_partial_ceilings(tmp_path: Path) -> None:
    path = tmp_path / "kamid.toml"
    path.write_text(
        "# keep me\n[limits]\nsandbox_bytes = 1048576\n[ceilings]\nfuel = 30_000_000_000\n"
        "[server]\nallowed_gids = [100]\n"
    )
    config = load_config(path)
    assert config.limits.sandbox_bytes == 1048576
    assert config.ceilings.fuel == 30_000_000_000
    assert config.ceilings.memory_bytes == CEILINGS.memory_bytes  # not the lower default
    assert config.server.allowed_gids == (100,)


def test_config_refuses_defaults_above_ceilings(tmp_path: Path) -> None:
    path = tmp_path / "kamid.toml"
    path.write_text("[limits]\nfuel = 50_000_000_000\n[ceilings]\nfuel = 40_000_000_000\n")
    with pytest.raises(InvalidParams, match=r"\[limits\].fuel = 50000000000 is above"):
        load_config(path)


def test_capability_rows_say_what_the_component_could_use() -> None:
    requests = SecurityRequests(fs="sandbox", env=("HOME",), max_memory_mb=512)
    rows = capabilities(requests, ["kami:tool/host@0.1.0"], raised={"memory_bytes": 512 * MiB})
    by_kind = {row.kind: row for row in rows}
    assert by_kind["filesystem"].used is False
    assert "does not import wasi:filesystem" in by_kind["filesystem"].note
    assert by_kind["environment"].used is False
    assert by_kind["limit"].used is None
    imports = ["wasi:filesystem/types@0.2.9", "wasi:cli/environment@0.2.9"]
    assert all(row.used is not False for row in capabilities(requests, imports))
    token = SecretRequest(name="API_TOKEN", hosts=("api.example.com",), header="Authorization")
    with_secret = capabilities(SecurityRequests(secrets=(token,)), ["kami:tool/host@0.1.0"])
    assert [(r.kind, r.used) for r in with_secret] == [("secret", False)]
    assert "API_TOKEN: header Authorization on requests to api.example.com" in (
        with_secret[0].detail
    )
    assert "does not import kami:tool/http" in with_secret[0].note
    granted = capabilities(None, [], grants=Grants(kv=True, invoke=("dev.a.b",)))
    assert [(r.kind, r.used) for r in granted] == [("kv", False), ("invoke", False)]


def test_imports_read_from_the_binary_match_wasmtimes(tmp_path: Path) -> None:
    import hashlib

    from kamid.capabilities import component_imports
    from kamid.engine import Engine, wat2wasm
    from tests.engine.conftest import FIXTURES, DictIndex

    engine = Engine(aot_dir=tmp_path / "aot", aot_index=DictIndex())
    checked = 0
    for wat in sorted(FIXTURES.glob("*.wat")):
        data = wat2wasm(wat.read_text())
        path = tmp_path / f"{wat.stem}.wasm"
        path.write_bytes(data)
        mine = component_imports(data)
        if wat.stem == "core_module":
            assert mine is None
            continue
        try:
            info = engine.inspect(hashlib.sha256(data).hexdigest(), path)
        except Exception:  # noqa: S112  # unusable components: compared elsewhere
            continue
        assert mine == info.imports, wat.name
        checked += 1
    assert checked >= 10
    assert component_imports(b"\0asm\x0d\x00\x01\x00\x0a\x05\x01\x07") is None  # truncated
