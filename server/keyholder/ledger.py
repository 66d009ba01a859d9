"""The privacy budget ledger: what each metric has spent, and which windows were consumed.

A row is written *before* its window is decrypted (``pay``), in the same ``BEGIN
IMMEDIATE`` transaction as the budget check, so two racing requests serialise, the budget
can never be overspent, and a window is decrypted at most once: the primary key (metric,
version, window, key id) admits one row ever. The row's ``state`` then moves once:

- ``paid``: debited, window consumed, decryption under way;
- ``released``: the signed result is stored in ``document`` (fetched again, never recomputed,
  by a retry carrying the same request digest);
- ``interrupted``: the process died or failed between paying and storing the result. The
  window stays consumed and its budget spent; it is never decrypted again, because a second
  decryption would be a second noisy look at the same plaintext.

Composition is basic: epsilons (and deltas) of a metric's releases add.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from blindsum.shared.policy import MetricPolicy

SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    metric TEXT NOT NULL,
    version INTEGER NOT NULL,
    window INTEGER NOT NULL,
    kid TEXT NOT NULL,
    report_count INTEGER NOT NULL,
    report_ids_digest TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    document TEXT NOT NULL,
    released_at REAL NOT NULL,
    request_digest TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'released'
        CHECK (state IN ('paid', 'released', 'interrupted')),
    paid_seq INTEGER NOT NULL DEFAULT 0,
    -- one row per window *and key epoch*, ever: a rotation mid-window leaves reports under
    -- both keys, and each aggregate is consumed (and debited) on its own
    PRIMARY KEY (metric, version, window, kid)
);
"""
# Columns added after the first release of the schema, for data directories made before.
_ADDED_COLUMNS = {
    "request_digest": "TEXT NOT NULL DEFAULT ''",
    "state": "TEXT NOT NULL DEFAULT 'released'",
    "paid_seq": "INTEGER NOT NULL DEFAULT 0",
}


def migrate(conn: sqlite3.Connection) -> None:
    """Add the columns an older ``releases`` table lacks (idempotent)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(releases)")}
    for column, decl in _ADDED_COLUMNS.items():
        if column not in present:
            conn.execute(f"ALTER TABLE releases ADD COLUMN {column} {decl}")


@dataclass(frozen=True)
class BudgetState:
    metric: str
    budget_epsilon: float
    spent_epsilon: float
    spent_delta: float
    releases: int

    @property
    def remaining_epsilon(self) -> float:
        return max(self.budget_epsilon - self.spent_epsilon, 0.0)

    def allows(self, epsilon: float) -> bool:
        # a tiny tolerance so ten releases of 0.1 fit a budget of 1.0 despite float sums
        return self.spent_epsilon + epsilon <= self.budget_epsilon * (1 + 1e-9)

    def to_json(self) -> dict[str, float | int | str]:
        return {"metric": self.metric, "budget_epsilon": self.budget_epsilon,
                "spent_epsilon": self.spent_epsilon, "spent_delta": self.spent_delta,
                "remaining_epsilon": self.remaining_epsilon, "releases": self.releases}


@dataclass(frozen=True)
class LedgerRow:
    """One consumed window."""

    metric: str
    version: int
    window: int
    key_id: str
    report_count: int
    request_digest: str
    state: str
    paid_seq: int
    paid_at: float
    document: dict | None


def budget(conn: sqlite3.Connection, policy: MetricPolicy) -> BudgetState:
    """Spending of a metric across all its versions: a new version does not reset it.

    Every consumed window counts, released or interrupted: both were paid for.
    """
    count, eps, delta = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) "
        "FROM releases WHERE metric = ?",
        (policy.name,),
    ).fetchone()
    return BudgetState(policy.name, policy.privacy.budget_epsilon, eps, delta, count)


_ROW_COLUMNS = ("metric, version, window, kid, report_count, request_digest, state, paid_seq, "
                "released_at, document")


def _row(r: tuple) -> LedgerRow:
    return LedgerRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
                     json.loads(r[9]) if r[9] else None)


def consumed(
    conn: sqlite3.Connection, metric: str, version: int, window: int, key_id: str | None = None
) -> LedgerRow | None:
    """The ledger row of a window under ``key_id`` (any key epoch if None)."""
    row = conn.execute(
        f"SELECT {_ROW_COLUMNS} FROM releases WHERE metric = ? AND version = ? AND window = ? "
        "AND (? IS NULL OR kid = ?) ORDER BY released_at LIMIT 1",
        (metric, version, window, key_id, key_id),
    ).fetchone()
    return None if row is None else _row(row)


def rows(conn: sqlite3.Connection) -> list[LedgerRow]:
    return [_row(r) for r in conn.execute(
        f"SELECT {_ROW_COLUMNS} FROM releases ORDER BY paid_seq, metric, window")]


def released_document(
    conn: sqlite3.Connection, metric: str, version: int, window: int, key_id: str | None = None
) -> dict | None:
    """The stored signed result of a window under ``key_id`` (any key epoch if None)."""
    row = consumed(conn, metric, version, window, key_id)
    return row.document if row is not None and row.state == "released" else None


def pay(
    conn: sqlite3.Connection,
    *,
    metric: str,
    version: int,
    window: int,
    key_id: str,
    report_count: int,
    report_ids_digest: str,
    request_digest: str,
    epsilon: float,
    delta: float,
    paid_seq: int,
) -> None:
    """Debit the budget and consume the window, before anything is decrypted.

    The primary key makes a second row for the window impossible (IntegrityError).
    """
    conn.execute(
        "INSERT INTO releases (metric, version, window, kid, report_count, report_ids_digest,"
        " epsilon, delta, document, released_at, request_digest, state, paid_seq) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, 'paid', ?)",
        (metric, version, window, key_id, report_count, report_ids_digest, epsilon, delta,
         time.time(), request_digest, paid_seq),
    )


def settle(
    conn: sqlite3.Connection, row: LedgerRow, state: str, document: dict | None = None
) -> None:
    """Move a ``paid`` row to ``released`` (with its signed result) or ``interrupted``."""
    if state not in ("released", "interrupted"):
        raise ValueError(f"a paid window settles as released or interrupted, not {state!r}")
    cursor = conn.execute(
        "UPDATE releases SET state = ?, document = ? WHERE metric = ? AND version = ? "
        "AND window = ? AND kid = ? AND state = 'paid'",
        (state, json.dumps(document) if document is not None else "", row.metric, row.version,
         row.window, row.key_id),
    )
    if cursor.rowcount != 1:
        raise RuntimeError(f"ledger row of window {row.window} of {row.metric!r} is not paid")
