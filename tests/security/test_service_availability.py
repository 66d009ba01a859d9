"""A server starting on a new data directory must not die because its database is busy.

Found while building this suite (one fixture deployment in a dozen lost its server): the
server's gunicorn workers open ``aggregator.db`` at the same moment, and on a new database
each one runs ``PRAGMA journal_mode=WAL`` (server/sqlite.py ``connect``). SQLite does not
wait on its busy handler for a journal-mode change while another connection holds a write
lock: it fails at once with "database is locked". The worker failed to boot, and gunicorn
halted the whole server ("Worker failed to boot") right after its first health check.
``connect`` now retries the switch for as long as a write would wait.

The test stands in for the other worker deterministically: it holds a write lock on the
new database for two seconds while the server starts; the server must wait, then serve.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from security_kit import running, service_env

from blindsum.server.processes import Deployment, free_port


def test_server_start_waits_for_a_new_database_another_process_is_writing(
    deployed: Deployment, tmp_path: Path,
) -> None:
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    port = free_port()
    args = ["server", "serve", "--data-dir", str(server_dir), "--port", str(port),
            "--keyholder-url", deployed.keyholder.url,
            "--keyholder-identity", deployed.identity]
    with contextlib.closing(sqlite3.connect(server_dir / "aggregator.db",
                                            isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        with running("server-on-a-busy-database", args, port, tmp_path,
                     service_env(deployed, passphrase=False), wait=False) as server:
            time.sleep(2)
            writer.execute("COMMIT")
            server.wait_healthy(30)  # raises with the server's log if it died
            assert server.process.poll() is None
