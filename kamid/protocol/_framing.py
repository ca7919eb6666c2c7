"""Line framing: one JSON object per line, UTF-8, with a hard size limit.

Shared by the trio server and the blocking client; it only splits and joins bytes.
"""

from __future__ import annotations

import json
from typing import Any

from ._errors import InvalidRequest, ParseError

__all__ = ["DEFAULT_MAX_FRAME", "FrameTooLarge", "LineBuffer", "decode_frame", "encode_frame"]

#: The largest frame either side accepts unless configured otherwise (16 MiB).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


class FrameTooLarge(InvalidRequest):
    """A peer sent more than the frame limit without a newline."""


def encode_frame(message: dict[str, Any]) -> bytes:
    """Serializes one message as a single line (JSON never contains a raw newline)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def decode_frame(line: bytes) -> Any:
    """Parses one line; raises :class:`ParseError` with the reason when it is not JSON."""
    try:
        return json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(
            f"request is not valid JSON: {exc}; send one JSON object per line"
        ) from exc
    except RecursionError as exc:
        raise ParseError("request nests arrays or objects too deeply to parse; flatten it") from exc


class LineBuffer:
    """Accumulates received bytes and hands out complete lines.

    Args:
        max_frame: the largest line accepted; longer input raises :class:`FrameTooLarge`.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._scan_from = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Adds ``data``; returns the complete lines it finished, without newlines.

        Blank lines are skipped. Raises :class:`FrameTooLarge` as soon as a line is known
        to exceed the limit, so a peer cannot make the buffer grow without bound.
        """
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", max(start, self._scan_from))
            if nl < 0:
                break
            if nl - start > self.max_frame:
                raise self._too_large()
            line = bytes(self._buf[start:nl]).strip()
            if line:
                lines.append(line)
            start = nl + 1
            self._scan_from = start
        del self._buf[:start]
        self._scan_from = len(self._buf)
        if len(self._buf) > self.max_frame:
            raise self._too_large()
        return lines

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete line."""
        return len(self._buf)

    def _too_large(self) -> FrameTooLarge:
        return FrameTooLarge(
            f"frame exceeds the {self.max_frame}-byte limit; send smaller messages "
            "(large inputs belong in a file the tool is granted)",
            data={"limit": "max_frame_bytes", "value": self.max_frame},
        )
