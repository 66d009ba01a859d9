"""SDK transport: timeouts, retries with backoff, Retry-After, and problem+json mapping.

Runs against a real HTTP server on 127.0.0.1 (``client_support.FakeServer``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from client_support import TOKEN, FakeServer

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
from blindsum.shared.manifest import Manifest


@pytest.fixture
def server(manifest: Manifest) -> Iterator[FakeServer]:
    fake = FakeServer(manifest).start()
    yield fake
    fake.stop()


class Sleeps(list[float]):
    """Records the waits a transport asks for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def transport(server: FakeServer, sleeps: Sleeps | None = None, **kwargs: object) -> Transport:
    kwargs.setdefault("retry", RetryPolicy(max_retries=3, backoff=0.01, max_delay=1.0))
    return Transport(server.url, TOKEN, sleep=sleeps if sleeps is not None else Sleeps(),
                     **kwargs)  # type: ignore[arg-type]


def a_batch(manifest: Manifest) -> dict[str, object]:
    kid = manifest.active_key("paillier").key_id
    metric = next(iter(manifest.policies.values()))
    report = Report(bytes(range(16)), metric.name, metric.version, kid, 0, (b"\x01" * 8,))
    return ReportBatch((report,)).to_wire()


def test_sends_bearer_token_and_cbor_batches_by_default(server: FakeServer, manifest) -> None:
    answer = transport(server).post_data("/v1/reports", a_batch(manifest))
    assert answer == {"v": 1, "accepted": 1, "duplicates": 0}
    (seen,) = server.requests_to("POST", "/v1/reports")
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["Content-Type"] == codec.CBOR
    assert seen.headers["Accept"].startswith(codec.CBOR)
    assert codec.loads(seen.body, codec.CBOR)["reports"][0]["id"] == bytes(range(16))


def test_json_wire_sends_base64url_json(server: FakeServer, manifest) -> None:
    transport(server, media=codec.JSON).post_data("/v1/reports", a_batch(manifest))
    (seen,) = server.requests_to("POST", "/v1/reports")
    assert seen.headers["Content-Type"] == codec.JSON
    assert json.loads(seen.body)["reports"][0]["id"] == codec.b64encode(bytes(range(16)))


def test_503_is_retried_with_the_identical_body_until_it_succeeds(
    server: FakeServer, manifest
) -> None:
    server.fail_next(2, status=503)
    sleeps = Sleeps()
    answer = transport(server, sleeps).post_data("/v1/reports", a_batch(manifest))
    assert answer["accepted"] == 1
    bodies = [s.body for s in server.requests_to("POST", "/v1/reports")]
    assert len(bodies) == 3 and len(set(bodies)) == 1
    assert len(sleeps) == 2


def test_backoff_grows_exponentially_with_jitter(server: FakeServer, manifest) -> None:
    server.fail_next(4, status=500)
    sleeps = Sleeps()
    retry = RetryPolicy(max_retries=4, backoff=0.1, max_delay=10.0)
    transport(server, sleeps, retry=retry).post_data("/v1/reports", a_batch(manifest))
    for attempt, wait in enumerate(sleeps):
        ceiling = 0.1 * 2**attempt
        assert ceiling / 2 <= wait <= ceiling


def test_gives_up_after_max_retries_with_an_upstream_error_naming_the_status(
    server: FakeServer, manifest
) -> None:
    server.fail_next(10, status=502, body=b"bad gateway")
    with pytest.raises(UpstreamError, match=r"HTTP 502.*after 4 attempts"):
        transport(server).post_data("/v1/reports", a_batch(manifest))
    assert len(server.requests_to("POST", "/v1/reports")) == 4


def test_429_honours_retry_after_seconds(server: FakeServer, manifest) -> None:
    server.fail_next(1, status=429, headers={"Retry-After": "1"})
    sleeps = Sleeps()
    transport(server, sleeps).post_data("/v1/reports", a_batch(manifest))
    assert sleeps == [1.0]


