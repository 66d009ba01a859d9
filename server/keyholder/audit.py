"""The key-holder's append-only, hash-chained audit log, and its verification.

Each entry's hash covers its own fields and the previous entry's hash, so editing or
reordering a past entry breaks every hash after it. A bare hash chain can be *recomputed*
by whoever can write the database, and its tail can be cut; so the key-holder also signs
the chain head with its identity key, and the signed heads leave the machine:

- every release result carries ``audit_seq`` and ``audit_head`` (the hash of its own
  ``release`` entry) inside the signed payload the server stores and publishes;
- ``GET /v1/audit/head`` answers a signed head, which the server fetches and keeps after
  every release attempt, refusals included.

``verify`` then detects (see ``AuditReport``): a broken chain; a rewritten and recomputed
chain (a signed head no longer matches the entry at its seq); a deleted tail (a signed
head points past the end); a deleted ledger row, i.e. a budget refund (a ``release-paid``
entry without its row); and ledger rows no entry accounts for. It also counts releases
and refusals per metric. What it cannot detect: entries appended after the newest signed
head the verifier holds and then deleted (say so; the server's heads shrink that window to
one release attempt).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from blindsum.shared.errors import ManifestError
from blindsum.shared.signing import sign_document, verify_document

GENESIS = "0" * 64
HEAD_TYPE = "blindsum.audit-head"

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


def entry_hash(conn: sqlite3.Connection, seq: int) -> str:
    row = conn.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        raise LookupError(f"no audit entry {seq}")
    return str(row[0])


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    """(seq, hash) of the newest entry, (0, GENESIS) for an empty log."""
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def signed_head(conn: sqlite3.Connection, identity: Ed25519PrivateKey) -> dict[str, str]:
    """The chain head signed with the key-holder's identity, for others to keep."""
    seq, digest = head(conn)
    return sign_document(identity, {"type": HEAD_TYPE, "v": 1, "seq": seq, "hash": digest,
                                    "at": time.time()})


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


# -- verification ---------------------------------------------------------------------------


@dataclass
class AuditReport:
    """What ``verify`` found: ``problems`` is empty when everything holds."""

    entries: int
    signed_heads: int
    problems: list[str] = field(default_factory=list)
    releases: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    interrupted: Counter[str] = field(default_factory=Counter)

    @property
    def intact(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        metrics = sorted(set(self.releases) | set(self.refusals) | set(self.interrupted))
        return {
            "intact": self.intact, "entries": self.entries, "signed_heads": self.signed_heads,
            "problems": self.problems,
            "metrics": [{"metric": m, "releases": self.releases[m],
                         "refusals": self.refusals[m], "interrupted": self.interrupted[m]}
                        for m in metrics],
        }


def _window_of(detail: Mapping[str, Any]) -> tuple[Any, ...]:
    return (detail.get("metric"), detail.get("version"), detail.get("window"), detail.get("kid"))


def verify(
    conn: sqlite3.Connection,
    identity: Ed25519PublicKey,
    ledger_rows: Iterable[Any],
    external_heads: Iterable[Any] = (),
) -> AuditReport:
    """Check the chain, the ledger against it, and every signed head against both.

    ``ledger_rows`` are ``ledger.LedgerRow``; ``external_heads`` are signed head documents
    (or signed release results) kept elsewhere, typically by the server.
    """
    log = entries(conn)
    by_seq = {e.seq: e for e in log}
    report = AuditReport(entries=len(log), signed_heads=0)
    broken = verify_chain(conn)
    if broken is not None:
        report.problems.append(f"hash chain broken at entry {broken} of {len(log)}")
    paid = {e.seq: e for e in log if e.event == "release-paid"}
    for entry in log:
        metric = str(entry.detail.get("metric"))
        if entry.event == "release":
            report.releases[metric] += 1
        elif entry.event == "release-refused":
            report.refusals[metric] += 1
        elif entry.event == "release-interrupted":
            report.interrupted[metric] += 1
    accounted: set[int] = set()
    heads: list[tuple[str, Any]] = []
    for row in ledger_rows:
        where = f"ledger row {row.metric!r} window {row.window} key {row.key_id!r}"
        entry = paid.get(row.paid_seq)
        if entry is None or _window_of(entry.detail) != (
                row.metric, row.version, row.window, row.key_id) or (
                entry.detail.get("request_digest") != row.request_digest):
            report.problems.append(f"{where} has no matching release-paid audit entry")
        else:
            accounted.add(row.paid_seq)
        if row.state == "released":
            heads.append((where, row.document))
    for seq in sorted(set(paid) - accounted):
        detail = paid[seq].detail
        report.problems.append(
            f"audit entry {seq} paid for window {detail.get('window')} of "
            f"{detail.get('metric')!r} but the ledger has no row for it (budget refunded?)")
    heads.extend(("a head kept by the server", doc) for doc in external_heads)
    for where, document in heads:
        problem = _check_head(document, identity, by_seq)
        report.signed_heads += 1
        if problem:
            report.problems.append(f"{where}: {problem}")
    return report


def _check_head(document: Any, identity: Ed25519PublicKey,
                by_seq: Mapping[int, AuditEntry]) -> str | None:
    try:
        payload = verify_document(document, identity, "signed audit head")
    except ManifestError as exc:
        return exc.detail
    if payload.get("type") == HEAD_TYPE:
        seq, digest = payload.get("seq"), payload.get("hash")
    else:
        seq, digest = payload.get("audit_seq"), payload.get("audit_head")
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(digest, str):
        return "carries no audit head"
    if seq == 0:
        return None if digest == GENESIS else "signed an empty log with a non-genesis hash"
    entry = by_seq.get(seq)
    if entry is None:
        return f"signed head {seq} is missing from the log (its tail was deleted)"
    if entry.hash != digest:
        return f"entry {seq} differs from the one the key-holder signed (log rewritten)"
    return None
