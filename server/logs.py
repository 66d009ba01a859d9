"""Structured logs for both services: one JSON object per line, with time, level and request id.

Log records carry only what an operator needs to act: routes, statuses, durations, window
keys, error codes. Never a token, a ciphertext, a plaintext or an aggregate: callers pass
structured fields (``extra={"fields": {...}}``) chosen for that, and the request id is the
only value taken from a client (bounded and checked in ``server/observability.py``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from flask import g, has_request_context


def request_id() -> str | None:
    """The current request's id, if a request is being served in this context."""
    if has_request_context():
        return g.get("request_id")
    return None


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id"?, ...fields}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        rid = request_id()
        if rid is not None:
            entry["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            # stays in the service log; problem documents never carry it (server/http.py)
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(log_file: Path | None = None, level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for gunicorn's ``logconfig_dict``.

    Everything (gunicorn's master and workers, our loggers) goes to one JSON handler on
    stderr or, given ``log_file``, appended to that file. gunicorn's own access log is off:
    the apps write theirs with the request id (``server/observability.py``).
    """
    handler: dict[str, Any] = {"formatter": "json"}
    if log_file is None:
        handler.update({"class": "logging.StreamHandler", "stream": "ext://sys.stderr"})
    else:
        handler.update({"class": "logging.FileHandler", "filename": str(log_file),
                        "mode": "a", "encoding": "utf-8"})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"main": handler},
        "root": {"level": level, "handlers": ["main"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }
