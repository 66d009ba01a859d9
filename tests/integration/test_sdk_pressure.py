"""The SDK under pressure, against the real services: offline at start, rate-limited.

- An app that starts while the server is down records at once with the manifest it verified
  earlier (kept with its disk queue), and delivers once the server is back. A tampered cache
  is refused, not used.
- A 429 with a Retry-After longer than the SDK's own retry cap keeps the reports queued:
  ``flush`` returns and says how long to wait (``deferred_for``) instead of raising.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blindsum.client import Client, ManifestError
from blindsum.server.processes import Deployment, deployment, start_service

POLICIES = [Path(__file__).parent.parent / "policies" / "paillier.toml"]
OFFLINE_RECORD_SECONDS = 5.0  # a deadline, not a benchmark: the old SDK blocked ~14 s


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[Deployment]:
    with deployment(tmp_path, POLICIES) as running:
        yield running


def _client(dep: Deployment, queue: Path, **options: object) -> Client:
    return Client(dep.server.url, dep.ingest_token, dep.identity, queue_path=queue,
                  enforce_contribution_limit=False, **options)  # type: ignore[arg-type]


def _restart_server(dep: Deployment, root: Path) -> None:
    port = int(dep.server.url.rsplit(":", 1)[1])
    args = ["server", "serve", "--data-dir", str(dep.server_dir), "--port", str(port),
            "--keyholder-url", dep.keyholder.url, "--keyholder-identity", dep.identity]
    dep.server = start_service("server-again", args, port, root,
                               {k: v for k, v in dep.env.items() if "PASSPHRASE" not in k})


def test_app_that_starts_offline_records_with_the_cached_manifest_and_sends_later(
    deployed: Deployment, tmp_path: Path,
) -> None:
    queue = tmp_path / "app" / "queue.db"
    with _client(deployed, queue) as online:
        online.record("opened", 1)
        assert online.flush().accepted == 1
    deployed.server.stop()

    offline = _client(deployed, queue, max_retries=0, connect_timeout=1.0)
    try:
        started = time.monotonic()
        offline.record("opened", 1)
        offline.record("seconds", 30)
        assert time.monotonic() - started < OFFLINE_RECORD_SECONDS
        assert offline.pending == 2
        _restart_server(deployed, tmp_path)
        assert offline.flush().accepted == 2 and offline.pending == 0
    finally:
        offline.close()


def test_a_tampered_cached_manifest_is_refused_offline(
    deployed: Deployment, tmp_path: Path,
) -> None:
    queue = tmp_path / "app" / "queue.db"
    with _client(deployed, queue) as warm:
        assert warm.manifest().serial >= 1
    deployed.server.stop()
    with contextlib.closing(sqlite3.connect(queue)) as db, db:
        (text,) = db.execute("SELECT document FROM manifest_cache").fetchone()
        document = json.loads(text)
        forged = document["payload"].replace('"min_contributors":3', '"min_contributors":1')
        assert forged != document["payload"]
        document["payload"] = forged
        db.execute("UPDATE manifest_cache SET document = ?", (json.dumps(document),))
    offline = _client(deployed, queue, max_retries=0, connect_timeout=1.0)
    try:
        with pytest.raises(ManifestError):
            offline.record("opened", 1)
        assert offline.pending == 0
    finally:
        offline.close()


def test_rate_limit_longer_than_the_retry_cap_keeps_reports_queued(tmp_path: Path) -> None:
    limits = {"BLINDSUM_RATE_LIMIT_INGEST": "1/hour"}
    with deployment(tmp_path, POLICIES, server_env=limits) as dep, \
            _client(dep, tmp_path / "queue.db", batch_size=1000) as sdk:
        sdk.record("opened", 1)
        assert sdk.flush().accepted == 1  # the hour's one request
        for _ in range(3):
            sdk.record("opened", 1)
        receipt = sdk.flush()  # 429 with a Retry-After of minutes, beyond the 30 s cap
        assert (receipt.accepted, sdk.pending) == (0, 3)
        assert 30 < sdk.deferred_for <= 3601
        assert sdk.flush().accepted == 0 and sdk.pending == 3  # still waiting, not sending
