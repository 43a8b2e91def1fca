"""Structured logs: one line per record, JSON or key=value, with the extra fields kept."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_STANDARD.add("color_message")  # uvicorn's copy of the message with terminal colours


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        head = f"{fields.pop('ts')} {fields.pop('level'):7} {fields.pop('logger')}: "
        head += str(fields.pop("msg"))
        exc = fields.pop("exc", None)
        tail = " ".join(f"{k}={v!r}" for k, v in fields.items())
        return head + (f"  {tail}" if tail else "") + (f"\n{exc}" if exc else "")


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Route every logger (ours, uvicorn's, alembic's) through one handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
