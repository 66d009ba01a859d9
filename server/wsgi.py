"""Run a Flask app under gunicorn (a production WSGI server), embedded, from our CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


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
    threads: int = 4,
    certfile: str | None = None,
    keyfile: str | None = None,
    name: str = "blindsum",
) -> None:
    """Serve until SIGINT/SIGTERM; gunicorn's master handles graceful shutdown.

    The factory runs in each worker after the fork (no preload), so each worker owns its
    own SQLite connections and background threads.
    """
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 120,
        "graceful_timeout": 10,
        "proc_name": name,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }
    if certfile and keyfile:
        options.update(certfile=certfile, keyfile=keyfile)
    _Embedded(factory, options).run()
