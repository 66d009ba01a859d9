"""The key-holder's append-only, hash-chained audit log.

Each entry's hash covers its own fields and the previous entry's hash, so deleting, editing
or reordering any past entry breaks every hash after it (``verify_chain`` finds where).
Entries are written in the same transaction as the state change they record.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    event: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


def _entry_hash(seq: int, at: float, event: str, detail: str, prev_hash: str) -> str:
    material = json.dumps([seq, repr(at), event, detail, prev_hash], separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()


def append(conn: sqlite3.Connection, event: str, detail: Mapping[str, Any]) -> int:
    """Append an entry inside the caller's write transaction; returns its sequence number."""
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    at = time.time()
    text = json.dumps(dict(detail), sort_keys=True, separators=(",", ":"))
    conn.execute(
        "INSERT INTO audit (seq, at, event, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
        (seq, at, event, text, prev, _entry_hash(seq, at, event, text, prev)),
    )
    return seq


def entries(conn: sqlite3.Connection, since: int = 0) -> list[AuditEntry]:
    rows = conn.execute(
        "SELECT seq, at, event, detail, prev_hash, hash FROM audit WHERE seq > ? ORDER BY seq",
        (since,),
    ).fetchall()
    return [AuditEntry(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]


def verify_chain(conn: sqlite3.Connection) -> int | None:
    """The sequence number of the first broken entry, or None if the chain is intact."""
    prev, expected_seq = GENESIS, 1
    for seq, at, event, detail, prev_hash, digest in conn.execute(
        "SELECT seq, at, event, detail, prev_hash, hash FROM audit ORDER BY seq"
    ):
        if seq != expected_seq or prev_hash != prev:
            return seq
        if _entry_hash(seq, at, event, detail, prev_hash) != digest:
            return seq
        prev, expected_seq = digest, seq + 1
    return None
