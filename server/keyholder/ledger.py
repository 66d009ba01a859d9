"""The privacy budget ledger: what each metric has spent, and which windows were released.

Both reads and the debit happen inside the caller's ``BEGIN IMMEDIATE`` transaction, so two
racing release requests serialise and cannot overspend (basic composition: epsilons add).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from blindsum.shared.policy import MetricPolicy


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


def budget(conn: sqlite3.Connection, policy: MetricPolicy) -> BudgetState:
    """Spending of a metric across all its versions: a new version does not reset it."""
    count, eps, delta = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) "
        "FROM releases WHERE metric = ?",
        (policy.name,),
    ).fetchone()
    return BudgetState(policy.name, policy.privacy.budget_epsilon, eps, delta, count)


def released_document(
    conn: sqlite3.Connection, metric: str, version: int, window: int, key_id: str | None = None
) -> dict | None:
    """The stored result of a window under ``key_id`` (any key epoch if None)."""
    row = conn.execute(
        "SELECT document FROM releases WHERE metric = ? AND version = ? AND window = ? "
        "AND (? IS NULL OR kid = ?) ORDER BY released_at LIMIT 1",
        (metric, version, window, key_id, key_id),
    ).fetchone()
    return None if row is None else json.loads(row[0])


def record_release(
    conn: sqlite3.Connection,
    *,
    metric: str,
    version: int,
    window: int,
    key_id: str,
    report_count: int,
    report_ids_digest: str,
    epsilon: float,
    delta: float,
    document: dict,
) -> None:
    """Debit the ledger; the primary key makes a second release of a window impossible."""
    conn.execute(
        "INSERT INTO releases (metric, version, window, kid, report_count, report_ids_digest,"
        " epsilon, delta, document, released_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (metric, version, window, key_id, report_count, report_ids_digest, epsilon, delta,
         json.dumps(document), time.time()),
    )