def test_retry_after_beyond_max_delay_ends_retrying_instead_of_blocking(
    server: FakeServer, manifest
) -> None:
    server.fail_next(1, status=503, headers={"Retry-After": "3600"})
    sleeps = Sleeps()
    with pytest.raises(UpstreamError, match="503"):
        transport(server, sleeps).post_data("/v1/reports", a_batch(manifest))
    assert sleeps == []


def test_a_read_timeout_is_retried(server: FakeServer, manifest) -> None:
    server.fail_next(1, kind="delay", delay=1.0)
    t = transport(server, timeouts=Timeouts(connect=1.0, read=0.2))
    assert t.post_data("/v1/reports", a_batch(manifest))["accepted"] == 1
    # The delayed first attempt was stored too: the retry carries the same id, counted once.
    assert len(server.requests_to("POST", "/v1/reports")) == 2
    assert len(server.stored) == 1


def test_a_dropped_connection_is_retried(server: FakeServer, manifest) -> None:
    server.fail_next(1, kind="drop")
    answer = transport(server).post_data("/v1/reports", a_batch(manifest))
    assert answer == {"v": 1, "accepted": 0, "duplicates": 1}


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
    server: FakeServer, manifest, status: int, code: str, expected: type[BlindsumError]
) -> None:
    for _ in range(4):  # 5xx are retried first
        server.respond_problem(status, code, f"detail for {code}")
    with pytest.raises(expected) as caught:
        transport(server).post_data("/v1/reports", a_batch(manifest))
    assert type(caught.value) is expected
    assert caught.value.detail == f"detail for {code}"


def test_a_4xx_problem_is_not_retried(server: FakeServer, manifest) -> None:
    server.respond_problem(400, "invalid-input", "batch.reports[0].metric is required")
    sleeps = Sleeps()
    with pytest.raises(InvalidInput, match=r"batch.reports\[0\]"):
        transport(server, sleeps).post_data("/v1/reports", a_batch(manifest))
    assert sleeps == [] and len(server.requests_to("POST", "/v1/reports")) == 1


def test_a_real_refusal_from_the_peer_maps_to_its_class(server: FakeServer, manifest) -> None:
    t = Transport(server.url, "wrong-token", sleep=Sleeps())
    with pytest.raises(Unauthorized, match="unknown token"):
        t.post_data("/v1/reports", a_batch(manifest))


def test_an_unknown_code_falls_back_to_the_class_of_its_status(
    server: FakeServer, manifest
) -> None:
    server.respond_problem(405, "method-not-allowed", "use POST")
    with pytest.raises(UpstreamError, match=r"405 .method-not-allowed.*use POST"):
        transport(server).post_data("/v1/reports", a_batch(manifest))
    server.respond_problem(404, "http", "no such page")
    with pytest.raises(NotFound, match="no such page"):
        transport(server).post_data("/v1/reports", a_batch(manifest))


def test_an_error_without_a_problem_document_is_upstream_error_with_the_status(
    server: FakeServer, manifest
) -> None:
    server.fail_next(1, status=404, body=b"<html>nginx</html>",
                     headers={"Content-Type": "text/html"})
    with pytest.raises(UpstreamError, match="HTTP 404"):
        transport(server).post_data("/v1/reports", a_batch(manifest))


def test_an_unreadable_success_body_is_upstream_error(server: FakeServer, manifest) -> None:
    server.fail_next(1, status=200, body=b"<html>", headers={"Content-Type": "text/html"})
    with pytest.raises(UpstreamError, match="unreadable body"):
        transport(server).post_data("/v1/reports", a_batch(manifest))


def test_an_oversized_answer_is_refused_without_reading_it_all(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blindsum.client.transport.MAX_ANSWER_BYTES", 64)
    with pytest.raises(UpstreamError, match="exceeds 64 bytes"):
        transport(server).get_data("/v1/manifest")


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
