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

Each row books the release's ``(epsilon, delta)`` and its zCDP cost ``rho`` (the Gaussian
plan's OpenDP map; ``epsilon**2 / 2`` for a pure-DP Laplace release). A metric's rows are
composed both ways (``accounting.Spend``): a release is admitted while either basic
composition or the zCDP total, converted once by OpenDP at the budget's delta, stays within
``(budget_epsilon, budget_delta)``, and the tighter of the two is reported. Rows written
before ``rho`` was booked get it from their policy version (``backfill_rho``); until they
do, the metric is accounted by basic composition only.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from blindsum.server.keyholder.accounting import Spend, capacity
from blindsum.server.keyholder.cost import release_cost
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
    -- the release's zCDP cost; NULL only in rows written before it was booked
    rho REAL,
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
    "rho": "REAL",
}


def migrate(conn: sqlite3.Connection) -> None:
    """Add the columns an older ``releases`` table lacks (idempotent)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(releases)")}
    for column, decl in _ADDED_COLUMNS.items():
        if column not in present:
            conn.execute(f"ALTER TABLE releases ADD COLUMN {column} {decl}")


def backfill_rho(conn: sqlite3.Connection,
                 rho_of: Callable[[str, int], float | None]) -> int:
    """Book ``rho`` in rows written before it was (``rho_of(metric, version)``, None if the
    policy version is unknown); returns how many rows were filled."""
    filled = 0
    pending = conn.execute(
        "SELECT DISTINCT metric, version FROM releases WHERE rho IS NULL").fetchall()
    for metric, version in pending:
        rho = rho_of(metric, version)
        if rho is not None:
            filled += conn.execute(
                "UPDATE releases SET rho = ? WHERE metric = ? AND version = ? AND rho IS NULL",
                (rho, metric, version)).rowcount
    return filled


@dataclass(frozen=True)
class BudgetState:
    """A metric's spending against its budget, under the tighter of the two compositions."""

    metric: str
    budget_epsilon: float
    budget_delta: float
    spent: Spend
    budget_period: int = 0  # seconds; 0 for a lifetime budget
    period_start: int | None = None
    period_end: int | None = None
    next_release: Spend | None = None  # what one more release costs

    @property
    def releases_left(self) -> int:
        """How many more releases of ``next_release`` the period's budget can pay."""
        cost = self.next_release
        if cost is None:
            return 0
        estimates = [0]
        if cost.epsilon > 0:
            estimates.append(math.floor(
                (self.budget_epsilon * (1 + 1e-9) - self.spent.epsilon) / cost.epsilon))
        if self.budget_delta > 0 and math.isfinite(self.spent.rho) and cost.rho > 0:
            room = capacity(self.budget_epsilon, self.budget_delta) - self.spent.rho
            estimates.append(math.floor(room / cost.rho))

        def fits(count: int) -> bool:
            return self.spent.plus(cost.times(count)).fits(self.budget_epsilon,
                                                           self.budget_delta)

        # fits() is monotone in count: binary search for the largest count that fits
        low, high = 0, max(max(estimates), 0) + 1
        while fits(high):
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if fits(middle) else (low, middle)
        return low if fits(low) else 0

    @property
    def exhausted(self) -> bool:
        """True if the period's budget cannot pay one more release."""
        return self.next_release is not None and not self.allows(self.next_release)

    @property
    def spent_epsilon(self) -> float:
        """Basic composition: the sum of the releases' epsilons."""
        return self.spent.epsilon

    @property
    def spent_delta(self) -> float:
        return self.spent.delta

    @property
    def spent_rho(self) -> float | None:
        """The zCDP total; None while a row's rho is not booked."""
        return self.spent.rho if math.isfinite(self.spent.rho) else None

    @property
    def releases(self) -> int:
        return self.spent.releases

    @property
    def epsilon_zcdp(self) -> float | None:
        """The zCDP total converted once (OpenDP) at ``budget_delta``; None if it cannot be."""
        if self.budget_delta == 0 or not math.isfinite(self.spent.rho):
            return None
        return self.spent.zcdp_epsilon(self.budget_delta)

    @property
    def _guarantee(self) -> tuple[str, float, float]:
        return self.spent.guarantee(self.budget_delta)

    @property
    def accounting(self) -> str:
        """Which composition certifies the reported guarantee: "basic" or "zcdp"."""
        return self._guarantee[0]

    @property
    def epsilon(self) -> float:
        """The epsilon all releases so far are certified at (the tighter composition)."""
        return self._guarantee[1]

    @property
    def delta(self) -> float:
        return self._guarantee[2]

    @property
    def remaining_epsilon(self) -> float:
        return max(self.budget_epsilon - self.epsilon, 0.0)

    def allows(self, cost: Spend) -> bool:
        """True if one more release of ``cost`` keeps the metric within its budget."""
        return self.spent.plus(cost).fits(self.budget_epsilon, self.budget_delta)

    def to_json(self) -> dict[str, float | int | str | None]:
        return {"metric": self.metric, "budget_epsilon": self.budget_epsilon,
                "budget_delta": self.budget_delta,
                "spent_epsilon": self.spent_epsilon, "spent_delta": self.spent_delta,
                "spent_rho": self.spent_rho,
                "epsilon_zcdp": self.epsilon_zcdp, "accounting": self.accounting,
                "epsilon": self.epsilon, "delta": self.delta,
                "remaining_epsilon": self.remaining_epsilon, "releases": self.releases,
                "releases_left": self.releases_left,
                "budget_period": self.budget_period, "period_start": self.period_start,
                "period_end": self.period_end, "paused": self.exhausted,
                "paused_until": self.period_end if self.exhausted else None}


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


def budget(conn: sqlite3.Connection, policy: MetricPolicy, at: float | None = None
           ) -> BudgetState:
    """Spending of a metric across all its versions (a new version does not reset it), in
    the budget period holding time ``at`` (default now; the whole life for a lifetime
    budget). A release is charged to the period its *window* starts in, so releasing
    yesterday's last window today spends yesterday's budget.

    Every consumed window counts, released or interrupted: both were paid for.
    """
    period = policy.privacy.budget_period
    start = end = None
    if period:
        start = math.floor(time.time() if at is None else at) // period * period
        end = start + period
    spent = Spend()
    for eps, delta, rho in conn.execute(
            "SELECT epsilon, delta, rho FROM releases WHERE metric = ? "
            "AND (? IS NULL OR (window >= ? AND window < ?)) ORDER BY paid_seq",
            (policy.name, start, start, end)):
        # a row without rho (not yet backfilled) rules zCDP out: basic composition only
        row = Spend(eps, delta, math.inf if rho is None else rho, 1)
        spent = spent.plus(row)
    privacy = policy.privacy
    return BudgetState(policy.name, privacy.budget_epsilon, privacy.budget_delta, spent,
                       period, start, end, release_cost(policy))


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
    rho: float,
    paid_seq: int,
) -> None:
    """Debit the budget and consume the window, before anything is decrypted.

    The primary key makes a second row for the window impossible (IntegrityError).
    """
    conn.execute(
        "INSERT INTO releases (metric, version, window, kid, report_count, report_ids_digest,"
        " epsilon, delta, rho, document, released_at, request_digest, state, paid_seq) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, 'paid', ?)",
        (metric, version, window, key_id, report_count, report_ids_digest, epsilon, delta,
         rho, time.time(), request_digest, paid_seq),
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
