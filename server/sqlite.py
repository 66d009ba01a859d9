"""SQLite as a durable embedded store, configured once for both services.

WAL lets readers proceed while one writer commits; ``synchronous=FULL`` makes a commit
durable across power loss before we acknowledge anything; ``BEGIN IMMEDIATE`` takes the
write lock up front so check-then-write sequences (budget debits, window folds) are atomic
across gunicorn workers and threads.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def connect(path: Path, busy_seconds: float = 30.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_seconds, isolation_level=None,
                           check_same_thread=False)
    # Switching a new database to WAL needs an exclusive lock and SQLite does not apply the
    # busy timeout to it: another process creating the same file at once gets "database is
    # locked" immediately, so retry for as long as a write would wait.
    deadline = time.monotonic() + busy_seconds
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.02)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
