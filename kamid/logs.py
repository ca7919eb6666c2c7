"""Log formats: human-readable lines by default, JSON lines with ``--log-format json``."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

__all__ = ["FORMATS", "HUMAN_FORMAT", "JsonFormatter", "formatter"]

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("human", "json")

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, ``pid``,
    ``exception`` when there is one, and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC).astimezone()
        entry: dict[str, Any] = {
            "ts": stamp.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry.setdefault(key, value)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter(kind: str) -> logging.Formatter:
    """The formatter for ``--log-format`` ``kind`` (``human`` or ``json``)."""
    if kind == "json":
        return JsonFormatter()
    return logging.Formatter(HUMAN_FORMAT)
