"""The plaintext pipeline's server: the aggregator's HTTP + SQLite path with encryption off.

The aggregator has no plaintext mode (by design it never sees a value), so this baseline is
built from the same parts: gunicorn with the aggregator's worker and thread counts
(``blindsum.server.wsgi.serve``), the same bearer-token check and problem+json errors
(``blindsum.server.http``), the same SQLite settings (WAL, ``synchronous=FULL``, one
``BEGIN IMMEDIATE`` transaction per batch, so a batch is durable before it is acknowledged),
idempotent report ids, window checks and policy encoding. What it leaves out is exactly the
cryptography: values arrive as JSON numbers, are clipped and encoded, and window sums are
plain integer additions.

Run: ``python -m blindsum.benchmarks.plain_server --data-dir D --policies P --port N``
(the token comes from ``BLINDSUM_INGEST_TOKENS``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response

from blindsum.server.aggregator.windows import check_report_window
from blindsum.server.bodies import BATCH_ITEMS
from blindsum.server.http import (
    install_error_handlers,
    read_body,
    reply,
    require_token,
    token_digest,
)
from blindsum.server.processes import LOOPBACK, ServiceProcess, free_port
from blindsum.server.sqlite import connect, write_transaction
from blindsum.shared.codec import MAX_BATCH_REPORTS, REPORT_ID_BYTES, b64decode
from blindsum.shared.encoding import encode
from blindsum.shared.errors import Conflict, InvalidInput
from blindsum.shared.policy import MetricPolicy, load_policies_toml

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    report_id BLOB PRIMARY KEY, metric TEXT NOT NULL, version INTEGER NOT NULL,
    "window" INTEGER NOT NULL, vals TEXT NOT NULL, received_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS reports_by_window ON reports (metric, version, "window");
CREATE TABLE IF NOT EXISTS windows (
    metric TEXT NOT NULL, version INTEGER NOT NULL, "window" INTEGER NOT NULL,
    sums TEXT NOT NULL, report_count INTEGER NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (metric, version, "window"));
"""


@dataclass(frozen=True)
class _Checked:
    report_id: bytes
    policy: MetricPolicy
    window: int
    slots: list[int]


def _check(raw: Any, index: int, policies: Mapping[str, MetricPolicy], now: float) -> _Checked:
    where = f"batch.reports[{index}]"
    if not isinstance(raw, Mapping) or set(raw) != {"id", "metric", "version", "window",
                                                     "values"}:
        raise InvalidInput(f"{where} must have id, metric, version, window and values")
    report_id = b64decode(raw["id"], f"{where}.id")
    if len(report_id) != REPORT_ID_BYTES:
        raise InvalidInput(f"{where}.id must be {REPORT_ID_BYTES} bytes")
    policy = policies.get(raw["metric"]) if isinstance(raw["metric"], str) else None
    if policy is None or raw["version"] != policy.version:
        raise InvalidInput(f"{where}: unknown metric or version")
    window = raw["window"]
    if isinstance(window, bool) or not isinstance(window, int):
        raise InvalidInput(f"{where}.window must be an integer")
    check_report_window(policy, window, now)
    values = raw["values"]
    if not isinstance(values, list) or len(values) != policy.slot_count:
        raise InvalidInput(f"{where}.values must be a list of {policy.slot_count} numbers")
    value = values if policy.kind == "vector" else values[0]
    return _Checked(report_id, policy, window, encode(policy, value))


