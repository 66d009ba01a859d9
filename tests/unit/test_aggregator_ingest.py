"""POST /v1/reports: accepted batches are durable and summed exactly; bad ones change nothing.

Reports are encrypted under the real key-holder's keys (served over HTTP by the kit), and
sums are checked by decrypting the server's stored aggregate with the key-holder's key.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

import cbor2
import pytest
from aggregator_kit import (
    ADMIN,
    HOUR,
    T0,
    RunningKeyholder,
    assert_problem,
    batch_body,
    ckks_kid,
    decrypt_window,
    make_app,
    make_report,
    paillier_kid,
    paillier_secret,
    policies,
    post_reports,
    snapshot,
    window_aggregate,
)
from flask import Flask

from blindsum.server.aggregator.app import close_app
from blindsum.server.aggregator.store import Store, WindowKey
from blindsum.shared import codec
from blindsum.shared.codec import Report

# -- accepted batches ----------------------------------------------------------------------


def test_batch_is_acknowledged_only_once_durable_on_disk(client: Any, tmp_path: Path) -> None:
    reports = [make_report("visits", 1) for _ in range(3)]
    response = post_reports(client, reports)
    assert response.status_code == 200
    assert response.get_json() == {"v": 1, "accepted": 3, "duplicates": 0}
    stored, windows = snapshot(tmp_path)  # a fresh connection reads what was committed
    assert {row[0] for row in stored} == {r.report_id for r in reports}
    assert len(windows) == 1
    reopened = Store(tmp_path)  # as after a restart
    row = reopened.window(WindowKey("visits", 1, reports[0].window, paillier_kid()))
    assert row is not None and row.report_count == 3 and row.state == "open"
    reopened.close()


def test_aggregate_decrypts_to_the_exact_sum_of_accepted_reports(client: Any,
                                                                  tmp_path: Path) -> None:
    latencies = [0, 1, 17, 999, 1000, 250]
    assert post_reports(client, [make_report("latency", v) for v in latencies]).status_code == 200
    assert post_reports(client, [make_report("latency", 5)]).status_code == 200  # folded in
    assert decrypt_window(tmp_path, "latency") == [sum(latencies) + 5]
    _, count, state = window_aggregate(tmp_path, "latency")
    assert (count, state) == (7, "open")


def test_histogram_reports_sum_per_bucket(client: Any, tmp_path: Path) -> None:
    values = [0.5, 1.5, 1.2, 3.9, 3.0, 2.0]
    assert post_reports(client, [make_report("pages", v) for v in values]).status_code == 200
    assert decrypt_window(tmp_path, "pages") == [1, 2, 1, 2]


def test_ckks_vector_reports_sum_exactly(client: Any, tmp_path: Path) -> None:
    vectors = [[float(i + j) for j in range(8)] for i in range(3)]
    assert post_reports(client, [make_report("embed", v) for v in vectors]).status_code == 200
    assert decrypt_window(tmp_path, "embed") == [3 * j + 3 for j in range(8)]


def test_retried_batch_is_counted_once(client: Any, tmp_path: Path) -> None:
    reports = [make_report("latency", 10), make_report("latency", 20)]
    assert post_reports(client, reports).get_json()["accepted"] == 2
    before = snapshot(tmp_path)
    retry = post_reports(client, reports)
    assert retry.status_code == 200
    assert retry.get_json() == {"v": 1, "accepted": 0, "duplicates": 2}
    assert snapshot(tmp_path) == before
    assert decrypt_window(tmp_path, "latency") == [30]


def test_partly_new_batch_adds_only_the_new_reports(client: Any, tmp_path: Path) -> None:
    first = make_report("latency", 10)
    assert post_reports(client, [first]).status_code == 200
    response = post_reports(client, [first, make_report("latency", 5), first])
    assert response.get_json() == {"v": 1, "accepted": 1, "duplicates": 2}
    assert decrypt_window(tmp_path, "latency") == [15]
    assert window_aggregate(tmp_path, "latency")[1] == 2


def test_duplicate_ids_within_one_batch_count_once(client: Any, tmp_path: Path) -> None:
    report = make_report("visits", 1)
    response = post_reports(client, [report, report, report])
    assert response.get_json() == {"v": 1, "accepted": 1, "duplicates": 2}
    assert window_aggregate(tmp_path, "visits")[1] == 1


def test_retry_after_the_window_closed_is_still_told_its_reports_are_safe(
    client: Any, keyholder: RunningKeyholder
) -> None:
    report = make_report("visits", 1)
    assert post_reports(client, [report]).status_code == 200
    keyholder.clock.now += 3 * HOUR
    assert post_reports(client, [report]).get_json() == {"v": 1, "accepted": 0, "duplicates": 1}


def test_cbor_batch_and_cbor_answer(client: Any, tmp_path: Path) -> None:
    body = batch_body([make_report("visits", 1)], codec.CBOR)
    response = client.post("/v1/reports", data=body, headers={
        "Authorization": "Bearer ingest-token-0123456789", "Content-Type": codec.CBOR,
        "Accept": codec.CBOR})
    assert response.status_code == 200
    assert response.content_type == codec.CBOR
    assert cbor2.loads(response.get_data()) == {"v": 1, "accepted": 1, "duplicates": 0}


def test_previous_window_accepts_late_reports_until_late_seconds_after_its_end(
    client: Any, keyholder: RunningKeyholder
) -> None:
    previous = T0 - T0 % HOUR - HOUR
    keyholder.clock.now = previous + HOUR + 599  # visits: late_seconds = 600
    assert post_reports(client, [make_report("visits", 1, window=previous)]).status_code == 200
    keyholder.clock.now = previous + HOUR + 600
    assert_problem(post_reports(client, [make_report("visits", 1, window=previous)]), 400,
             "invalid-input", "batch.reports[0]", "has closed")


def test_report_for_a_newer_metric_version_triggers_a_manifest_refresh(
    client: Any, keyholder: RunningKeyholder, tmp_path: Path
) -> None:
    keyholder.add_policies(policies(version=2))  # the key-holder signs a newer manifest
    response = post_reports(client, [make_report("visits", 1, version=2)])
    assert response.status_code == 200, response.get_data(as_text=True)
    assert snapshot(tmp_path)[1][0][1] == 2  # the window of version 2


# -- refused batches: the right problem, naming the report, and nothing changed -------------


def _garbage_ckks(kind: str) -> bytes:
    real = make_report("embed", [1] * 8).ciphertexts[0]
    if kind == "random bytes":
        return secrets.token_bytes(len(real))
    if kind == "truncated":
        return real[:-100]
    # coefficients of all ones bits are not reduced modulo q: SEAL must refuse them
    return real[:400] + b"\xff" * 4096 + real[4496:]


def _with(report: Report, **changes: Any) -> Report:
    fields = {"report_id": report.report_id, "metric": report.metric,
              "version": report.version, "key_id": report.key_id, "window": report.window,
              "ciphertexts": report.ciphertexts}
    fields.update(changes)
    return Report(**fields)


def _n() -> int:
    return int(paillier_secret().public.n)


BAD_REPORTS = {
    "out of range": (lambda r: _with(r, ciphertexts=((_n() ** 2 + 1).to_bytes(512, "big"),)),
                     "invalid-ciphertext", "not below n^2"),
    "zero": (lambda r: _with(r, ciphertexts=(bytes(512),)), "invalid-ciphertext", "zero"),
    "shares a factor with n": (lambda r: _with(r, ciphertexts=(_n().to_bytes(512, "big"),)),
                               "invalid-ciphertext", "factor"),
    "wrong length": (lambda r: _with(r, ciphertexts=(r.ciphertexts[0][1:],)),
                     "invalid-ciphertext", "511 bytes"),
    "wrong count": (lambda r: _with(r, ciphertexts=r.ciphertexts * 2),
                    "invalid-ciphertext", "expected 1 ciphertext"),
    "unknown key id": (lambda r: _with(r, key_id="pai-gone"), "invalid-ciphertext",
                       "'pai-gone' is unknown"),
    "key of the other scheme": (lambda r: _with(r, key_id=ckks_kid()), "invalid-ciphertext",
                                "uses paillier"),
    "unknown metric": (lambda r: _with(r, metric="nosuch"), "invalid-input",
                       "'nosuch' is not in the manifest"),
    "window far in the past": (lambda r: _with(r, window=r.window - 24 * HOUR),
                               "invalid-input", "has closed"),
    "window far in the future": (lambda r: _with(r, window=r.window + 24 * HOUR),
                                 "invalid-input", "has not started yet"),
    "misaligned window": (lambda r: _with(r, window=r.window + 7), "invalid-input",
                          "not a window start"),
}


@pytest.mark.parametrize("case", sorted(BAD_REPORTS))
def test_invalid_report_refuses_the_whole_batch_and_changes_nothing(
    case: str, client: Any, tmp_path: Path
) -> None:
    assert post_reports(client, [make_report("latency", 1)]).status_code == 200
    before = snapshot(tmp_path)
    mutate, code, fragment = BAD_REPORTS[case]
    batch = [make_report("latency", 2), mutate(make_report("latency", 3))]
    assert_problem(post_reports(client, batch), 400, code, "batch.reports[1]", fragment)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "unreduced coefficients"])
def test_garbage_ckks_ciphertext_is_refused(client: Any, tmp_path: Path, kind: str) -> None:
    before = snapshot(tmp_path)
    bad = _with(make_report("embed", [1] * 8), ciphertexts=(_garbage_ckks(kind),))
    assert_problem(post_reports(client, [make_report("embed", [2] * 8), bad]), 400,
             "invalid-ciphertext", "batch.reports[1]", "ciphertext 0")
    assert snapshot(tmp_path) == before


def test_report_of_an_older_metric_version_is_told_to_refresh_its_manifest(
    tmp_path: Path, keyholder: RunningKeyholder
) -> None:
    keyholder.add_policies(policies(version=2))
    app = make_app(tmp_path, keyholder)
    try:
        client = app.test_client()
        before = snapshot(tmp_path)
        batch = [make_report("visits", 1, version=2), make_report("visits", 1, version=1)]
        assert_problem(post_reports(client, batch), 400, "invalid-input", "batch.reports[1]",
                 "at version 2", "refresh the manifest")
        assert snapshot(tmp_path) == before
    finally:
        close_app(app)


@pytest.mark.parametrize("body, media, fragment", [
    (b"{not json", codec.JSON, "not valid JSON"),
    (b"\xff\x00garbage", codec.CBOR, "not valid CBOR"),
    (b"[]", codec.JSON, "batch must be an object"),
    (b'{"v": 1, "reports": []}', codec.JSON, "batch.reports must be a list of 1..5000"),
    (b'{"v": 1, "reports": [], "extra": 1}', codec.JSON, "unknown fields ['extra']"),
    (b'{"v": 2, "reports": [{}]}', codec.JSON, "unsupported version"),
])
def test_malformed_body_is_invalid_input(client: Any, tmp_path: Path, body: bytes, media: str,
                                         fragment: str) -> None:
    before = snapshot(tmp_path)
    assert_problem(post_reports(client, [], media=media, body=body), 400, "invalid-input", fragment)
    assert snapshot(tmp_path) == before


def test_unknown_field_in_a_report_is_named(client: Any, tmp_path: Path) -> None:
    wire = codec.ReportBatch((make_report("visits", 1),)).to_wire()
    wire["reports"][0]["value"] = 1
    assert_problem(post_reports(client, [], body=codec.dumps(wire)), 400, "invalid-input",
             "batch.reports[0] has unknown fields ['value']")
    assert snapshot(tmp_path) == ([], [])


def test_report_id_of_the_wrong_size_is_named(client: Any) -> None:
    wire = codec.ReportBatch((make_report("visits", 1),)).to_wire()
    wire["reports"][0]["id"] = b"short"
    assert_problem(post_reports(client, [], body=codec.dumps(wire)), 400, "invalid-input",
             "batch.reports[0].id must be 16 bytes")


def test_wrong_content_type_is_415(client: Any, tmp_path: Path) -> None:
    response = client.post("/v1/reports", data=batch_body([make_report("visits", 1)]),
                           headers={"Authorization": "Bearer ingest-token-0123456789",
                                    "Content-Type": "text/plain"})
    assert_problem(response, 415, "unsupported-media-type", "text/plain")
    assert snapshot(tmp_path) == ([], [])


@pytest.mark.parametrize("headers, status, code", [
    ({}, 401, "unauthorized"),
    ({"Authorization": "Basic abc"}, 401, "unauthorized"),
    ({"Authorization": "Bearer nope"}, 401, "unauthorized"),
    ({"Authorization": f"Bearer {ADMIN}"}, 403, "forbidden"),
])
def test_ingest_needs_an_ingest_token(client: Any, tmp_path: Path, headers: dict[str, str],
                                      status: int, code: str) -> None:
    response = client.post("/v1/reports", data=batch_body([make_report("visits", 1)]),
                           headers={"Content-Type": codec.JSON, **headers})
    assert_problem(response, status, code)
    assert snapshot(tmp_path) == ([], [])


def test_body_over_the_size_limit_is_413(tmp_path: Path, keyholder: RunningKeyholder) -> None:
    app = make_app(tmp_path, keyholder, max_body_bytes=4096)
    try:
        response = post_reports(app.test_client(), [make_report("latency", 1)] * 10)
        assert_problem(response, 413, "payload-too-large", "4096")
        assert snapshot(tmp_path) == ([], [])
    finally:
        close_app(app)


def test_batch_that_would_exceed_max_contributors_is_refused_loudly(
    client: Any, tmp_path: Path
) -> None:
    assert post_reports(client, [make_report("visits", 1) for _ in range(3)]).status_code == 200
    before = snapshot(tmp_path)
    assert_problem(post_reports(client, [make_report("visits", 1) for _ in range(3)]), 409,
             "conflict", "holds 3 reports", "max_contributors = 5", "packing headroom")
    assert snapshot(tmp_path) == before
    assert post_reports(client, [make_report("visits", 1) for _ in range(2)]).status_code == 200
    assert decrypt_window(tmp_path, "visits") == [5]


def test_first_batch_larger_than_max_contributors_is_refused(client: Any,
                                                              tmp_path: Path) -> None:
    assert_problem(post_reports(client, [make_report("visits", 1) for _ in range(6)]), 409,
             "conflict", "max_contributors = 5")
    assert snapshot(tmp_path) == ([], [])


def test_sealed_window_takes_no_more_reports(app: Flask, client: Any, tmp_path: Path) -> None:
    first = make_report("latency", 1)
    assert post_reports(client, [first]).status_code == 200
    store: Store = app.extensions["blindsum.aggregator"].store
    with store.transaction() as tx:
        assert tx.claim_window(WindowKey("latency", 1, first.window, paillier_kid()), T0, 60)
    before = snapshot(tmp_path)
    assert_problem(post_reports(client, [make_report("latency", 2)]), 409, "conflict",
             "batch.reports[0]", "is sealed")
    assert snapshot(tmp_path) == before


def test_concurrent_batches_into_one_window_are_all_counted_and_summed(
    app: Flask, tmp_path: Path
) -> None:
    batches = [[make_report("latency", 10 * t + i) for i in range(10)] for t in range(8)]
    statuses: list[int] = []

    def send(batch: list[Report]) -> None:
        statuses.append(post_reports(app.test_client(), batch).status_code)

    threads = [threading.Thread(target=send, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    _, count, _ = window_aggregate(tmp_path, "latency")
    assert count == 80
    assert decrypt_window(tmp_path, "latency") == [sum(10 * t + i for t in range(8)
                                                       for i in range(10))]
