"""A restarted server releases a due window on schedule with no traffic at all (issue: the
release scheduler started on a worker's first request, so a due window waited for a GET).

The restarted server is never sent a request: the test watches its database (read-only)
and the key-holder's budget ledger for the release.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from fault_kit import POLICIES

from blindsum.client import Client
from blindsum.server.processes import deployment, start_service

DEADLINE_SECONDS = 60.0  # window 4 s + grace 2 s + scheduler tick 5 s, with ample slack
WINDOW_SECONDS = 4  # metric "quick" (fault_policies.toml)


def window_states(server_dir: Path, metric: str) -> list[str]:
    uri = f"file:{server_dir / 'aggregator.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
        rows = db.execute("SELECT state FROM windows WHERE metric = ?", (metric,)).fetchall()
    return [str(row[0]) for row in rows]


def budget_releases(keyholder_url: str, token: str, metric: str) -> int:
    answer: Any = requests.get(f"{keyholder_url}/v1/budget", timeout=10,
                               headers={"Authorization": f"Bearer {token}"}).json()
    return sum(m["releases"] for m in answer["metrics"] if m["metric"] == metric)


def test_restarted_server_releases_a_due_window_without_any_request(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("restart")
    # The first server never releases; the restarted one does, on its own schedule.
    with deployment(root, POLICIES, auto_release=False) as dep:
        with Client(dep.server.url, dep.ingest_token, dep.identity,
                    enforce_contribution_limit=False) as sdk:
            while time.time() % WINDOW_SECONDS > 1:  # all three early in one window
                time.sleep(0.05)
            at = time.time()
            for _ in range(3):
                sdk.record("quick", 1, at=at)
            assert sdk.flush().accepted == 3
        dep.server.stop()
        assert window_states(dep.server_dir, "quick") == ["open"]
        port = int(dep.server.url.rsplit(":", 1)[1])
        args = ["server", "serve", "--data-dir", str(dep.server_dir), "--port", str(port),
                "--keyholder-url", dep.keyholder.url, "--keyholder-identity", dep.identity]
        env = {k: v for k, v in dep.env.items() if "PASSPHRASE" not in k}
        restarted = start_service("server-restarted", args, port, root,
                                  {**env, "BLINDSUM_AUTO_RELEASE": "1"}, wait=False)
        try:
            deadline = time.monotonic() + DEADLINE_SECONDS
            states = window_states(dep.server_dir, "quick")
            while states != ["released"] and time.monotonic() < deadline:
                assert restarted.process.poll() is None, restarted.log_tail()
                time.sleep(0.5)
                states = window_states(dep.server_dir, "quick")
            assert states == ["released"], restarted.log_tail()
            assert budget_releases(dep.keyholder.url, dep.release_token, "quick") == 1
            log = restarted.log_path.read_text()
            assert '"route": ' not in log  # the server was indeed sent no request
        finally:
            restarted.stop()
