"""SQLite as a durable embedded store, configured once for both services.

WAL lets readers proceed while one writer commits; ``synchronous=FULL`` makes a commit
durable across power loss before we acknowledge anything; ``BEGIN IMMEDIATE`` takes the
write lock up front so check-then-write sequences (budget debits, window folds) are atomic
across gunicorn workers and threads.
"""

from __future__ import annotations

import errno
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from blindsum.shared.errors import StorageUnavailable

# SQLite result codes (primary, i.e. extended code & 0xFF) that say the store cannot be
# written now, whatever the request: the answer is 503, not 500 (sqlite3.h).
_UNAVAILABLE_CODES = {
    5: "the database is locked by another writer for too long",  # SQLITE_BUSY
    8: "the database is read-only",  # SQLITE_READONLY
    10: "a disk I/O error occurred",  # SQLITE_IOERR
    13: "the disk is full",  # SQLITE_FULL
    14: "the database file cannot be opened",  # SQLITE_CANTOPEN
}
_UNAVAILABLE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is full",
                       errno.EROFS: "the file system is read-only",
                       errno.EIO: "a disk I/O error occurred"}


def storage_failure(exc: BaseException) -> StorageUnavailable | None:
    """The 503 a storage fault deserves, or None if ``exc`` is not one."""
    reason = None
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        reason = None if code is None else _UNAVAILABLE_CODES.get(code & 0xFF)
    elif isinstance(exc, OSError):
        reason = _UNAVAILABLE_ERRNOS.get(exc.errno or 0)
    if reason is None:
        return None
    return StorageUnavailable(f"storage unavailable: {reason}; nothing was stored, retry later")


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
        # SQLite rolls back by itself on some errors (SQLITE_FULL, SQLITE_IOERR): a second
        # ROLLBACK would raise and hide the original error.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        # a COMMIT refused for want of space leaves the transaction open: end it, so the
        # connection serves the next request once space is back
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
