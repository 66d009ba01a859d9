"""Wire-level stand-ins for SDK tests: a fault-injecting peer and a tripwire, on 127.0.0.1.

``FaultInjectingPeer`` is an attacker and fault stand-in for transport tests. It is *not* a
stand-in for the aggregator: it has no ingest, manifest or idempotency logic, and nothing it
says is what our server would decide. It does two jobs only:

* alone, it answers exactly what a test scripts: the faults our real server cannot be made to
  produce on demand (503 or 429 with ``Retry-After``, a hang-up, a problem document with a
  code the server rarely sends, an oversized or unreadable answer);
* with ``upstream`` (a running aggregator), it is a flaky or hostile network hop in front of
  the REAL server: it relays every request it is not told to interfere with, and on cue
  answers in the server's place (a load balancer's 503), hangs up before or after the server
  acted (a lost acknowledgement), holds an answer past the client's timeout, or rewrites a
  request or an answer in flight (a man in the middle on plain HTTP).

Every behaviour of our server that an SDK test checks comes from the real server behind it.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from blindsum.shared import codec
from blindsum.shared.codec import ReportBatch

REPORTS = "/v1/reports"
MANIFEST = "/v1/manifest"
PROBLEM_JSON = "application/problem+json"
# Hop-by-hop headers describe one connection, so a relay must not pass them on; the framing
# and the Server/Date headers are written afresh by whichever side sends the message.
_NOT_RELAYED = frozenset({"connection", "keep-alive", "proxy-authenticate",
                          "proxy-authorization", "te", "trailer", "transfer-encoding",
                          "upgrade", "host", "content-length", "server", "date"})


@dataclass(frozen=True)
class Answer:
    """The peer answers this itself; the request never reaches a server."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


def problem(status: int, code: str, detail: str) -> Answer:
    """An ``application/problem+json`` answer shaped like our services' error documents."""
    body = json.dumps({"type": f"urn:blindsum:error:{code}", "title": code, "status": status,
                       "detail": detail, "code": code}).encode()
    return Answer(status, body, {"Content-Type": PROBLEM_JSON})


def data(status: int, value: Any, media: str = codec.JSON) -> Answer:
    """A JSON or CBOR answer carrying ``value`` (e.g. a canned receipt)."""
    return Answer(status, codec.dumps(value, media), {"Content-Type": media})


@dataclass(frozen=True)
class HangUp:
    """Close the connection without an answer; the request never reaches a server."""


@dataclass(frozen=True)
class LoseAnswer:
    """Relay the request (the server acts on it), then hang up, or answer ``instead``."""

    instead: Answer | None = None


@dataclass(frozen=True)
class HoldAnswer:
    """Relay the request, then hold the server's answer ``seconds`` before passing it on."""

    seconds: float


@dataclass(frozen=True)
class Rewrite:
    """Relay the request, changing its body and/or the answer's body in flight."""

    request: Callable[[bytes], bytes] | None = None
    answer: Callable[[bytes], bytes] | None = None


Fault = Answer | HangUp | LoseAnswer | HoldAnswer | Rewrite


@dataclass(frozen=True)
class Seen:
    """A request as the client sent it (before any rewrite)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FaultInjectingPeer:
    """The scripted peer (see the module docstring); ``url`` once started.

    ``script(method, path, *faults)`` queues one fault per coming request to that route, in
    order. A request with no fault queued is relayed to ``upstream``; without an upstream it
    gets a 501 problem naming it, so a test that forgot to script an answer fails loudly.
    """

    def __init__(self, upstream: str | None = None) -> None:
        self.upstream = urlsplit(upstream) if upstream else None
        self.seen: list[Seen] = []
        self._faults: dict[tuple[str, str], deque[Fault]] = {}
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._stopped = False

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultInjectingPeer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: from now on connections to ``url`` are refused."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultInjectingPeer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def script(self, method: str, path: str, *faults: Fault) -> None:
        with self._lock:
            self._faults.setdefault((method, path), deque()).extend(faults)

    def requests_to(self, method: str, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method and s.path == path]

    def calls(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(s.method, s.path) for s in self.seen]

    def posted_batches(self) -> list[ReportBatch]:
        """Every report batch the client sent, decoded, in order (failed attempts too)."""
        out = []
        for seen in self.requests_to("POST", REPORTS):
            media = codec.media_type(seen.headers.get("Content-Type"))
            out.append(ReportBatch.from_wire(codec.loads(seen.body, media)))
        return out

    # -- serving -----------------------------------------------------------------------

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            queued = self._faults.get((method, path))
            return queued.popleft() if queued else None

    def _relay(self, method: str, path: str, headers: Mapping[str, str],
               body: bytes) -> Answer:
        if self.upstream is None:
            return problem(501, "not-scripted", f"no answer scripted for {method} {path}")
        connection = http.client.HTTPConnection(self.upstream.hostname or "127.0.0.1",
                                                self.upstream.port, timeout=60)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in _NOT_RELAYED}
            connection.request(method, path, body=body or None, headers=forwarded)
            response = connection.getresponse()
            kept = {k: v for k, v in response.getheaders() if k.lower() not in _NOT_RELAYED}
            return Answer(response.status, response.read(), kept)
        finally:
            connection.close()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout tests) breaks the pipe; that is expected


def _handler(peer: FaultInjectingPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            path = urlsplit(self.path).path
            with peer._lock:
                peer.seen.append(Seen(method, path, headers, body))
            fault = peer._take(method, path)
            if isinstance(fault, HangUp):
                self.close_connection = True
                return
            if isinstance(fault, Answer):
                self._answer(fault)
                return
            if isinstance(fault, Rewrite) and fault.request is not None:
                body = fault.request(body)
            answer = peer._relay(method, self.path, headers, body)
            if isinstance(fault, LoseAnswer):
                if fault.instead is None:
                    self.close_connection = True
                    return
                answer = fault.instead
            elif isinstance(fault, HoldAnswer):
                time.sleep(fault.seconds)
            elif isinstance(fault, Rewrite) and fault.answer is not None:
                answer = Answer(answer.status, fault.answer(answer.body), answer.headers)
            self._answer(answer)

        def _answer(self, answer: Answer) -> None:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

    return Handler


class Tripwire:
    """A port on 127.0.0.1 that nothing should reach: ``touched()`` says whether anything
    connected. For tests that the SDK refuses something before using the network."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.setblocking(False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def touched(self) -> bool:
        try:
            connection, _ = self._socket.accept()
        except BlockingIOError:
            return False
        connection.close()
        return True

    def close(self) -> None:
        self._socket.close()
