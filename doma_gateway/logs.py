"""Structured JSON logs on stderr: one object per line, extra fields kept."""

from __future__ import annotations

import json
import logging
import sys
import time

from gateway.errors import ResponseCutShort

__all__ = ["configure_logging"]

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type and place, not its message: messages may quote request data.
            entry["exception"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _LoggedAlready(logging.Filter):
    """Drops the server's "Exception in ASGI application" for an answer the gateway cut short
    on purpose: the gateway has logged why, with the request id, and there is no bug to trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, ResponseCutShort)


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_LoggedAlready())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
