"""The SDK's side of ``contributions_per_window``: at most that many reports per window.

A metric's noise is calibrated to a sensitivity that assumes one install sends at most
``contributions_per_window`` reports to a window (see ``blindsum.shared.policy``). The server
cannot tell installs apart, so an honest app enforces the limit here, before encrypting.
The counts are kept in a state file by default (``default_state_path``: one per server and
key-holder identity under the user's state directory), so an app restart, or a second
``Client`` in the same or another process, does not reset them: each reservation reads and
writes the file in one ``BEGIN IMMEDIATE`` transaction.

A count is *reserved* before a report is built and *released* if the report is never sent
(encryption failed, or the report was dropped as unsendable), so a failure does not use up
the app's allowance.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

from blindsum.shared.errors import ContributionLimit
from blindsum.shared.policy import MetricPolicy

from .queue import connect, create_tables

STATE_DIR_ENV = "BLINDSUM_STATE_DIR"
log = logging.getLogger("blindsum.client")


def state_dir() -> Path:
    """``$BLINDSUM_STATE_DIR``, else ``$XDG_STATE_HOME/blindsum``, else
    ``~/.local/state/blindsum``."""
    base = os.environ.get(STATE_DIR_ENV) or (
        Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        / "blindsum")
    return Path(base)


def _deployment_name(server_url: str, keyholder_identity: str) -> str:
    return hashlib.sha256(f"{server_url}\n{keyholder_identity}".encode()).hexdigest()[:24]


def default_state_path(server_url: str, keyholder_identity: str) -> Path:
    """Where the SDK keeps contribution counts when the app does not say: one file per
    (server, key-holder identity) under ``state_dir()``, so two deployments never share
    counts, and every Client of one install does."""
    return state_dir() / f"contributions-{_deployment_name(server_url, keyholder_identity)}.sqlite3"


MAX_DEFAULT_QUEUES = 16


class QueueClaim:
    """The default queue file of one live Client, held with an exclusive ``flock``.

    A restarted app claims the file its previous run left (``queue-<name>.sqlite3``) and
    sends what is still in it. A second Client alive at the same time in the same install
    (another thread or process) must not drain the same file, so it claims the next free
    one (``queue-<name>-2.sqlite3``, ...), up to ``MAX_DEFAULT_QUEUES``; ``None`` if all are
    held (the Client then queues in memory and says so).
    """

    def __init__(self, path: Path, handle: int) -> None:
        self.path = path
        self._handle = handle

    @classmethod
    def acquire(cls, server_url: str, keyholder_identity: str) -> QueueClaim | None:
        """The first free default queue file, or None when every one is held or the state
        directory cannot be written (a sandboxed app: the Client then queues in memory)."""
        import fcntl

        base = state_dir()
        name = _deployment_name(server_url, keyholder_identity)
        try:
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            for index in range(1, MAX_DEFAULT_QUEUES + 1):
                suffix = "" if index == 1 else f"-{index}"
                path = base / f"queue-{name}{suffix}.sqlite3"
                handle = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(handle)
                    continue
                return cls(path, handle)
        except OSError as exc:
            log.warning("cannot use the SDK state directory %s (%s): queueing in memory",
                        base, exc.strerror or exc)
        return None

    def release(self) -> None:
        if self._handle >= 0:
            os.close(self._handle)  # closing the descriptor drops the lock
            self._handle = -1


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
            if self._db is not None:
                self._reserve_in_file(policy, window)
                return
            used = self._counts.get(key, 0)
            if used >= policy.contributions_per_window:
                raise ContributionLimit(
                    f"metric {policy.name!r} allows {policy.contributions_per_window} "
                    f"report(s) per window from one install; the window starting at {window} "
                    "is full, record again in the next window"
                )
            self._forget_before(policy.name, window - policy.window_seconds)
            self._store(key, used + 1)

    def _reserve_in_file(self, policy: MetricPolicy, window: int) -> None:
        """The same check against the file, so other Clients sharing it are counted."""
        assert self._db is not None
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT n FROM contributions WHERE metric = ? AND window_start = ?",
                             (policy.name, window)).fetchone()
            used = row[0] if row else 0
            if used >= policy.contributions_per_window:
                raise ContributionLimit(
                    f"metric {policy.name!r} allows {policy.contributions_per_window} "
                    f"report(s) per window from one install; the window starting at {window} "
                    "is full, record again in the next window")
            db.execute("DELETE FROM contributions WHERE metric = ? AND window_start < ?",
                       (policy.name, window - policy.window_seconds))
            db.execute("INSERT INTO contributions (metric, window_start, n) VALUES (?, ?, ?)"
                       " ON CONFLICT (metric, window_start) DO UPDATE SET n = excluded.n",
                       (policy.name, window, used + 1))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._counts[(policy.name, window)] = used + 1

    def release(self, metric: str, window: int) -> None:
        """Give back one reservation (its report will never reach the server)."""
        key = (metric, window)
        with self._lock:
            if self._db is not None:
                with self._db:
                    self._db.execute(
                        "UPDATE contributions SET n = n - 1 WHERE metric = ? "
                        "AND window_start = ? AND n > 0", key)
                row = self._db.execute("SELECT n FROM contributions WHERE metric = ? "
                                       "AND window_start = ?", key).fetchone()
                self._counts[key] = row[0] if row else 0
                return
            used = self._counts.get(key, 0)
            if used > 0:
                self._store(key, used - 1)

    def used(self, metric: str, window: int) -> int:
        """Reports counted for ``metric`` in the window starting at ``window``."""
        with self._lock:
            if self._db is not None:
                row = self._db.execute("SELECT n FROM contributions WHERE metric = ? "
                                       "AND window_start = ?", (metric, window)).fetchone()
                return row[0] if row else 0
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
