"""Hostile connections from one address, and honest clients that time the service meanwhile.

``HostileCrowd`` opens connections that hold a server's resources without ever finishing a
request: idle ones (connected, nothing sent), slowloris ones (a request line, then one header
byte every ``trickle_seconds``), and half-sent TLS handshakes (the first bytes of a
ClientHello, then silence). They come from ``HOSTILE_ADDRESS``, another loopback address,
so a per-address cap can tell them apart from the honest clients on 127.0.0.1. Every socket
is closed, and the trickle thread stopped, when the crowd's ``with`` block ends.

``time_calls`` runs honest requests for a bounded number of rounds and returns each one's
latency and status, so a test can say "nothing failed" and a report can quote the numbers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

HOSTILE_ADDRESS = "127.0.0.2"
# The start of a TLS 1.2 record carrying a ClientHello: record header plus handshake header,
# promising far more bytes than ever follow.
HALF_CLIENT_HELLO = bytes.fromhex("16030102000100" "01fc0303")


@dataclass
class HostileCrowd:
    """Connections that never complete a request, all from one address."""

    host: str
    port: int
    source: str = HOSTILE_ADDRESS
    trickle_seconds: float = 1.0
    sockets: list[socket.socket] = field(default_factory=list)
    refused: int = 0
    _trickling: list[socket.socket] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.bind((self.source, 0))
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            self.refused += 1
            return None
        self.sockets.append(sock)
        return sock

    def idle(self, count: int) -> None:
        for _ in range(count):
            self._connect()

    def slowloris(self, count: int) -> None:
        for _ in range(count):
            sock = self._connect()
            if sock is not None and self._send(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"):
                self._trickling.append(sock)
        if self._thread is None:
            self._thread = threading.Thread(target=self._trickle, daemon=True)
            self._thread.start()

    def half_handshakes(self, count: int) -> None:
        for _ in range(count):
            sock = self._connect()
            if sock is not None:
                self._send(sock, HALF_CLIENT_HELLO)

    def _send(self, sock: socket.socket, data: bytes) -> bool:
        try:
            sock.sendall(data)
            return True
        except OSError:
            return False

    def _trickle(self) -> None:
        while not self._stop.wait(self.trickle_seconds):
            for sock in list(self._trickling):
                if not self._send(sock, b"X"):
                    self._trickling.remove(sock)

    def still_open(self) -> int:
        """How many hostile sockets the server has not closed (a peek that does not block)."""
        alive = 0
        for sock in self.sockets:
            try:
                sock.setblocking(False)
                alive += sock.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets.clear()


@contextlib.contextmanager
def hostile_crowd(host: str, port: int, **kwargs: float) -> Iterator[HostileCrowd]:
    crowd = HostileCrowd(host, port, **kwargs)  # type: ignore[arg-type]
    try:
        yield crowd
    finally:
        crowd.close()


@dataclass(frozen=True)
class Timed:
    name: str
    seconds: float
    status: int | str


def time_calls(calls: dict[str, Callable[[], int]], rounds: int) -> list[Timed]:
    """Run each call ``rounds`` times; an exception is recorded as its type name."""
    results: list[Timed] = []
    for _ in range(rounds):
        for name, run in calls.items():
            start = time.monotonic()
            try:
                status: int | str = run()
            except Exception as exc:
                status = type(exc).__name__
            results.append(Timed(name, time.monotonic() - start, status))
    return results


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0
