"""The aggregator's durable state in SQLite (``data_dir/aggregator.db``).

Tables:

- ``reports``: every accepted report (id, metric, version, key id, window, its ciphertexts as
  a CBOR list of byte strings, and its validity proof as compact JSON, NULL for a metric
  with ``validity = "none"``). The primary key on the id makes retries idempotent.
- ``windows``: one row per (metric, version, window, key id) with the running homomorphic
  aggregate, its report count and its state: ``open`` (taking reports), ``sealed`` (claimed
  by a release driver; ``claimed_until`` says when another worker may retry it),
  ``released`` or ``refused`` (final; ``detail`` says why).
- ``results``: the verified signed result of each released window.
- ``manifest_cache`` and ``ckks_contexts``: the last verified manifest and CKKS public
  contexts, so a restart works while the key-holder is briefly down.
- ``audit_heads``: the key-holder's signed audit-chain heads, one per sequence number,
  fetched after every release attempt: evidence the key-holder cannot take back, checked by
  ``blindsum keyholder audit --server-url``.
- ``tokens``: the bearer tokens operators created (``blindsum server token create``), as
  SHA-256 digests with their role, label, metric scope and revocation time (see
  ``tokens.py``); never a token itself.

Under the gevent worker (``server/worker.py``) a "thread" is a greenlet: never do network
I/O (anything that can yield) inside ``transaction()``, or another greenlet of the same
worker waiting on SQLite's busy lock would freeze the worker until the busy timeout.

Each thread has its own connection (``threading.local``); writes go through
``transaction()`` (``BEGIN IMMEDIATE``, so a check-then-write is atomic across threads and
gunicorn workers; ``synchronous=FULL``, so a commit is durable when it returns).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cbor2

from blindsum.server.sqlite import connect, write_transaction
from blindsum.shared import codec
from blindsum.shared.codec import ReleaseResult, Report

DB_NAME = "aggregator.db"
SCHEMA_VERSION = 5  # 3: per-token report caps; 4: the server's committed release noise;
# 5: report proofs
STATES = ("open", "sealed", "released", "refused")
_ID_CHUNK = 500  # ids per "IN (...)": far below SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    report_id BLOB PRIMARY KEY,
    metric TEXT NOT NULL,
    version INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    "window" INTEGER NOT NULL,
    ciphertexts BLOB NOT NULL,
    received_at REAL NOT NULL,
    proof TEXT
);
CREATE INDEX IF NOT EXISTS reports_by_window ON reports (metric, version, "window", key_id);
CREATE TABLE IF NOT EXISTS windows (
    metric TEXT NOT NULL,
    version INTEGER NOT NULL,
    "window" INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    aggregate BLOB NOT NULL,
    report_count INTEGER NOT NULL CHECK (report_count >= 1),
    state TEXT NOT NULL CHECK (state IN ('open', 'sealed', 'released', 'refused')),
    detail TEXT,
    due_at REAL NOT NULL,
    claimed_until REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (metric, version, "window", key_id)
);
CREATE INDEX IF NOT EXISTS windows_by_state ON windows (state, due_at);
CREATE TABLE IF NOT EXISTS results (
    metric TEXT NOT NULL,
    version INTEGER NOT NULL,
    "window" INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    document TEXT NOT NULL,
    payload TEXT NOT NULL,
    released_at REAL NOT NULL,
    PRIMARY KEY (metric, version, "window", key_id)
);
CREATE TABLE IF NOT EXISTS manifest_cache (
    slot INTEGER PRIMARY KEY CHECK (slot = 1),
    serial INTEGER NOT NULL,
    document TEXT NOT NULL,
    stored_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ckks_contexts (
    key_id TEXT PRIMARY KEY,
    context BLOB NOT NULL,
    stored_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY CHECK (length(digest) = 64),
    role TEXT NOT NULL CHECK (role IN ('ingest', 'admin')),
    label TEXT NOT NULL,
    metrics TEXT,
    created_at REAL NOT NULL,
    revoked_at REAL,
    max_reports_per_window INTEGER
);
-- reports each capped token sent per (metric, window): the server's bound on one install
CREATE TABLE IF NOT EXISTS token_reports (
    digest TEXT NOT NULL,
    metric TEXT NOT NULL,
    "window" INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (digest, metric, "window")
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_active_label ON tokens (label)
    WHERE revoked_at IS NULL;
-- our encrypted noise for a window's release (noise = "both"), kept before it is first sent
-- so a retry resends the same request: one draw per window, its plaintext never stored
CREATE TABLE IF NOT EXISTS server_noise (
    metric TEXT NOT NULL,
    version INTEGER NOT NULL,
    "window" INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    ciphertexts BLOB NOT NULL,
    drawn_at REAL NOT NULL,
    PRIMARY KEY (metric, version, "window", key_id)
);
-- the proof that our noise is in range and known to us (shared/threshold/noise_proof.py),
-- kept with it (a separate table so that stores made before proofs open unchanged)
CREATE TABLE IF NOT EXISTS server_noise_proofs (
    metric TEXT NOT NULL,
    version INTEGER NOT NULL,
    "window" INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    proof TEXT NOT NULL,
    PRIMARY KEY (metric, version, "window", key_id)
);
CREATE TABLE IF NOT EXISTS audit_heads (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    document TEXT NOT NULL,
    fetched_at REAL NOT NULL
);
"""