class PlainStore:
    """Reports and running window sums, durably, one write transaction per batch."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "plain.db"
        self._local = threading.local()
        with write_transaction(self.connection()) as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    def ingest(self, checked: Sequence[_Checked], now: float) -> tuple[int, int]:
        with write_transaction(self.connection()) as conn:
            ids = [c.report_id for c in checked]
            known = {row[0] for start in range(0, len(ids), 500) for row in conn.execute(
                f"SELECT report_id FROM reports WHERE report_id IN "
                f"({','.join('?' * len(ids[start:start + 500]))})", ids[start:start + 500])}
            fresh: dict[bytes, _Checked] = {}
            for c in checked:
                if c.report_id not in known:
                    fresh.setdefault(c.report_id, c)
            groups: dict[tuple[str, int, int], list[_Checked]] = {}
            for c in fresh.values():
                groups.setdefault((c.policy.name, c.policy.version, c.window), []).append(c)
            for key, members in groups.items():
                self._fold(conn, key, members, now)
            conn.executemany(
                'INSERT INTO reports (report_id, metric, version, "window", vals, received_at) '
                "VALUES (?, ?, ?, ?, ?, ?)",
                ((c.report_id, c.policy.name, c.policy.version, c.window, json.dumps(c.slots),
                  now) for c in fresh.values()),
            )
        return len(fresh), len(checked) - len(fresh)

    @staticmethod
    def _fold(conn: sqlite3.Connection, key: tuple[str, int, int],
              members: Sequence[_Checked], now: float) -> None:
        sums = [sum(column) for column in zip(*(m.slots for m in members), strict=True)]
        row = conn.execute('SELECT sums, report_count FROM windows WHERE metric = ? AND '
                           'version = ? AND "window" = ?', key).fetchone()
        count = len(members) + (row[1] if row else 0)
        if count > members[0].policy.max_contributors:
            raise Conflict(f"window {key} would exceed max_contributors")
        if row is not None:
            sums = [a + b for a, b in zip(json.loads(row[0]), sums, strict=True)]
        conn.execute('INSERT OR REPLACE INTO windows (metric, version, "window", sums, '
                     "report_count, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                     (*key, json.dumps(sums), count, now))


def create_app(data_dir: Path, policies: Sequence[MetricPolicy], tokens: Sequence[str]) -> Flask:
    app = Flask("blindsum.benchmarks.plain_server")
    app.config["MAX_CONTENT_LENGTH"] = 64 << 20
    store = PlainStore(data_dir)
    by_name = {p.name: p for p in policies}
    digests = {"ingest": tuple(map(token_digest, tokens))}
    install_error_handlers(app)

    @app.get("/healthz")
    def healthz() -> Response:
        return reply({"status": "ok"})

    @app.post("/v1/reports")
    def post_reports() -> Response:
        require_token(digests, "ingest")
        data, _ = read_body(max_items=BATCH_ITEMS)
        reports = data.get("reports") if isinstance(data, Mapping) else None
        if not isinstance(reports, list) or not 1 <= len(reports) <= MAX_BATCH_REPORTS:
            raise InvalidInput(f"batch.reports must be a list of 1..{MAX_BATCH_REPORTS}")
        now = time.time()
        checked = [_check(raw, i, by_name, now) for i, raw in enumerate(reports)]
        accepted, duplicates = store.ingest(checked, now)
        return reply({"v": 1, "accepted": accepted, "duplicates": duplicates})

    return app


@dataclass(frozen=True)
class PlainServer:
    url: str
    token: str
    pid: int


@contextlib.contextmanager
def running(root: Path, policy_file: Path, workers: int = 2) -> Iterator[PlainServer]:
    """Start the plaintext server as its own process on loopback; stop it afterwards."""
    port, token = free_port(), "ing_" + secrets.token_urlsafe(24)
    log_path = root / "plain-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "blindsum.benchmarks.plain_server", "--data-dir",
             str(root / "plain"), "--policies", str(policy_file), "--port", str(port),
             "--workers", str(workers)],
            env={**os.environ, "BLINDSUM_INGEST_TOKENS": token},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    service = ServiceProcess("plain-server", f"http://{LOOPBACK}:{port}", process, log_path)
    try:
        service.wait_healthy()
        yield PlainServer(service.url, token, process.pid)
    finally:
        service.stop()


def main(argv: Sequence[str] | None = None) -> int:
    from blindsum.server.wsgi import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--policies", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    policies = load_policies_toml(args.policies.read_text())
    tokens = [t for t in os.environ.get("BLINDSUM_INGEST_TOKENS", "").split(",") if t]
    serve(lambda: create_app(args.data_dir, policies, tokens), LOOPBACK, args.port,
          workers=args.workers, name="blindsum-plain-baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
