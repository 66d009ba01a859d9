"""Validity proofs at ingest, in process: stored with each report, read back for the next hop.

The attacks (forged proofs, replays, stripped proofs) run against real processes in
tests/security/test_report_validity.py; here: what is stored, ``Store.window_reports``, the
refusal's wording, and the schema migration of a store made before proofs.
"""

from __future__ import annotations

import dataclasses
import secrets
import sqlite3
from pathlib import Path
from typing import Any

from aggregator_kit import assert_problem, make_report, paillier_kid, post_reports

from blindsum.server.aggregator.store import Store, WindowKey


def test_proven_reports_are_stored_with_their_proofs_and_read_back_for_the_window(
    client: Any, tmp_path: Path
) -> None:
    reports = [make_report("proven", v) for v in (1, 0, 1)]
    assert post_reports(client, reports).status_code == 200
    store = Store(tmp_path)
    try:
        key = WindowKey("proven", 1, reports[0].window, paillier_kid())
        assert store.window_reports(key) == reports  # ciphertexts and proofs, in order
    finally:
        store.close()


def test_unproven_metric_stores_no_proof(client: Any, tmp_path: Path) -> None:
    report = make_report("visits", 1)
    assert post_reports(client, [report]).status_code == 200
    store = Store(tmp_path)
    try:
        key = WindowKey("visits", 1, report.window, paillier_kid())
        assert [r.proof for r in store.window_reports(key)] == [None]
    finally:
        store.close()


def test_a_failing_proof_is_refused_naming_the_report_and_storing_nothing(
    client: Any, tmp_path: Path
) -> None:
    honest = make_report("proven", 1)
    moved = dataclasses.replace(make_report("proven", 1), report_id=secrets.token_bytes(16))
    response = post_reports(client, [honest, moved])
    assert_problem(response, 400, "invalid-proof")
    detail = response.get_json()["detail"]
    assert detail.startswith("batch.reports[1]") and "does not verify" in detail
    assert "nothing in this batch was stored" in detail
    with sqlite3.connect(tmp_path / "aggregator.db") as conn:
        assert conn.execute("SELECT count(*) FROM reports").fetchone() == (0,)


def test_a_store_made_before_proofs_gains_the_column_and_keeps_its_reports(
    tmp_path: Path
) -> None:
    conn = sqlite3.connect(tmp_path / "aggregator.db")
    conn.executescript(
        'CREATE TABLE reports (report_id BLOB PRIMARY KEY, metric TEXT NOT NULL, version '
        'INTEGER NOT NULL, key_id TEXT NOT NULL, "window" INTEGER NOT NULL, ciphertexts '
        "BLOB NOT NULL, received_at REAL NOT NULL); PRAGMA user_version = 3;")
    conn.execute("INSERT INTO reports VALUES (?, 'm', 1, 'k', 0, ?, 1.0)",
                 (bytes(16), bytes.fromhex("8141ff")))
    conn.commit()
    conn.close()
    store = Store(tmp_path)
    try:
        (old,) = store.window_reports(WindowKey("m", 1, 0, "k"))
        assert old.proof is None and old.ciphertexts == (b"\xff",)
        columns = [row[1] for row in store.connection().execute("PRAGMA table_info(reports)")]
        assert "proof" in columns
    finally:
        store.close()
