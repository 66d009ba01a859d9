"""The last verified manifest (and CKKS contexts), kept with the disk queue.

An app that starts offline can then record at once: the cached manifest is verified again
against the pinned identity before use, exactly as a fetched one, so the file grants nothing
a forger could use; its serial also becomes the floor below which no later manifest is
accepted (no rollback across restarts). A cached manifest is used offline only for
``max_age`` seconds after it was last verified from the server: an app that has been
offline for weeks should not keep encrypting under keys that may have been retired.

CKKS contexts are kept by key id and checked against the digest the manifest signs
(``Keyring``), so a corrupted context is refused, not used.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from blindsum.client.queue import connect, create_tables

DEFAULT_MAX_AGE = 7 * 86_400.0


class ManifestCache:
    """Manifest document and context bytes in the client's state file."""

    def __init__(self, path: Path, max_age: float = DEFAULT_MAX_AGE) -> None:
        self.path = Path(path)
        self.max_age = max_age
        self._lock = threading.Lock()
        self._db = connect(self.path)
        create_tables(self._db, self.path, (
            "CREATE TABLE IF NOT EXISTS manifest_cache ("
            " id INTEGER PRIMARY KEY CHECK (id = 1), document TEXT NOT NULL,"
            " serial INTEGER NOT NULL, verified_at REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS context_cache ("
            " key_id TEXT PRIMARY KEY, context BLOB NOT NULL)",
        ))

    def document(self, now: float | None = None) -> dict[str, Any] | None:
        """The cached manifest document if verified within ``max_age`` (unverified here)."""
        with self._lock:
            row = self._db.execute(
                "SELECT document, verified_at FROM manifest_cache WHERE id = 1").fetchone()
        if row is None or (time.time() if now is None else now) - row[1] > self.max_age:
            return None
        try:
            document = json.loads(row[0])
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    def serial(self) -> int | None:
        """The highest serial ever verified with this file, whatever its age."""
        with self._lock:
            row = self._db.execute("SELECT serial FROM manifest_cache WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def store(self, document: dict[str, Any], serial: int) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO manifest_cache (id, document, serial, verified_at) "
                "VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET document = excluded.document,"
                " serial = excluded.serial, verified_at = excluded.verified_at"
                " WHERE excluded.serial >= manifest_cache.serial",
                (json.dumps(document, sort_keys=True), serial, time.time()))

    def context(self, key_id: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT context FROM context_cache WHERE key_id = ?",
                                   (key_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def store_context(self, key_id: str, context: bytes) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO context_cache (key_id, context) "
                             "VALUES (?, ?)", (key_id, sqlite3.Binary(context)))

    def close(self) -> None:
        with self._lock:
            self._db.close()
