"""SDK transport: timeouts, retries with backoff, Retry-After, and problem+json mapping.

The peer here (``client_support.FaultInjectingPeer``) only answers what each test scripts: the
faults and rare answers our server cannot be made to give on demand. How the transport fares
against the real server (refusals, lost acknowledgements, read timeouts after the server
stored a batch) is specified in tests/integration/test_sdk.py.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from client_support import REPORTS, Answer, FaultInjectingPeer, HangUp, data, problem

from blindsum.client.transport import (
    RetryPolicy,
    Timeouts,
    Transport,
    parse_retry_after,
)
from blindsum.shared import codec
from blindsum.shared.codec import Report, ReportBatch
from blindsum.shared.errors import (
    AlreadyReleased,
    BlindsumError,
    BudgetExhausted,
    Conflict,
    Forbidden,
    InvalidCiphertext,
    InvalidConfig,
    InvalidInput,
    ManifestError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamError,
)

TOKEN = "ingest-token"
RECEIPT = {"v": 1, "accepted": 1, "duplicates": 0}


@pytest.fixture
def peer() -> Iterator[FaultInjectingPeer]:
    with FaultInjectingPeer() as running:
        yield running


class Sleeps(list[float]):
    """Records the waits a transport asks for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def transport(peer: FaultInjectingPeer, sleeps: Sleeps | None = None,
              **kwargs: object) -> Transport:
    kwargs.setdefault("retry", RetryPolicy(max_retries=3, backoff=0.01, max_delay=1.0))
    return Transport(peer.url, TOKEN, sleep=sleeps if sleeps is not None else Sleeps(),
                     **kwargs)  # type: ignore[arg-type]


def a_batch() -> dict[str, object]:
    report = Report(bytes(range(16)), "latency", 1, "pai-test", 0, (b"\x01" * 8,))
    return ReportBatch((report,)).to_wire()


def then_accepted(peer: FaultInjectingPeer, media: str = codec.JSON) -> None:
    peer.script("POST", REPORTS, data(200, RECEIPT, media))


def test_sends_bearer_token_and_cbor_batches_by_default(peer: FaultInjectingPeer) -> None:
    then_accepted(peer, codec.CBOR)
    answer = transport(peer).post_data(REPORTS, a_batch())
    assert answer == RECEIPT
    (seen,) = peer.requests_to("POST", REPORTS)
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["Content-Type"] == codec.CBOR
    assert seen.headers["Accept"].startswith(codec.CBOR)
    assert codec.loads(seen.body, codec.CBOR)["reports"][0]["id"] == bytes(range(16))


def test_json_wire_sends_base64url_json(peer: FaultInjectingPeer) -> None:
    then_accepted(peer)
    assert transport(peer, media=codec.JSON).post_data(REPORTS, a_batch()) == RECEIPT
    (seen,) = peer.requests_to("POST", REPORTS)
    assert seen.headers["Content-Type"] == codec.JSON
    assert json.loads(seen.body)["reports"][0]["id"] == codec.b64encode(bytes(range(16)))


def test_503_is_retried_with_the_identical_body_until_it_succeeds(
    peer: FaultInjectingPeer,
) -> None:
    peer.script("POST", REPORTS, Answer(503), Answer(503))
    then_accepted(peer)
    sleeps = Sleeps()
    answer = transport(peer, sleeps).post_data(REPORTS, a_batch())
    assert answer["accepted"] == 1
    bodies = [s.body for s in peer.requests_to("POST", REPORTS)]
    assert len(bodies) == 3 and len(set(bodies)) == 1
    assert len(sleeps) == 2


def test_backoff_grows_exponentially_with_jitter(peer: FaultInjectingPeer) -> None:
    peer.script("POST", REPORTS, *[Answer(500)] * 4)
    then_accepted(peer)
    sleeps = Sleeps()
    retry = RetryPolicy(max_retries=4, backoff=0.1, max_delay=10.0)
    transport(peer, sleeps, retry=retry).post_data(REPORTS, a_batch())
    assert len(sleeps) == 4
    for attempt, wait in enumerate(sleeps):
        ceiling = 0.1 * 2**attempt
        assert ceiling / 2 <= wait <= ceiling


def test_gives_up_after_max_retries_with_an_upstream_error_naming_the_status(
    peer: FaultInjectingPeer,
) -> None:
    peer.script("POST", REPORTS, *[Answer(502, b"bad gateway")] * 10)
    with pytest.raises(UpstreamError, match=r"HTTP 502.*after 4 attempts"):
        transport(peer).post_data(REPORTS, a_batch())
    assert len(peer.requests_to("POST", REPORTS)) == 4


def test_429_honours_retry_after_seconds(peer: FaultInjectingPeer) -> None:
    peer.script("POST", REPORTS, Answer(429, headers={"Retry-After": "1"}))
    then_accepted(peer)
    sleeps = Sleeps()
    transport(peer, sleeps).post_data(REPORTS, a_batch())
    assert sleeps == [1.0]


def test_retry_after_beyond_max_delay_ends_retrying_instead_of_blocking(
    peer: FaultInjectingPeer,
) -> None:
    peer.script("POST", REPORTS, Answer(503, headers={"Retry-After": "3600"}))
    sleeps = Sleeps()
    with pytest.raises(UpstreamError, match="503"):
        transport(peer, sleeps).post_data(REPORTS, a_batch())
    assert sleeps == []


