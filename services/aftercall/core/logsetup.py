"""Structured logging with the call id on every record. Transcript text is only ever logged at DEBUG."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from typing import Iterator

call_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("call_id", default="-")


class _CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.call_id = call_id_var.get()
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "call_id": getattr(record, "call_id", "-"),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "WARNING", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_CallIdFilter())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [call %(call_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@contextlib.contextmanager
def logging_call(call_id: str) -> Iterator[None]:
    """Records logged inside the block name this call (for code that serves many calls from one task or thread)."""
    token = call_id_var.set(call_id)
    try:
        yield
    finally:
        call_id_var.reset(token)
