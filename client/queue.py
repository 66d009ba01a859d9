"""Where encrypted reports wait until the server acknowledges them.

A report leaves its queue only through ``remove``, which the client calls after the server's
receipt, so nothing unacknowledged is lost when a send fails. ``MemoryQueue`` lives as long as
the process; ``DiskQueue`` keeps reports in a SQLite file (WAL, ``synchronous=FULL``) so they
survive an app restart or crash. Reports hold only ciphertexts, never a plaintext value.

Both are safe to use from several threads. One file should back one Client at a time.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from blindsum.shared import codec
from blindsum.shared.codec import Report
from blindsum.shared.errors import InvalidConfig


class ReportQueue(Protocol):
    """First-in, first-out reports, removed only on acknowledgement."""

    def append(self, report: Report) -> None:
        """Add a report at the tail."""

    def peek(self, limit: int) -> list[Report]:
        """Up to ``limit`` reports from the head, oldest first, without removing them."""

    def remove(self, report_ids: Collection[bytes]) -> None:
        """Forget the reports with these ids (acknowledged or dropped); unknown ids are ignored."""

    def __len__(self) -> int: ...

    def close(self) -> None:
        """Release resources; a memory queue loses its reports here."""


class MemoryQueue:
    """An in-process queue: fast, and lost when the process ends."""

    def __init__(self) -> None:
        self._reports: OrderedDict[bytes, Report] = OrderedDict()
        self._lock = threading.Lock()

    def append(self, report: Report) -> None:
        with self._lock:
            self._reports[report.report_id] = report

    def peek(self, limit: int) -> list[Report]:
        with self._lock:
            out = []
            for report in self._reports.values():
                if len(out) >= limit:
                    break
                out.append(report)
            return out

    def remove(self, report_ids: Collection[bytes]) -> None:
        with self._lock:
            for report_id in report_ids:
                self._reports.pop(report_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._reports)

    def close(self) -> None:
        with self._lock:
            self._reports.clear()


class DiskQueue:
    """A queue in a SQLite file: a report appended is on disk when ``append`` returns.

    Raises:
        InvalidConfig: the file cannot be opened or is not a blindsum queue.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = connect(self.path)
        create_tables(self._db, self.path, (
            "CREATE TABLE IF NOT EXISTS reports ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " id BLOB NOT NULL UNIQUE,"
            " body BLOB NOT NULL)"
        ,))

    def append(self, report: Report) -> None:
        body = codec.dumps(report.to_wire(), codec.CBOR)
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO reports (id, body) VALUES (?, ?)",
                (report.report_id, body),
            )

    def peek(self, limit: int) -> list[Report]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM reports ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [Report.from_wire(codec.loads(body, codec.CBOR), "queued report")
                for (body,) in rows]

    def remove(self, report_ids: Collection[bytes]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM reports WHERE id = ?", [(i,) for i in report_ids])

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM reports").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating) a SQLite file for durable client state.

    Raises:
        InvalidConfig: the file cannot be opened, or is not a SQLite database.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a report is on disk before record() returns, even across a power loss.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
    except (OSError, sqlite3.Error) as exc:
        raise InvalidConfig(f"cannot open client state file {path}: {exc}") from None
    return db


def create_tables(db: sqlite3.Connection, path: Path, statements: tuple[str, ...]) -> None:
    """Run ``CREATE TABLE IF NOT EXISTS`` statements in one transaction.

    Raises:
        InvalidConfig: the file is not a SQLite database (or is not writable).
    """
    try:
        with db:
            for statement in statements:
                db.execute(statement)
    except sqlite3.Error as exc:
        db.close()
        raise InvalidConfig(f"client state file {path} is unusable: {exc}") from None
