"""The SDK's side of ``contributions_per_window``: at most that many reports per window.

A metric's noise is calibrated to a sensitivity that assumes one install sends at most
``contributions_per_window`` reports to a window (see ``blindsum.shared.policy``). The server
cannot tell installs apart, so an honest app enforces the limit here, before encrypting.
With a state file the counts survive a restart, like the reports they account for.

A count is *reserved* before a report is built and *released* if the report is never sent
(encryption failed, or the report was dropped as unsendable), so a failure does not use up
the app's allowance.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from blindsum.shared.errors import ContributionLimit
from blindsum.shared.policy import MetricPolicy

from .queue import connect, create_tables


class ContributionLimiter:
    """Counts reports per (metric, window start) and refuses one beyond the policy's limit.

    Counts of windows older than the one before the newest seen are forgotten: the server
    accepts reports only for a metric's current or previous window.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._db = connect(Path(path))
            create_tables(self._db, Path(path), (
                "CREATE TABLE IF NOT EXISTS contributions ("
                " metric TEXT NOT NULL, window_start INTEGER NOT NULL, n INTEGER NOT NULL,"
                " PRIMARY KEY (metric, window_start))",
            ))
            rows = self._db.execute("SELECT metric, window_start, n FROM contributions")
            self._counts = {(m, w): n for m, w, n in rows}

    def reserve(self, policy: MetricPolicy, window: int) -> None:
        """Count one more report of ``policy`` in ``window``.

        Raises:
            ContributionLimit: this install already reached the policy's limit there.
        """
        key = (policy.name, window)
        with self._lock:
            used = self._counts.get(key, 0)
            if used >= policy.contributions_per_window:
                raise ContributionLimit(
                    f"metric {policy.name!r} allows {policy.contributions_per_window} "
                    f"report(s) per window from one install; the window starting at {window} "
                    "is full, record again in the next window"
                )
            self._forget_before(policy.name, window - policy.window_seconds)
            self._store(key, used + 1)

    def release(self, metric: str, window: int) -> None:
        """Give back one reservation (its report will never reach the server)."""
        key = (metric, window)
        with self._lock:
            used = self._counts.get(key, 0)
            if used > 0:
                self._store(key, used - 1)

    def used(self, metric: str, window: int) -> int:
        """Reports counted for ``metric`` in the window starting at ``window``."""
        with self._lock:
            return self._counts.get((metric, window), 0)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _store(self, key: tuple[str, int], count: int) -> None:
        if count:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)
        if self._db is not None:
            with self._db:
                self._db.execute(
                    "INSERT INTO contributions (metric, window_start, n) VALUES (?, ?, ?)"
                    " ON CONFLICT (metric, window_start) DO UPDATE SET n = excluded.n",
                    (*key, count),
                )

    def _forget_before(self, metric: str, oldest_kept: int) -> None:
        stale = [k for k in self._counts if k[0] == metric and k[1] < oldest_kept]
        for key in stale:
            del self._counts[key]
        if stale and self._db is not None:
            with self._db:
                self._db.execute(
                    "DELETE FROM contributions WHERE metric = ? AND window_start < ?",
                    (metric, oldest_kept),
                )