def test_a_dropped_connection_is_retried(peer: FaultInjectingPeer) -> None:
    peer.script("POST", REPORTS, HangUp())
    then_accepted(peer)
    sleeps = Sleeps()
    assert transport(peer, sleeps).post_data(REPORTS, a_batch()) == RECEIPT
    assert len(peer.requests_to("POST", REPORTS)) == 2 and len(sleeps) == 1


def test_an_unreachable_server_becomes_upstream_error_after_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    t = Transport(f"http://127.0.0.1:{port}", TOKEN, sleep=sleeps,
                  retry=RetryPolicy(max_retries=2, backoff=0.01))
    with pytest.raises(UpstreamError, match="failed after 3 attempt"):
        t.get_data("/v1/manifest")
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "invalid-input", InvalidInput),
        (400, "invalid-ciphertext", InvalidCiphertext),
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", Forbidden),
        (404, "not-found", NotFound),
        (409, "conflict", Conflict),
        (409, "already-released", AlreadyReleased),
        (413, "payload-too-large", PayloadTooLarge),
        (415, "unsupported-media-type", UnsupportedMediaType),
        (422, "budget-exhausted", BudgetExhausted),
        (502, "manifest-unverified", ManifestError),
    ],
)
def test_problem_json_becomes_the_error_class_of_its_code_with_the_servers_detail(
    peer: FaultInjectingPeer, status: int, code: str, expected: type[BlindsumError]
) -> None:
    peer.script("POST", REPORTS, *[problem(status, code, f"detail for {code}")] * 4)
    with pytest.raises(expected) as caught:  # 5xx are retried first, 4xx are not
        transport(peer).post_data(REPORTS, a_batch())
    assert type(caught.value) is expected
    assert caught.value.detail == f"detail for {code}"


def test_a_4xx_problem_is_not_retried(peer: FaultInjectingPeer) -> None:
    peer.script("POST", REPORTS,
                problem(400, "invalid-input", "batch.reports[0].metric is required"))
    sleeps = Sleeps()
    with pytest.raises(InvalidInput, match=r"batch.reports\[0\]"):
        transport(peer, sleeps).post_data(REPORTS, a_batch())
    assert sleeps == [] and len(peer.requests_to("POST", REPORTS)) == 1


def test_an_unknown_code_falls_back_to_the_class_of_its_status(
    peer: FaultInjectingPeer,
) -> None:
    peer.script("POST", REPORTS, problem(405, "method-not-allowed", "use POST"),
                problem(404, "http", "no such page"))
    with pytest.raises(UpstreamError, match=r"405 .method-not-allowed.*use POST"):
        transport(peer).post_data(REPORTS, a_batch())
    with pytest.raises(NotFound, match="no such page"):
        transport(peer).post_data(REPORTS, a_batch())


def test_an_error_without_a_problem_document_is_upstream_error_with_the_status(
    peer: FaultInjectingPeer,
) -> None:
    peer.script("POST", REPORTS,
                Answer(404, b"<html>nginx</html>", {"Content-Type": "text/html"}))
    with pytest.raises(UpstreamError, match="HTTP 404"):
        transport(peer).post_data(REPORTS, a_batch())


def test_an_unreadable_success_body_is_upstream_error(peer: FaultInjectingPeer) -> None:
    peer.script("POST", REPORTS, Answer(200, b"<html>", {"Content-Type": "text/html"}))
    with pytest.raises(UpstreamError, match="unreadable body"):
        transport(peer).post_data(REPORTS, a_batch())


def test_an_oversized_answer_is_refused_without_reading_it_all(
    peer: FaultInjectingPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blindsum.client.transport.MAX_ANSWER_BYTES", 64)
    peer.script("GET", "/v1/manifest", data(200, {"padding": "x" * 4096}))
    with pytest.raises(UpstreamError, match="exceeds 64 bytes"):
        transport(peer).get_data("/v1/manifest")


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2030, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(90.0)
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now.timestamp()) == 0.0


def test_retry_delay_is_jittered_within_bounds_and_never_below_retry_after() -> None:
    policy = RetryPolicy(max_retries=5, backoff=1.0, max_delay=8.0)
    for retry in range(6):
        ceiling = min(8.0, 2.0**retry)
        assert all(ceiling / 2 <= policy.delay(retry) <= ceiling for _ in range(50))
    assert policy.delay(0, retry_after=5.0) == 5.0


@pytest.mark.parametrize(
    ("url", "token"),
    [("ftp://example.com", TOKEN), ("example.com", TOKEN), ("https://", TOKEN),
     ("https://example.com?x=1", TOKEN), ("https://example.com", ""),
     ("https://example.com", "a\nb")],
)
def test_bad_url_or_token_is_refused_at_construction(url: str, token: str) -> None:
    with pytest.raises(InvalidConfig):
        Transport(url, token)


@pytest.mark.parametrize("fields", [{"max_retries": -1}, {"max_retries": True},
                                    {"backoff": -1.0}, {"max_delay": float("nan")}])
def test_bad_retry_policy_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidConfig):
        RetryPolicy(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("fields", [{"connect": 0}, {"read": -1.0}, {"read": float("inf")}])
def test_bad_timeouts_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(InvalidConfig):
        Timeouts(**fields)
