"""A real HTTP peer for SDK tests: the aggregator's ingest contract on 127.0.0.1, scriptable.

It serves ``GET /v1/manifest``, ``GET /v1/keys/{kid}/context`` and ``POST /v1/reports``
with the shared codec's strict decoding, checks each report against the manifest it serves,
and counts a report id once. Tests script failures (``fail_next``): answer with a status,
store the batch but lose the answer, hang past the client's timeout, or drop the connection.
It is not our aggregator; end-to-end tests against that are the integration suite's job.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.shared import codec
from blindsum.shared.codec import Report, ReportBatch
from blindsum.shared.errors import BlindsumError, InvalidInput, NotFound, Unauthorized
from blindsum.shared.manifest import KeyEntry, Manifest
from blindsum.shared.policy import MetricPolicy

TOKEN = "ingest-token"
PRIVACY = {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 10.0}


def policy(name: str, **fields: Any) -> MetricPolicy:
    """A test policy: defaults to a Paillier count, one report per hour-long window."""
    raw = {"kind": "count", "scheme": "paillier", "min_contributors": 1,
           "max_contributors": 10_000, "privacy": PRIVACY, **fields}
    return MetricPolicy.from_mapping(name, raw)


def standard_policies(version: int = 1) -> list[MetricPolicy]:
    return [
        policy("clicks", upper=5, contributions_per_window=2, version=version),
        policy("latency", kind="mean", lower=0, upper=1000, precision=0.5,
               contributions_per_window=1000),
        policy("temp", kind="sum", lower=-50, upper=50, precision=0.1),
        policy("pages", kind="histogram", buckets=[0, 1, 5, 10, 100]),
        policy("embedding", kind="vector", scheme="ckks", dimension=3, lower=-1, upper=1,
               precision=0.001, max_contributors=1000),
    ]


def issue(
    identity: Ed25519PrivateKey,
    serial: int,
    paillier_secret: Any,
    ckks_secret: Any | None = None,
    policies: list[MetricPolicy] | None = None,
) -> Manifest:
    keys = [KeyEntry("paillier", paillier_secret.key_id, "active",
                     paillier_secret.public.public_json())]
    if ckks_secret is not None:
        keys.append(KeyEntry("ckks", ckks_secret.key_id, "active",
                             ckks_secret.public.public_json()))
    chosen = policies if policies is not None else standard_policies()
    if ckks_secret is None:
        chosen = [p for p in chosen if p.scheme != "ckks"]
    return Manifest.issue(identity, serial, keys, chosen)


@dataclass
class Action:
    """What to do with the next matching request instead of serving it normally.

    kind: "respond" (status/headers/body, nothing stored), "store_then_respond" (store the
    batch, then answer status: a lost acknowledgement), "drop" (store, close without an
    answer), "delay" (sleep ``delay`` seconds, then serve normally).
    """

    kind: str
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    method: str = "POST"
    path: str = "/v1/reports"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeServer:
    """The scripted HTTP peer; ``url`` once started. Stop it in teardown."""

    def __init__(self, manifest: Manifest, contexts: dict[str, bytes] | None = None) -> None:
        self.manifest = manifest
        self.contexts = dict(contexts or {})
        self.seen: list[Seen] = []
        self.stored: dict[bytes, Report] = {}
        self.actions: deque[Action] = deque()
        self.lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def fail_next(self, count: int, kind: str = "respond", **fields: Any) -> None:
        for _ in range(count):
            self.actions.append(Action(kind, **fields))

    def respond_problem(self, status: int, code: str, detail: str, **fields: Any) -> None:
        body = json.dumps({"type": f"urn:blindsum:error:{code}", "title": code,
                           "status": status, "detail": detail, "code": code}).encode()
        self.fail_next(1, status=status, body=body,
                       headers={"Content-Type": "application/problem+json"}, **fields)

    def requests_to(self, method: str, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method and s.path == path]

    def posted_batches(self) -> list[ReportBatch]:
        """Every report batch the client sent, decoded, in order (also failed attempts)."""
        out = []
        for seen in self.requests_to("POST", "/v1/reports"):
            media = codec.media_type(seen.headers.get("Content-Type"))
            out.append(ReportBatch.from_wire(codec.loads(seen.body, media)))
        return out

    # -- serving ---------------------------------------------------------------------------

    def take_action(self, method: str, path: str) -> Action | None:
        with self.lock:
            for action in self.actions:
                if action.method == method and action.path == path:
                    self.actions.remove(action)
                    return action
        return None

    def ingest(self, batch: ReportBatch) -> dict[str, Any]:
        """Validate a whole batch against the served manifest, then store it (idempotent)."""
        for index, report in enumerate(batch.reports):
            where = f"batch.reports[{index}]"
            current = self.manifest.policies.get(report.metric)
            if current is None:
                raise InvalidInput(f"{where}: unknown metric {report.metric!r}")
            if current.version != report.version:
                raise InvalidInput(
                    f"{where}: metric {report.metric!r} version {report.version} is not "
                    f"current ({current.version})"
                )
            if report.key_id not in {k.key_id for k in self.manifest.keys}:
                raise InvalidInput(f"{where}: key id {report.key_id!r} is unknown or retired")
        accepted = duplicates = 0
        with self.lock:
            for report in batch.reports:
                if report.report_id in self.stored:
                    duplicates += 1
                else:
                    self.stored[report.report_id] = report
                    accepted += 1
        return {"v": 1, "accepted": accepted, "duplicates": duplicates}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout test) breaks the pipe; that is expected


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve("GET", b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            self._serve("POST", self.rfile.read(length))

        def _serve(self, method: str, body: bytes) -> None:
            with server.lock:
                server.seen.append(Seen(method, self.path, dict(self.headers.items()), body))
            action = server.take_action(method, self.path)
            if action is not None and action.kind == "delay":
                time.sleep(action.delay)
                action = None
            if action is not None and action.kind == "respond":
                self._answer(action.status, action.body, action.headers)
                return
            try:
                status, data, content_type = self._route(method, body)
            except BlindsumError as exc:
                status, content_type = exc.status, "application/problem+json"
                data = json.dumps({"type": f"urn:blindsum:error:{exc.code}", "title": exc.title,
                                   "status": exc.status, "detail": exc.detail,
                                   "code": exc.code}).encode()
            if action is not None and action.kind == "drop":
                self.close_connection = True
                return
            if action is not None:  # store_then_respond: the acknowledgement is lost
                self._answer(action.status, action.body, action.headers)
                return
            self._answer(status, data, {"Content-Type": content_type})

        def _route(self, method: str, body: bytes) -> tuple[int, bytes, str]:
            if method == "GET" and self.path == "/v1/manifest":
                return 200, json.dumps(dict(server.manifest.document)).encode(), codec.JSON
            if method == "GET" and self.path.startswith("/v1/keys/"):
                kid = self.path.split("/")[3]
                if kid in server.contexts and self.path.endswith("/context"):
                    return 200, server.contexts[kid], "application/octet-stream"
            if method == "POST" and self.path == "/v1/reports":
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    raise Unauthorized("unknown token")
                media = codec.media_type(self.headers.get("Content-Type"))
                batch = ReportBatch.from_wire(codec.loads(body, media))
                receipt = server.ingest(batch)
                answer = codec.CBOR if "cbor" in self.headers.get("Accept", "") else codec.JSON
                return 200, codec.dumps(receipt, answer), answer
            raise NotFound(f"no route for {method} {self.path}")

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
