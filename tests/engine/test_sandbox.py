"""Limits: a manifest or a call can lower the daemon's limits, never raise them."""

from __future__ import annotations

import attrs
import pytest

from kamid.hostapi import HostContext
from kamid.protocol import InvalidParams, SecurityRequests
from kamid.sandbox import DEFAULTS, GuestOutput, Limits, MiB, epoch_ticks, limits_for, with_timeout


def test_defaults_leave_room_for_real_tools() -> None:
    # A componentize-py echo call burns ~123,000 fuel and starts with ~12.4 MiB of memory.
    assert DEFAULTS.fuel >= 20 * 500_000_000
    assert DEFAULTS.memory_bytes >= 64 * MiB
    assert Limits() == DEFAULTS


def test_a_manifest_can_lower_limits() -> None:
    requests = SecurityRequests(max_memory_mb=16, max_fuel=1_000, timeout_ms=250)
    limits = limits_for(requests, DEFAULTS)
    assert (limits.memory_bytes, limits.fuel, limits.timeout_ms) == (16 * MiB, 1_000, 250)
    assert limits.max_output_bytes == DEFAULTS.max_output_bytes


def test_a_manifest_cannot_raise_limits() -> None:
    requests = SecurityRequests(max_memory_mb=10**6, max_fuel=10**15, timeout_ms=10**9)
    assert limits_for(requests, DEFAULTS) == DEFAULTS
    assert limits_for(SecurityRequests(), DEFAULTS) is DEFAULTS


def test_the_operators_defaults_bound_the_manifest() -> None:
    operator = attrs.evolve(DEFAULTS, fuel=5_000, timeout_ms=100)
    limits = limits_for(SecurityRequests(max_fuel=9_000, timeout_ms=50), operator)
    assert (limits.fuel, limits.timeout_ms) == (5_000, 50)


def test_a_call_timeout_only_lowers() -> None:
    limits = attrs.evolve(DEFAULTS, timeout_ms=1_000)
    assert with_timeout(limits, None) is limits
    assert with_timeout(limits, 200).timeout_ms == 200
    assert with_timeout(limits, 5_000).timeout_ms == 1_000


@pytest.mark.parametrize("bad", [0, -5, True, 1.5])
def test_a_call_timeout_must_be_positive(bad: object) -> None:
    with pytest.raises(InvalidParams, match="timeout_ms must be a positive number"):
        with_timeout(DEFAULTS, bad)  # type: ignore[arg-type]


def test_limits_must_be_positive_integers() -> None:
    with pytest.raises(ValueError, match="fuel must be a positive integer"):
        Limits(fuel=0)


def test_epoch_ticks_never_fire_early() -> None:
    assert epoch_ticks(100, 10) == 11
    assert epoch_ticks(101, 10) == 12
    assert epoch_ticks(1, 10) == 2


def test_guest_output_splits_lines_and_caps_bytes() -> None:
    host = HostContext(tool_id="t")
    out = GuestOutput(host, budget=12)
    out.stdout(b"one\ntw")
    out.stderr(b"err\n")
    out.stdout(b"o\nthree\n")  # only "o\n" fits the 12 bytes
    out.close()
    out.stdout(b"late\n")  # after close: ignored
    assert [(line.level, line.message) for line in host.logs] == [
        ("stdout", "one"),
        ("stderr", "err"),
        ("stdout", "two"),
        ("warn", "[kami] 6 bytes of guest stdout/stderr dropped (limit 12 bytes per call)"),
    ]


def test_guest_output_keeps_invalid_utf8_readable() -> None:
    host = HostContext(tool_id="t")
    out = GuestOutput(host, budget=100)
    out.stdout(b"caf\xc3\xa9 \xff\r\n")
    out.close()
    assert host.logs[0].message == "café \ufffd"
