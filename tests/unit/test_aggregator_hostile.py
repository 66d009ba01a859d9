"""Hostile input: every refusal is a 4xx problem document and changes nothing.

Sizes are checked over a real socket too (werkzeug's server, like gunicorn, terminates the
input stream, which is what lets the limit apply to chunked bodies without a length).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from aggregator_kit import (
    ADMIN,
    INGEST,
    RunningKeyholder,
    assert_problem,
    batch_body,
    decrypt_window,
    make_app,
    make_report,
    post_reports,
    snapshot,
)
from flask import Flask
from werkzeug.serving import make_server

from blindsum.server.aggregator.app import close_app
from blindsum.server.bodies import BATCH_ITEMS
from blindsum.shared import codec
from blindsum.shared.codec import Report

SMALL = 64 * 1024


@pytest.fixture
def app(tmp_path: Path, keyholder: RunningKeyholder) -> Iterator[Flask]:
    app = make_app(tmp_path, keyholder, max_body_bytes=SMALL)
    yield app
    close_app(app)


def _with(report: Report, **changes: Any) -> Report:
    return Report(**{**report.__dict__, **changes})


# -- duplicates within one batch -----------------------------------------------------------


def test_tampered_duplicate_within_one_batch_refuses_the_batch(client: Any,
                                                               tmp_path: Path) -> None:
    first = make_report("latency", 10)
    forged = _with(make_report("latency", 1000), report_id=first.report_id)
    assert_problem(post_reports(client, [first, make_report("latency", 2), forged]), 400,
             "invalid-input", "batch.reports[2] repeats the id of batch.reports[0]")
    assert snapshot(tmp_path) == ([], [])


def test_invalid_duplicate_within_one_batch_is_validated_and_named(client: Any,
                                                                   tmp_path: Path) -> None:
    first = make_report("latency", 10)
    broken = _with(first, ciphertexts=(bytes(512),))
    assert_problem(post_reports(client, [first, broken]), 400, "invalid-ciphertext",
             "batch.reports[1]", "zero")
    assert_problem(post_reports(client, [first, _with(first, window=first.window + 86_400)]), 400,
             "invalid-input", "batch.reports[1]", "has not started yet")
    assert snapshot(tmp_path) == ([], [])


def test_exact_repeats_within_one_batch_still_count_once(client: Any, tmp_path: Path) -> None:
    report = make_report("latency", 7)
    assert post_reports(client, [report, report]).get_json() == {
        "v": 1, "accepted": 1, "duplicates": 1}
    assert decrypt_window(tmp_path, "latency") == [7]


# -- sizes ---------------------------------------------------------------------------------


def test_oversized_body_is_413_and_stores_nothing(client: Any, tmp_path: Path) -> None:
    body = batch_body([make_report("latency", 1)] * 100)
    assert len(body) > SMALL
    assert_problem(post_reports(client, [], body=body), 413, "payload-too-large", str(SMALL))
    assert snapshot(tmp_path) == ([], [])


def test_huge_declared_length_with_a_small_body_is_413_at_once(client: Any) -> None:
    response = client.post("/v1/reports", data=b"{}", environ_overrides={
        "CONTENT_LENGTH": str(10**12)}, headers={"Authorization": f"Bearer {INGEST}",
                                                 "Content-Type": codec.JSON})
    assert_problem(response, 413, "payload-too-large")


def test_chunked_body_without_length_is_refused_at_the_limit(client: Any,
                                                            tmp_path: Path) -> None:
    def chunked(body: bytes) -> Any:
        return client.post("/v1/reports", input_stream=io.BytesIO(body),
                           environ_overrides={"wsgi.input_terminated": True},
                           headers={"Authorization": f"Bearer {INGEST}",
                                    "Content-Type": codec.JSON,
                                    "Transfer-Encoding": "chunked"})

    assert_problem(chunked(b"[" + b"0," * SMALL + b"0]"), 413, "payload-too-large")
    assert snapshot(tmp_path) == ([], [])
    ok = chunked(batch_body([make_report("latency", 4)]))
    assert ok.status_code == 200, ok.get_data(as_text=True)


@pytest.fixture
def served(app: Flask) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    thread.join(5)


def _raw(port: int, head: str, body: bytes = b"", chunks: list[bytes] | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    """Send a request byte for byte; returns (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.connect()
        assert connection.sock is not None
        payload = body
        if chunks is not None:
            payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        # the server may answer (and close) before reading it all
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sock.sendall(head.encode() + payload)
        response = http.client.HTTPResponse(connection.sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _head(port: int, *lines: str) -> str:
    return "\r\n".join(["POST /v1/reports HTTP/1.1", f"Host: 127.0.0.1:{port}",
                        f"Authorization: Bearer {INGEST}", "Content-Type: application/json",
                        *lines, ""]) + "\r\n"


def test_size_limits_hold_over_a_real_socket(served: int, tmp_path: Path) -> None:
    started = time.monotonic()
    status, headers, body = _raw(served, _head(served, "Content-Length: 1000000000000"),
                                 b"{}")
    assert status == 413 and headers["Content-Type"] == "application/problem+json"
    assert time.monotonic() - started < 5  # answered without waiting for a terabyte
    status, _, body = _raw(served, _head(served, "Transfer-Encoding: chunked"),
                           chunks=[b"[" + b"0," * 8192] * 16)
    assert status == 413 and json.loads(body)["code"] == "payload-too-large"
    status, _, body = _raw(served, _head(served, "Transfer-Encoding: chunked"),
                           chunks=[batch_body([make_report("visits", 1)])])
    assert status == 200 and json.loads(body)["accepted"] == 1
    assert len(snapshot(tmp_path)[0]) == 1


# -- shapes the parsers must never build ----------------------------------------------------


def _shared_dag(levels: int) -> bytes:
    """~300 bytes of CBOR value sharing that stand for a tree of 2**levels leaves."""
    node: list[Any] = [0]
    for _ in range(levels):
        node = [node, node]
    return cbor2.dumps({"v": node, "reports": [node]}, value_sharing=True)


CBOR_BODIES = {
    "value-sharing bomb": (_shared_dag(60), "tags are not accepted"),
    "date tag": (cbor2.dumps({"v": cbor2.CBORTag(0, "2024-01-01T00:00:00Z")}), "tags"),
    "bignum tag": (b"\xa1\x61v\xc2\x41\x01", "tags"),
    "indefinite array": (b"\xa1\x67reports\x9f\x01\xff", "indefinite"),
    "integer map key": (cbor2.dumps({1: 1}), "map keys must be text"),
    "array map key": (b"\xa1\x81\x01\x01", "map keys must be text"),
    "undefined": (b"\xa1\x61v\xf7", "simple values"),
    "trailing bytes": (cbor2.dumps({"v": 1}) + b"\x00", "bytes follow"),
    "truncated": (cbor2.dumps({"v": 1, "reports": [b"x" * 100]})[:-10], "ends inside"),
    "length past the end": (b"\xa1\x61v\x5b" + (2**62).to_bytes(8, "big") + b"x",
                            "ends inside"),
    "count past the end": (b"\xa1\x61v\x9b" + (2**62).to_bytes(8, "big") + b"\x00",
                           "ends inside"),
    "deep nesting": (b"\xa1\x61v" + b"\x81" * 5000 + b"\x00", "deeper than 8"),
    "too many items": (b"\xa1\x61v\x9a" + (BATCH_ITEMS + 1).to_bytes(4, "big")
                       + b"\x00" * (BATCH_ITEMS + 1), f"more than {BATCH_ITEMS}"),
}


@pytest.mark.parametrize("case", sorted(CBOR_BODIES))
def test_hostile_cbor_is_refused_before_it_is_decoded(case: str, tmp_path: Path,
                                                      keyholder: RunningKeyholder) -> None:
    app = make_app(tmp_path, keyholder)  # the default 64 MiB limit: shapes, not sizes
    try:
        body, fragment = CBOR_BODIES[case]
        started = time.monotonic()
        response = post_reports(app.test_client(), [], media=codec.CBOR, body=body)
        assert time.monotonic() - started < 5
        assert_problem(response, 400, "invalid-input", fragment)
        assert snapshot(tmp_path) == ([], [])
    finally:
        close_app(app)


JSON_BODIES = {
    "deep nesting": (b'{"v":' + b"[" * 5000 + b"]" * 5000 + b"}", "not valid JSON"),
    "nesting past the limit": (b'{"v":' + b"[" * 9 + b"1" + b"]" * 9 + b"}", "deeper than 8"),
    "too many values": (b'{"reports":[' + b"0," * (BATCH_ITEMS + 1) + b"0]}",
                        f"more than {BATCH_ITEMS}"),
    "too many objects": (b'{"reports":[' + b"{}," * BATCH_ITEMS + b"{}]}",
                         f"more than {BATCH_ITEMS}"),
    "huge integer": (b'{"v":' + b"9" * 100_000 + b"}", "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(JSON_BODIES))
def test_hostile_json_is_refused(case: str, tmp_path: Path,
                                 keyholder: RunningKeyholder) -> None:
    app = make_app(tmp_path, keyholder)
    try:
        body, fragment = JSON_BODIES[case]
        assert_problem(post_reports(app.test_client(), [], body=body), 400, "invalid-input",
                 fragment)
        assert snapshot(tmp_path) == ([], [])
    finally:
        close_app(app)


# -- operator routes -----------------------------------------------------------------------


def _admin(client: Any, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {ADMIN}", **kwargs.pop("headers", {})}
    return client.open(path, headers=headers, **kwargs)


def test_release_filter_body_is_small(client: Any) -> None:
    body = json.dumps({"metric": "latency", "pad": "x" * 5000}).encode()
    assert_problem(_admin(client, "/v1/windows/release", method="POST", data=body,
                    headers={"Content-Type": codec.JSON}), 413, "payload-too-large", "4096")


def test_chunked_release_filter_is_read_not_ignored(client: Any) -> None:
    response = _admin(client, "/v1/windows/release", method="POST",
                      input_stream=io.BytesIO(b'{"metric": "Not A Name"}'),
                      environ_overrides={"wsgi.input_terminated": True},
                      headers={"Content-Type": codec.JSON, "Transfer-Encoding": "chunked"})
    assert_problem(response, 400, "invalid-input", "release.metric")


@pytest.mark.parametrize("query, fragment", [
    ("colour=red", "unknown query parameters"),
    ("metric=Bad%20Name", "metric must match"),
    ("window=soon", "window must be an integer"),
    ("window=99999999999999999999", "window must be an integer"),
    ("state=open&state=sealed", "at most once"),
])
def test_window_filters_are_validated(client: Any, query: str, fragment: str) -> None:
    assert_problem(_admin(client, f"/v1/windows?{query}"), 400, "invalid-input", fragment)


def test_window_filters_select(client: Any) -> None:
    report = make_report("latency", 1)
    assert post_reports(client, [report, make_report("visits", 1)]).status_code == 200
    rows = _admin(client, f"/v1/windows?metric=latency&window={report.window}&state=open"
                  ).get_json()["windows"]
    assert [(r["metric"], r["window"]) for r in rows] == [("latency", report.window)]
    assert _admin(client, "/v1/windows?window=0").get_json() == {"windows": []}


# -- failures ------------------------------------------------------------------------------


def test_internal_failure_is_a_bare_500assert_problem(app: Flask, client: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(batch: Any) -> Any:
        raise RuntimeError("disk full at /var/lib/blindsum/secret-path")

    monkeypatch.setattr(app.extensions["blindsum.aggregator"].ingestor, "ingest", explode)
    response = post_reports(client, [make_report("visits", 1)])
    problem = assert_problem(response, 500, "internal")
    text = response.get_data(as_text=True)
    assert "secret-path" not in text and "Traceback" not in text and ".py" not in text
    assert problem["detail"] == "the service failed; see its log"