@dataclass(frozen=True, order=True)
class WindowKey:
    """One aggregate: reports of one metric version, window and key sum together."""

    metric: str
    version: int
    window: int
    key_id: str

    def describe(self) -> str:
        return (f"metric {self.metric!r} version {self.version} window {self.window} "
                f"key {self.key_id!r}")


@dataclass(frozen=True)
class WindowRow:
    key: WindowKey
    aggregate: tuple[bytes, ...]
    report_count: int
    state: str
    detail: str | None
    due_at: float
    claimed_until: float | None
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.key.metric,
            "version": self.key.version,
            "window": self.key.window,
            "kid": self.key.key_id,
            "report_count": self.report_count,
            "state": self.state,
            "detail": self.detail,
            "due_at": self.due_at,
        }


@dataclass(frozen=True)
class StoredResult:
    """A released window's signed result: ``document`` as received, ``payload`` parsed."""

    metric: str
    version: int
    window: int
    key_id: str
    document: dict[str, str]
    payload: dict[str, Any]
    released_at: float

    @cached_property
    def result(self) -> ReleaseResult:
        """The typed payload; ``InvalidInput`` if it is not a well-formed release result."""
        return ReleaseResult.from_json(self.payload)


ResultKey = tuple[str, int, int, str]
"""(metric, window, version, key_id): the order results are listed in"""

ReportRow = tuple[bytes, str, int, str, int, bytes, float, str | None]
"""(report_id, metric, version, key_id, window, ciphertexts CBOR, received_at, proof JSON)"""


def pack_proof(proof: dict[str, Any] | None) -> str | None:
    """A report's proof as stored: compact JSON text, byte strings (from CBOR) as base64url,
    the form the key-holder is forwarded either way."""
    return None if proof is None else codec.dumps(proof).decode()


def pack_blobs(blobs: Sequence[bytes]) -> bytes:
    """Ciphertext list as stored: a CBOR array of byte strings."""
    return cbor2.dumps(list(blobs))


def unpack_blobs(data: bytes) -> tuple[bytes, ...]:
    blobs = cbor2.loads(data)
    if not isinstance(blobs, list) or not all(isinstance(b, bytes) for b in blobs):
        raise ValueError("stored ciphertexts are not a CBOR list of byte strings")
    return tuple(blobs)


_WINDOW_COLUMNS = (
    'metric, version, "window", key_id, aggregate, report_count, state, detail, due_at, '
    "claimed_until, updated_at"
)
_KEY_MATCH = 'metric = ? AND version = ? AND "window" = ? AND key_id = ?'


