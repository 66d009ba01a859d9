"""Consistent copies of a service's data directory while it serves (SQLite online backup).

``sqlite3.Connection.backup`` copies the database page by page under SQLite's own locking:
the copy is one committed state even while workers write (WAL readers never block them).
The key-holder's key files (``keys/``) are copied after its database, so every key the copied
database names is in the copy (a key's file is written before its row is committed).

A backup directory is itself a data directory: restore by stopping the service and serving
the copy (or copying it into place). What a restore may lose is in docs/OPERATIONS.md.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from blindsum.server.datadir import private_files
from blindsum.shared.errors import InvalidConfig

PAGES_PER_STEP = 1024  # ~4 MiB per step: writers get the lock back between steps


@dataclass(frozen=True)
class BackupResult:
    destination: Path
    database_bytes: int
    files: int


def backup_data_dir(source: Path, destination: Path, db_name: str,
                    extra_dirs: tuple[str, ...] = ()) -> BackupResult:
    """Copy ``source/db_name`` (online) and then ``extra_dirs`` into a new ``destination``.

    Raises:
        InvalidConfig: the source is not a data directory, the destination exists and is
            not empty, or the copy fails its integrity check.
    """
    database = source / db_name
    if not database.is_file():
        raise InvalidConfig(f"{source} is not a data directory (no {db_name})")
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise InvalidConfig(f"backup destination {destination} exists and is not empty")
    with private_files():
        destination.mkdir(parents=True, exist_ok=True)
        copy = destination / db_name
        _copy_database(database, copy)
        files = 1
        for name in extra_dirs:
            if (source / name).is_dir():
                shutil.copytree(source / name, destination / name)
                files += sum(1 for path in (destination / name).rglob("*") if path.is_file())
    return BackupResult(destination, copy.stat().st_size, files)


def _copy_database(database: Path, copy: Path) -> None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True,
                                                timeout=30)) as src, \
                contextlib.closing(sqlite3.connect(copy)) as dst:
            src.backup(dst, pages=PAGES_PER_STEP)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.Error as exc:
        raise InvalidConfig(f"backing up {database} failed: {exc}") from None
    if verdict != "ok":
        raise InvalidConfig(f"the copy of {database} fails its integrity check: {verdict}")
