"""Run a Flask app under gunicorn (a production WSGI server), embedded, from our CLI."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from blindsum.server.datadir import prepare_metrics_dir
from blindsum.server.logs import logging_config
from blindsum.server.worker import ConnectionLimits, worker_class


class _Embedded(BaseApplication):  # type: ignore[misc]
    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._factory()


def serve(
    factory: Callable[[], Flask],
    host: str,
    port: int,
    *,
    workers: int = 1,
    limits: ConnectionLimits | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    log_file: Path | None = None,
    name: str = "blindsum",
) -> None:
    """Serve until SIGINT/SIGTERM; gunicorn's master handles graceful shutdown.

    The factory runs in each worker after the fork (no preload), so each worker owns its
    own SQLite connections and background jobs. The worker model and its bounds are in
    ``server/worker.py``; logs are JSON lines (``server/logs.py``) on stderr or ``log_file``.
    """
    limits = limits or ConnectionLimits()
    if workers > 1:
        prepare_metrics_dir()  # before any worker (or prometheus_client) starts
    # everything the service creates from here on (databases, WAL, logs, metric files) is
    # readable by its own account only
    os.umask(0o077)
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": worker_class(limits),
        "worker_connections": limits.per_worker,
        # the async worker bounds the read of each request's head by this (slowloris)
        "keepalive": limits.header_seconds,
        "timeout": 120,
        "graceful_timeout": 10,
        "proc_name": name,
        # the apps write their own access log line (with the request id) through logging
        "accesslog": None,
        "logconfig_dict": logging_config(log_file),
    }
    if certfile and keyfile:
        options.update(certfile=certfile, keyfile=keyfile)
    _Embedded(factory, options).run()
