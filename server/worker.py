"""The gunicorn worker both services run: gevent, with deadlines and a per-address cap.

Measured on the threaded worker (``gthread``, 8 threads): 120 idle or slowloris connections
from one address held every thread, so health checks and authenticated ingest timed out for
as long as they were held; 60 half-sent TLS handshakes did the same, since the handshake ran
in a thread with no deadline. A thread per connection cannot survive that, whatever the
count. Here a connection is a greenlet (a few KB), so idle connections cost next to nothing,
and three bounds keep the rest in check:

- ``read_seconds``: every receive on a client socket, the TLS handshake included, waits at
  most this long, so a silent connection or a half-sent handshake is dropped.
- ``header_seconds`` (gunicorn's ``keepalive``, which the async worker applies to reading a
  request's head): a request line and headers trickled byte by byte are cut off after it.
- ``per_address``: at most this many connections per client address in one worker; the rest
  are closed at once, before any TLS work. Behind a reverse proxy every client has the
  proxy's address: set it to 0 (off) there and let the proxy cap clients.

Request handlers run on the worker's one OS thread, one greenlet at a time; their CPU work
(proof checks, SQLite) is short per request, and a server runs several workers for cores.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn.sock import ssl_context
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

log = logging.getLogger("blindsum.worker")


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on what one client connection may hold (see the module docstring)."""

    read_seconds: float = 10.0
    header_seconds: int = 5
    per_address: int = 64
    per_worker: int = 1000


class _CappedPool(Pool):  # type: ignore[misc]
    """A greenlet pool that refuses a connection whose address already holds its share."""

    def __init__(self, size: int, per_address: int, on_refused: Callable[[str], None]) -> None:
        super().__init__(size)
        self._per_address = per_address
        self._open: Counter[str] = Counter()
        self._on_refused = on_refused

    def spawn(self, func: Callable[..., Any], handle: Any, close: Any,
              args: tuple[socket.socket, Any]) -> Any:
        # gevent's StreamServer calls spawn(runner, handle, close, (client, address))
        client, address = args
        host = address[0] if isinstance(address, tuple) else str(address)
        if self._per_address and self._open[host] >= self._per_address:
            client.close()
            self._on_refused(host)
            return None
        self._open[host] += 1
        greenlet = super().spawn(func, handle, close, args)
        greenlet.rawlink(partial(self._closed, host))
        return greenlet

    def _closed(self, host: str, _: Any) -> None:
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]


class GuardedWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker with the bounds of ``limits`` (set by ``worker_class``)."""

    limits = ConnectionLimits()

    def init_process(self) -> None:
        self._refused = 0
        self._refusal_logged = 0.0
        super().init_process()

    def run(self) -> None:
        context = ssl_context(self.cfg) if self.cfg.is_ssl else None
        servers = []
        for listener in self.sockets:
            listener.setblocking(1)
            pool = _CappedPool(self.worker_connections, self.limits.per_address,
                               self._note_refusal)
            server = StreamServer(listener, handle=partial(self._serve, listener, context),
                                  spawn=pool)
            if self.cfg.workers > 1:
                server.max_accept = 1  # let the other workers take their share
            server.start()
            servers.append(server)
        while self.alive:
            self.notify()
            gevent.sleep(1.0)
        self._drain(servers)

    def _drain(self, servers: list[StreamServer]) -> None:
        for server in servers:
            server.close()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline and any(
                server.pool.free_count() != server.pool.size for server in servers):
            self.notify()
            gevent.sleep(0.5)
        for server in servers:
            server.stop(timeout=1)

    def _serve(self, listener: socket.socket, context: ssl.SSLContext | None,
               client: socket.socket, address: Any) -> None:
        client.settimeout(self.limits.read_seconds)
        if context is not None:
            try:
                # the handshake too has a deadline in total, not just per receive
                with gevent.Timeout(self.limits.read_seconds):
                    client = context.wrap_socket(client, server_side=True)
            except (OSError, gevent.Timeout):
                client.close()
                return
        AsyncWorker.handle(self, listener, client, address)

    def _note_refusal(self, host: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= 10:  # one line per 10 s, not one per connection
            self._refusal_logged = now
            log.warning("connection cap reached: refused %d connections so far (latest "
                        "from %s, limit %d per address)", self._refused, host,
                        self.limits.per_address)


def worker_class(limits: ConnectionLimits) -> type[GuardedWorker]:
    """A ``GuardedWorker`` subclass bound to ``limits`` (gunicorn takes a class)."""
    return type("BoundGuardedWorker", (GuardedWorker,), {"limits": limits})