def _window_row(row: Sequence[Any]) -> WindowRow:
    return WindowRow(
        WindowKey(row[0], row[1], row[2], row[3]), unpack_blobs(row[4]), row[5], row[6],
        row[7], row[8], row[9], row[10],
    )


def _key_params(key: WindowKey) -> tuple[str, int, int, str]:
    return key.metric, key.version, key.window, key.key_id


class Transaction:
    """The writes and reads-for-write available inside one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def existing_report_ids(self, report_ids: Sequence[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        for start in range(0, len(report_ids), _ID_CHUNK):
            chunk = report_ids[start:start + _ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT report_id FROM reports WHERE report_id IN ({marks})", chunk
            )
            found.update(row[0] for row in rows)
        return found

    def insert_reports(self, rows: Iterable[ReportRow]) -> None:
        self.conn.executemany(
            'INSERT INTO reports (report_id, metric, version, key_id, "window", ciphertexts, '
            "received_at, proof) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def window(self, key: WindowKey) -> WindowRow | None:
        row = self.conn.execute(
            f"SELECT {_WINDOW_COLUMNS} FROM windows WHERE {_KEY_MATCH}", _key_params(key)
        ).fetchone()
        return None if row is None else _window_row(row)

    def create_window(
        self, key: WindowKey, aggregate: Sequence[bytes], count: int, due: float, now: float
    ) -> None:
        self.conn.execute(
            f"INSERT INTO windows ({_WINDOW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 'open', NULL, "
            "?, NULL, ?)",
            (*_key_params(key), pack_blobs(aggregate), count, due, now),
        )

    def fold_window(
        self, key: WindowKey, aggregate: Sequence[bytes], count: int, now: float
    ) -> None:
        """Replace an open window's aggregate and count (the caller summed them)."""
        cursor = self.conn.execute(
            f"UPDATE windows SET aggregate = ?, report_count = ?, updated_at = ? "
            f"WHERE {_KEY_MATCH} AND state = 'open'",
            (pack_blobs(aggregate), count, now, *_key_params(key)),
        )
        if cursor.rowcount != 1:
            raise RuntimeError(f"{key.describe()} is not open")

    def release_claims(self, now: float) -> int:
        """Let every sealed window be retried now; how many claims were dropped.

        Only for a server that is starting: no worker runs yet, so a claim still in force
        was held by a process that died mid-release. Its window is retried with the *same*
        request, which the key-holder answers from its stored result (no second noise
        draw, no second debit), instead of waiting out the lease.
        """
        cursor = self.conn.execute(
            "UPDATE windows SET claimed_until = NULL, updated_at = ? "
            "WHERE state = 'sealed' AND claimed_until > ?", (now, now))
        return cursor.rowcount

    def claim_window(self, key: WindowKey, now: float, lease: float) -> bool:
        """Seal an open window (or re-claim an expired seal); True if this caller owns it."""
        cursor = self.conn.execute(
            f"UPDATE windows SET state = 'sealed', claimed_until = ?, updated_at = ? "
            f"WHERE {_KEY_MATCH} AND (state = 'open' OR "
            f"(state = 'sealed' AND COALESCE(claimed_until, 0) <= ?))",
            (now + lease, now, *_key_params(key), now),
        )
        return cursor.rowcount == 1

    def set_window_state(
        self, key: WindowKey, state: str, detail: str | None, now: float,
        claimed_until: float | None = None,
    ) -> None:
        if state not in STATES:
            raise ValueError(f"unknown window state {state!r}")
        self.conn.execute(
            f"UPDATE windows SET state = ?, detail = ?, claimed_until = ?, updated_at = ? "
            f"WHERE {_KEY_MATCH}",
            (state, detail, claimed_until, now, *_key_params(key)),
        )

    def put_result(self, key: WindowKey, document: dict[str, Any], payload_text: str,
                   now: float) -> None:
        self.conn.execute(
            'INSERT OR REPLACE INTO results (metric, version, "window", key_id, document, '
            "payload, released_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*_key_params(key), json.dumps(document, sort_keys=True), payload_text, now),
        )


