"""kill -9 of the server while several SDK clients ingest: nothing acknowledged is lost,
nothing is counted twice.

Each client keeps its reports in a disk queue and removes one only when the server has
acknowledged it, so once every client has drained its queue after the restart, each report
recorded is stored exactly once, and each window's report count (what the key-holder is told
it releases over) equals the reports stored for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fault_kit import POLICIES

from blindsum.client import BlindsumError, Client
from blindsum.server.processes import Deployment, deployment, start_service

CLIENTS = 3
RECORDS = 40
FLUSH_EVERY = 5
DEADLINE_SECONDS = 120.0


def stored(server_dir: Path) -> tuple[int, int]:
    """(report rows, sum of the windows' report counts) for metric ``taps``."""
    uri = f"file:{server_dir / 'aggregator.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
        (rows,) = db.execute("SELECT count(*) FROM reports WHERE metric = 'taps'").fetchone()
        (counted,) = db.execute("SELECT coalesce(sum(report_count), 0) FROM windows "
                                "WHERE metric = 'taps'").fetchone()
    return int(rows), int(counted)


def app_install(dep: Deployment, queue: Path, done: threading.Event, acked: list[int]) -> None:
    with Client(dep.server.url, dep.ingest_token, dep.identity, queue_path=queue,
                enforce_contribution_limit=False, max_retries=1, backoff=0.05,
                connect_timeout=1.0, timeout=5.0, batch_size=1000) as sdk:
        for index in range(1, RECORDS + 1):
            sdk.record("taps", 1)
            if index % FLUSH_EVERY == 0:
                with contextlib.suppress(BlindsumError):  # the server may be down: later
                    acked.append(sdk.flush().accepted)
        sdk.close()  # the disk queue keeps what is unsent
    done.set()


def drain(dep: Deployment, queue: Path) -> int:
    with Client(dep.server.url, dep.ingest_token, dep.identity, queue_path=queue,
                enforce_contribution_limit=False) as sdk:
        sdk.flush()
        return sdk.pending


def test_kill_9_of_the_server_during_ingest_loses_nothing_and_counts_nothing_twice(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("kill")
    with deployment(root, POLICIES) as dep:
        queues = [root / f"install-{n}" / "queue.db" for n in range(CLIENTS)]
        finished = [threading.Event() for _ in queues]
        acked: list[int] = []  # the reports each successful flush was told are stored
        threads = [threading.Thread(target=app_install, args=(dep, queue, done, acked),
                                    daemon=True)
                   for queue, done in zip(queues, finished, strict=True)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while stored(dep.server_dir)[0] < 2 * FLUSH_EVERY and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(dep.server.process.pid, signal.SIGKILL)  # master and workers, mid-ingest
        dep.server.process.wait(30)
        killed_at = stored(dep.server_dir)[0]
        acked_at_kill = sum(acked)  # no server, so no acknowledgement after this point
        port = int(dep.server.url.rsplit(":", 1)[1])
        args = ["server", "serve", "--data-dir", str(dep.server_dir), "--port", str(port),
                "--keyholder-url", dep.keyholder.url, "--keyholder-identity", dep.identity]
        dep.server = start_service("server-after-kill", args, port, root,
                                   {k: v for k, v in dep.env.items() if "PASSPHRASE" not in k})
        for thread in threads:
            thread.join(max(1.0, deadline - time.monotonic()))
        assert all(done.is_set() for done in finished), "an install did not finish"
        assert [drain(dep, queue) for queue in queues] == [0] * CLIENTS
        rows, counted = stored(dep.server_dir)
    print(f"kill -9 of the server: acknowledged before the kill {acked_at_kill}, stored at "
          f"the kill {killed_at}; after the restart {rows} stored and counted {counted} of "
          f"{CLIENTS * RECORDS} recorded")
    assert 0 < killed_at < CLIENTS * RECORDS  # the kill did land mid-ingest
    assert acked_at_kill <= killed_at  # everything acknowledged was already durable
    assert rows == CLIENTS * RECORDS and counted == rows
