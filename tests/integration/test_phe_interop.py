"""An app that uses only phe, requests and cryptography can report (docs/INTEROP.md).

Nothing from blindsum is imported to build the reports: this is the recipe a phe user
follows, run against real services on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from phe_app import b64url_decode, phe_report, verified_manifest
from phe_app import post as post_reports
from phe_app import release_and_fetch as release

from blindsum.server.processes import Deployment, deployment

# phe alone, without a prover, cannot make validity proofs: these metrics opt out
# (docs/INTEROP.md step 4; test_phe_proven_interop.py runs step 5)
INTEROP_POLICIES = Path(__file__).parent / "interop_policies.toml"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("interop"), [INTEROP_POLICIES],
                    paillier_bits=2048) as running:
        yield running


def post(deployed: Deployment, reports: list[dict[str, Any]]) -> requests.Response:
    return post_reports(deployed.server.url, deployed.ingest_token, reports)


def release_and_fetch(deployed: Deployment, metric: str) -> dict[str, Any]:
    return release(deployed.server.url, deployed.admin_token, metric)


def test_phe_user_reports_a_sum_with_decimal_ciphertexts(deployed) -> None:
    manifest = verified_manifest(deployed.server.url, deployed.identity)
    values = [12.0, 250.0, 599.0, 1000.0, -5.0]  # the last two are clipped to 600 and 0
    reports = [phe_report(manifest, "seconds", v) for v in values]
    answer = post(deployed, reports)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"v": 1, "accepted": 5, "duplicates": 0}
    assert post(deployed, reports).json()["duplicates"] == 5  # a retry is counted once
    result = release_and_fetch(deployed, "seconds")
    assert result["report_count"] == 5
    low, high = result["ci"]
    truth = 12 + 250 + 599 + 600 + 0
    assert low - 3 * (high - low) <= truth <= high + 3 * (high - low)


def test_phe_user_reports_a_packed_histogram(deployed) -> None:
    manifest = verified_manifest(deployed.server.url, deployed.identity)
    values = [5, 50, 150, 700, 700, 4000, 9000]
    answer = post(deployed, [phe_report(manifest, "load_ms", v) for v in values])
    assert answer.status_code == 200, answer.text
    result = release_and_fetch(deployed, "load_ms")
    assert result["report_count"] == len(values)
    assert len(result["value"]) == 4  # buckets [0,100) [100,500) [500,1000) [1000,5000]


def test_phe_pair_with_a_nonzero_exponent_is_refused(deployed) -> None:
    manifest = verified_manifest(deployed.server.url, deployed.identity)
    report = phe_report(manifest, "opened", 1)
    report["ct"][0][1] = -3  # what phe.encrypt(0.125) would send
    answer = post(deployed, [report])
    assert answer.status_code == 400
    assert "exponent 0" in answer.json()["detail"]


def test_decimal_ciphertexts_are_stored_as_canonical_bytes(deployed) -> None:
    import sqlite3

    import cbor2

    manifest = verified_manifest(deployed.server.url, deployed.identity)
    report = phe_report(manifest, "replayed", 1)
    assert post(deployed, [report]).status_code == 200
    with sqlite3.connect(deployed.server_dir / "aggregator.db") as db:
        (stored,) = db.execute("SELECT ciphertexts FROM reports WHERE report_id = ?",
                               (b64url_decode(report["id"]),)).fetchone()
    (blob,) = cbor2.loads(stored)
    assert isinstance(blob, bytes) and int.from_bytes(blob, "big") == int(report["ct"][0][0])
