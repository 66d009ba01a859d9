"""A policy's ``proof_form = "compact"`` end to end: the SDK sends compact proofs, the server
verifies and stores them, the key-holder (two-party threshold key) verifies them again when
the window is forwarded, and the release publishes the window's count."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from phe_app import release_and_fetch

from blindsum.client import Client
from blindsum.server.processes import Deployment, deployment

POLICIES = Path(__file__).parent / "compact_policies.toml"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("compact"), [POLICIES], paillier_bits=2048,
                    threshold=True) as running:
        yield running


def test_sdk_sends_compact_proofs_that_both_parties_verify(deployed, tmp_path) -> None:
    values = {"taps": [1, 0, 1, 1], "screen": [0.5, 3.2, 3.9, 6.5]}
    for install in range(4):
        with Client(deployed.server.url, deployed.ingest_token, deployed.identity,
                    limits_path=tmp_path / f"install-{install}.sqlite3") as client:
            for metric, series in values.items():
                client.record(metric, series[install])
    with sqlite3.connect(deployed.server_dir / "aggregator.db") as db:
        stored = [json.loads(row[0]) for row in db.execute("SELECT proof FROM reports")]
    assert len(stored) == 8
    assert all(proof["form"] == "compact" and "u" not in proof["clauses"][0]
               for proof in stored)
    taps = release_and_fetch(deployed.server.url, deployed.admin_token, "taps")
    assert taps["report_count"] == 4
    screen = release_and_fetch(deployed.server.url, deployed.admin_token, "screen")
    assert screen["report_count"] == 4 and len(screen["value"]) == 7
