"""The server's HTTP client to the key-holder: pinned signatures, matching results, errors.

Every answer comes from the real key-holder app served on localhost (``aggregator_kit``),
so the real ``requests`` path (headers, bodies, status codes, problem documents) is
exercised. "Another identity" is an impostor: a copy of the key-holder's data directory
with its own identity key, so it decrypts like the real one but cannot sign as it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aggregator_kit import (
    HOUR,
    T0,
    RunningKeyholder,
    ckks_kid,
    ckks_secret,
    copy_of,
    make_app,
    make_report,
    paillier_kid,
    paillier_secret,
    pinned,
    policy,
    post_reports,
    running_keyholder,
    template,
)

from blindsum.server.aggregator.app import close_app
from blindsum.server.aggregator.keyholder_client import KeyholderClient, check_result
from blindsum.server.aggregator.store import WindowKey
from blindsum.shared import codec
from blindsum.shared.codec import ReleaseRequest
from blindsum.shared.encoding import encode
from blindsum.shared.errors import (
    AlreadyReleased,
    BudgetExhausted,
    ManifestError,
    ReleaseRefused,
    UpstreamError,
)
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy

WINDOW = T0 - T0 % HOUR
TIGHT = MetricPolicy.from_mapping("latency.tight", {
    "kind": "sum", "scheme": "paillier", "lower": 0, "upper": 1000, "window_seconds": HOUR,
    "min_contributors": 2,
    "privacy": {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 1.0}})


@pytest.fixture
def keyholder(tmp_path: Path) -> Iterator[RunningKeyholder]:
    with running_keyholder(tmp_path) as running:
        running.clock.now = WINDOW + 2 * HOUR  # the window of every request below is closed
        yield running


def _client(keyholder: RunningKeyholder, token: str | None = None) -> KeyholderClient:
    return KeyholderClient(keyholder.url, template().identity, token or keyholder.release_token)


@pytest.fixture
def client(keyholder: RunningKeyholder) -> Iterator[KeyholderClient]:
    client = _client(keyholder)
    yield client
    client.close()


def _request(count: int = 2, spec: MetricPolicy | None = None,
             window: int = WINDOW) -> ReleaseRequest:
    """A window of ``count`` latency reports 0, 1, 2, ... summed as the server sums them."""
    spec = spec or policy("latency")
    key = paillier_secret().public
    slots = slot_spec(spec)
    loaded = [key.load(key.encrypt(encode(spec, v), slots), slots) for v in range(count)]
    ids = [make_report("latency", 0).report_id for _ in range(count)]
    return ReleaseRequest(spec.name, spec.version, window, paillier_kid(), count,
                          codec.report_ids_digest(ids), tuple(key.dump(key.add_many(loaded))))


# -- documents -----------------------------------------------------------------------------


def test_manifest_is_verified_against_the_pinned_identity(client: KeyholderClient) -> None:
    manifest = client.fetch_manifest()
    assert set(manifest.policies) == {"visits", "latency", "pages", "embed", "proven"}


def test_manifest_signed_by_another_identity_is_refused(tmp_path: Path) -> None:
    with running_keyholder(tmp_path, impostor=True) as impostor:
        client = _client(impostor)
        try:
            with pytest.raises(ManifestError, match="not signed by the pinned"):
                client.fetch_manifest()
        finally:
            client.close()


def test_ckks_context_bytes_are_fetched(client: KeyholderClient) -> None:
    assert client.fetch_context(ckks_kid()) == ckks_secret().public.context_bytes


# -- releases ------------------------------------------------------------------------------


def test_release_sends_cbor_with_the_release_token_and_verifies_the_result(
    client: KeyholderClient, keyholder: RunningKeyholder
) -> None:
    result = client.release(_request())
    assert result.payload["report_count"] == 2
    assert result.document == keyholder.released("latency", WINDOW)
    sent = [s[2:] for s in keyholder.seen if s[:2] == ("POST", "/v1/releases")]
    assert sent == [(codec.CBOR, f"Bearer {keyholder.release_token}", codec.JSON)]


def test_result_signed_by_another_key_is_rejected(tmp_path: Path) -> None:
    with running_keyholder(tmp_path, impostor=True) as impostor:
        impostor.clock.now = WINDOW + 2 * HOUR
        client = _client(impostor)  # pinned to the real identity
        try:
            with pytest.raises(ManifestError, match="not signed by the pinned"):
                client.release(_request())
        finally:
            client.close()
        assert impostor.released("latency", WINDOW) is not None  # it did answer, signed


def test_result_for_other_reports_is_rejected(client: KeyholderClient) -> None:
    request = _request()
    document = client.release(request).document
    assert check_result(document, pinned(), request).payload["report_count"] == 2
    other = ReleaseRequest(**{**request.__dict__, "report_count": 3})
    with pytest.raises(ManifestError, match="report_count"):
        check_result(document, pinned(), other)


def test_already_released_answers_with_the_stored_matching_result(
    client: KeyholderClient, keyholder: RunningKeyholder
) -> None:
    request = _request()
    first = client.release(request)
    again = client.release(request)  # 409 at the key-holder, then its stored result
    assert again.payload == first.payload
    assert again.payload["report_ids_digest"] == request.report_ids_digest.hex()
    assert len(keyholder.events("release")) == 1


def test_too_few_contributors_is_release_refused(client: KeyholderClient) -> None:
    with pytest.raises(ReleaseRefused, match="needs at least 2") as caught:
        client.release(_request(count=1))
    assert type(caught.value) is ReleaseRefused


def test_spent_budget_is_budget_exhausted(client: KeyholderClient,
                                          keyholder: RunningKeyholder) -> None:
    now = keyholder.clock.now
    keyholder.clock.now = WINDOW - 2 * HOUR  # registered before both windows began
    keyholder.add_policies([TIGHT])
    keyholder.clock.now = now
    client.release(_request(spec=TIGHT, window=WINDOW - HOUR))
    with pytest.raises(BudgetExhausted,
                       match=r"has spent epsilon 1 \(basic\) of its budget \(1, 0\)"):
        client.release(_request(spec=TIGHT))


def test_refused_release_token_is_an_upstream_error(keyholder: RunningKeyholder) -> None:
    client = _client(keyholder, token="rel_not-the-servers-token")
    try:
        with pytest.raises(UpstreamError, match="401 unauthorized") as caught:
            client.release(_request())
    finally:
        client.close()
    assert type(caught.value) is UpstreamError  # never "you are unauthorized"


def test_keyholder_failure_is_an_upstream_error(keyholder: RunningKeyholder) -> None:
    keyholder.stop()
    (keyholder.data_dir / "keys" / f"{paillier_kid()}.key").unlink()  # a broken key store
    keyholder.start()
    client = _client(keyholder)
    try:
        with pytest.raises(UpstreamError, match="500 keystore"):
            client.release(_request())
    finally:
        client.close()


def test_already_released_with_other_reports_is_an_already_released_error(
    client: KeyholderClient,
) -> None:
    client.release(_request())
    with pytest.raises(AlreadyReleased, match="already released with other reports"):
        client.release(_request(count=3))


def test_unreachable_keyholder_is_an_upstream_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = KeyholderClient(f"http://127.0.0.1:{port}", template().identity, "rel_x")
    with pytest.raises(UpstreamError, match="unreachable"):
        client.fetch_manifest()


# -- through the server --------------------------------------------------------------------


def test_server_stores_nothing_when_the_result_is_not_signed_by_the_keyholder(
    tmp_path: Path, keyholder: RunningKeyholder
) -> None:
    keyholder.clock.now = T0
    app = make_app(tmp_path / "server", keyholder)
    try:
        client: Any = app.test_client()
        reports = [make_report("latency", v) for v in (1, 2)]
        assert post_reports(client, reports).status_code == 200
        keyholder.stop()  # an impostor takes the key-holder's address
        keyholder.start(copy_of(tmp_path, impostor=True))
        keyholder.clock.now = WINDOW + 2 * HOUR
        service = app.extensions["blindsum.aggregator"]
        [outcome] = service.releases.release_due()
        assert (outcome.status, outcome.code) == ("failed", "manifest-unverified")
        assert keyholder.released("latency", WINDOW) is not None  # it signed one, in vain
        assert service.store.results() == []
        row = service.store.window(WindowKey("latency", 1, WINDOW, paillier_kid()))
        assert row.state == "sealed"  # retried later, never released on a forged result
        assert client.get("/v1/published").get_json() == {"results": []}
    finally:
        close_app(app)