class _Held:
    """A thread's connection, closed when the thread (or greenlet) that owns it is gone."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class Store:
    """The aggregator database; safe to share between threads (one connection each)."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = data_dir / DB_NAME
        self._local = threading.local()
        self._lock = threading.Lock()
        # Held weakly: under the gevent worker "a thread" is a greenlet, one per client
        # connection, and a list would keep every finished greenlet's connection open.
        self._connections: weakref.WeakSet[_Held] = weakref.WeakSet()
        # One script, one transaction: concurrent workers starting together create it once.
        # Skipped when the schema is there, so a worker restarting on a full disk still boots
        # (and answers 503 storage-unavailable) instead of halting the whole server.
        version = self.connection().execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            self.connection().executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )
            self._add_column("tokens", "max_reports_per_window", "INTEGER")
            # reports stored before proofs existed keep NULL: they were accepted unproven
            self._add_column("reports", "proof", "TEXT")

    def _add_column(self, table: str, column: str, kind: str) -> None:
        """Stores made before ``column`` existed lack it (idempotent, race-safe)."""
        conn = self.connection()
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as exc:  # another worker added it first
                if "duplicate column" not in str(exc):
                    raise

    def connection(self) -> sqlite3.Connection:
        held: _Held | None = getattr(self._local, "held", None)
        if held is None:
            held = _Held(connect(self.path))
            self._local.held = held
            with self._lock:
                self._connections.add(held)
        return held.conn

    def close(self) -> None:
        """Close every live thread's connection (at shutdown only)."""
        with self._lock:
            connections, self._connections = list(self._connections), weakref.WeakSet()
        for held in connections:
            held.conn.close()
        self._local = threading.local()

    def erase_settled_reports(self, settled_before: float, limit: int) -> int:
        """Erase the ciphertexts of up to ``limit`` reports whose window was released or
        refused before ``settled_before``; keep their ids. Returns how many were erased.

        The ids stay so a late retry of a report is still answered as a duplicate (and
        ``report_ids`` still gives the digest a release was made over); the ciphertexts are
        never needed again once the window is final. ``secure_delete`` overwrites the freed
        pages rather than leaving the old bytes in the file.
        """
        with self.transaction() as tx:
            tx.conn.execute("PRAGMA secure_delete = ON")
            erased = tx.conn.execute(
                "UPDATE reports SET ciphertexts = X'', proof = NULL WHERE rowid IN ("
                "  SELECT r.rowid FROM reports r JOIN windows w ON w.metric = r.metric"
                '  AND w.version = r.version AND w."window" = r."window"'
                "  AND w.key_id = r.key_id"
                "  WHERE w.state IN ('released', 'refused') AND w.updated_at < ?"
                "  AND length(r.ciphertexts) > 0 LIMIT ?)",
                (settled_before, limit),
            ).rowcount
        return int(erased)

    def window_counts(self) -> dict[str, int]:
        """How many windows are in each state (for metrics)."""
        rows = self.connection().execute("SELECT state, count(*) FROM windows GROUP BY state")
        return {str(state): int(count) for state, count in rows}

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One durable write transaction; rolled back if the block raises."""
        with write_transaction(self.connection()) as conn:
            yield Transaction(conn)

    # -- reads ---------------------------------------------------------------------------

    def window(self, key: WindowKey) -> WindowRow | None:
        return Transaction(self.connection()).window(key)

    def existing_report_ids(self, report_ids: Sequence[bytes]) -> set[bytes]:
        return Transaction(self.connection()).existing_report_ids(report_ids)

    def windows(self, metric: str | None = None, states: Sequence[str] = STATES,
                window: int | None = None) -> list[WindowRow]:
        clauses = [f"state IN ({','.join('?' * len(states))})"]
        params: list[Any] = list(states)
        if metric is not None:
            clauses.append("metric = ?")
            params.append(metric)
        if window is not None:
            clauses.append('"window" = ?')
            params.append(window)
        rows = self.connection().execute(
            f"SELECT {_WINDOW_COLUMNS} FROM windows WHERE {' AND '.join(clauses)} "
            'ORDER BY "window", metric, version, key_id',
            params,
        )
        return [_window_row(row) for row in rows]

    def releasable_windows(self, due_by: float, now: float) -> list[WindowRow]:
        """Windows due by ``due_by`` that are open, or sealed by a claim lapsed by ``now``."""
        rows = self.connection().execute(
            f"SELECT {_WINDOW_COLUMNS} FROM windows WHERE due_at <= ? AND (state = 'open' OR "
            "(state = 'sealed' AND COALESCE(claimed_until, 0) <= ?)) ORDER BY due_at",
            (due_by, now),
        )
        return [_window_row(row) for row in rows]

    def report_ids(self, key: WindowKey) -> list[bytes]:
        rows = self.connection().execute(
            f"SELECT report_id FROM reports WHERE {_KEY_MATCH}", _key_params(key)
        )
        return [row[0] for row in rows]

    def window_reports(self, key: WindowKey) -> list[Report]:
        """The window's stored reports with their proofs, in arrival order (what the
        key-holder needs to verify and sum them itself). A report whose ciphertexts the
        retention sweep erased comes back without ciphertexts (``()``) and proof."""
        rows = self.connection().execute(
            f"SELECT report_id, ciphertexts, proof FROM reports WHERE {_KEY_MATCH} "
            "ORDER BY received_at, rowid", _key_params(key)
        )
        return [
            Report(bytes(row[0]), key.metric, key.version, key.key_id, key.window,
                   unpack_blobs(row[1]) if row[1] else (),
                   None if row[2] is None else json.loads(row[2]))
            for row in rows
        ]

    def results(self, metric: str | None = None) -> list[StoredResult]:
        query = ('SELECT metric, version, "window", key_id, document, payload, released_at '
                 "FROM results")
        params: tuple[Any, ...] = ()
        if metric is not None:
            query += " WHERE metric = ?"
            params = (metric,)
        rows = self.connection().execute(query + ' ORDER BY metric, "window", version', params)
        return [
            StoredResult(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), r[6])
            for r in rows
        ]

    def result_metrics(self) -> list[str]:
        """Names of the metrics with at least one published result."""
        rows = self.connection().execute("SELECT DISTINCT metric FROM results ORDER BY metric")
        return [row[0] for row in rows]

    def results_page(self, metric: str | None = None, start: int | None = None,
                     end: int | None = None, after: ResultKey | None = None,
                     limit: int | None = None, newest_first: bool = False,
                     ) -> list[StoredResult]:
        """Results ordered by (metric, window, version, key id), filtered and paged.

        ``start`` and ``end`` bound the window start (``start <= window < end``); ``after``
        resumes after a result's key (keyset pagination: stable while results are added);
        ``newest_first`` reverses the order (and ignores ``after``).
        """
        clauses: list[str] = []
        params: list[Any] = []
        if metric is not None:
            clauses.append("metric = ?")
            params.append(metric)
        if start is not None:
            clauses.append('"window" >= ?')
            params.append(start)
        if end is not None:
            clauses.append('"window" < ?')
            params.append(end)
        if after is not None and not newest_first:
            clauses.append('(metric, "window", version, key_id) > (?, ?, ?, ?)')
            params.extend(after)
        order = " DESC" if newest_first else ""
        query = ('SELECT metric, version, "window", key_id, document, payload, released_at '
                 "FROM results" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
                 + f' ORDER BY metric{order}, "window"{order}, version{order}, key_id{order}')
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        rows = self.connection().execute(query, params)
        return [
            StoredResult(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), r[6])
            for r in rows
        ]

    # -- the server's committed release noise -----------------------------------------

    def server_noise(self, key: WindowKey) -> tuple[bytes, ...] | None:
        """Our encrypted noise for ``key``'s release, if it was ever drawn."""
        row = self.connection().execute(
            'SELECT ciphertexts FROM server_noise WHERE metric = ? AND version = ? '
            'AND "window" = ? AND key_id = ?', _key_params(key)).fetchone()
        return None if row is None else unpack_blobs(bytes(row[0]))

    def server_noise_proof(self, key: WindowKey) -> dict[str, Any] | None:
        """The proof kept with our noise for ``key`` (None for noise drawn before proofs)."""
        row = self.connection().execute(
            'SELECT proof FROM server_noise_proofs WHERE metric = ? AND version = ? '
            'AND "window" = ? AND key_id = ?', _key_params(key)).fetchone()
        return None if row is None else json.loads(row[0])

    def keep_server_noise(self, key: WindowKey, ciphertexts: Sequence[bytes],
                          proof: Mapping[str, Any], now: float
                          ) -> tuple[tuple[bytes, ...], dict[str, Any] | None]:
        """Store ``ciphertexts`` and their proof unless noise for ``key`` is stored already;
        return what is stored (the first one kept wins, so every request for the window
        carries it, with its own proof)."""
        with self.transaction() as tx:
            cursor = tx.conn.execute(
                'INSERT OR IGNORE INTO server_noise (metric, version, "window", key_id, '
                "ciphertexts, drawn_at) VALUES (?, ?, ?, ?, ?, ?)",
                (*_key_params(key), pack_blobs(ciphertexts), now))
            if cursor.rowcount:  # only the proof of the noise that was kept
                tx.conn.execute(
                    'INSERT INTO server_noise_proofs (metric, version, "window", key_id, '
                    "proof) VALUES (?, ?, ?, ?, ?)",
                    (*_key_params(key), json.dumps(proof, sort_keys=True)))
        stored = self.server_noise(key)
        assert stored is not None  # rows are never deleted
        return stored, self.server_noise_proof(key)

    # -- the key-holder's signed audit heads --------------------------------------------

    def put_audit_head(self, seq: int, digest: str, document: dict[str, str],
                       now: float) -> None:
        """Keep a verified signed head; the first one kept for a sequence number stays."""
        with self.transaction() as tx:
            tx.conn.execute(
                "INSERT OR IGNORE INTO audit_heads (seq, hash, document, fetched_at) "
                "VALUES (?, ?, ?, ?)",
                (seq, digest, json.dumps(document, sort_keys=True), now),
            )

    def audit_heads(self) -> list[dict[str, str]]:
        rows = self.connection().execute("SELECT document FROM audit_heads ORDER BY seq")
        return [json.loads(row[0]) for row in rows]

    # -- manifest cache ------------------------------------------------------------------

    def cached_manifest(self) -> dict[str, Any] | None:
        row = self.connection().execute(
            "SELECT document FROM manifest_cache WHERE slot = 1"
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def cache_manifest(self, serial: int, document: dict[str, Any], now: float) -> None:
        with self.transaction() as tx:
            tx.conn.execute(
                "INSERT OR REPLACE INTO manifest_cache (slot, serial, document, stored_at) "
                "VALUES (1, ?, ?, ?)",
                (serial, json.dumps(document, sort_keys=True), now),
            )

    def cached_context(self, key_id: str) -> bytes | None:
        row = self.connection().execute(
            "SELECT context FROM ckks_contexts WHERE key_id = ?", (key_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def cache_context(self, key_id: str, context: bytes, now: float) -> None:
        with self.transaction() as tx:
            tx.conn.execute(
                "INSERT OR REPLACE INTO ckks_contexts (key_id, context, stored_at) "
                "VALUES (?, ?, ?)",
                (key_id, context, now),
            )
